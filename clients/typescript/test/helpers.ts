// Shared by the tests: the `deputy` binary under test, scratch folders,
// process checks through /proc.

import { mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach } from "node:test";
import { fileURLToPath } from "node:url";

import type { DeputyClient } from "../src/index.js";

const started = new Set<DeputyClient>();

/** Registers a client to be cancelled after its test, passed or failed (a live agent would keep the test process up). */
export function track<T extends DeputyClient>(client: T): T {
  started.add(client);
  return client;
}

afterEach(async () => {
  await Promise.all([...started].map((client) => client.cancel()));
  started.clear();
});

/** The `deputy` binary under test: `$DEPUTY_BIN` (the Rust test harness sets it). */
export function deputyBin(): string {
  const bin = process.env["DEPUTY_BIN"];
  if (!bin) throw new Error("DEPUTY_BIN is not set: run these tests through `cargo test --test typescript_client`");
  return bin;
}

/** The fault-fixture agent (`test/fixtures/fake-agent.mjs`; the tests run from build/test/). */
export const FAKE_AGENT = fileURLToPath(new URL("../../test/fixtures/fake-agent.mjs", import.meta.url));

/** A fresh folder (symlinks resolved), removed when `dispose` runs. */
export function scratch(): { path: string; dispose: () => void } {
  const path = realpathSync(mkdtempSync(join(tmpdir(), "deputy-ts-")));
  return { path, dispose: () => rmSync(path, { recursive: true, force: true }) };
}

/** An environment for `deputy agent` with a private home. */
export function agentEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, DEPUTY_HOME: home, ...extra };
  delete env["RUST_LOG"];
  return env;
}

/** Whether a process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `f` until it is true or `ms` pass; returns its last value. */
export async function waitUntil(ms: number, f: () => boolean): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (f()) return true;
    await sleep(10);
  }
  return f();
}

/** Writes a scenario for the `script` model: one turn per entry. */
export function scenario(dir: string, turns: unknown[]): string {
  const path = join(dir, "scenario.jsonl");
  writeFileSync(path, turns.map((t) => JSON.stringify(t) + "\n").join(""));
  return path;
}
