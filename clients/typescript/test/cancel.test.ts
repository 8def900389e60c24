// cancel() against agents that ignore everything but SIGKILL, each with
// grandchildren: the whole tree is gone within the budget.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { DEFAULT_SHUTDOWN_BUDGET_MS, DeputyClient } from "../src/index.js";
import { agentEnv, alive, deputyBin, FAKE_AGENT, scenario, scratch, track, waitUntil } from "./helpers.js";

/** Slack over the budget for a loaded machine: the claim is checked by `elapsedMs`, leniently. */
const LENIENT_MS = 1500;

/** The stubborn fixture with its two grandchildren started; `tree` is all three pids. */
async function stubborn(dir: string, shutdownBudgetMs?: number): Promise<{ client: DeputyClient; tree: number[] }> {
  const pidfile = join(dir, "pids.json");
  const client = await DeputyClient.connect({
    command: process.execPath,
    args: [FAKE_AGENT, "stubborn"],
    env: { ...process.env, PIDFILE: pidfile },
    ...(shutdownBudgetMs === undefined ? {} : { shutdownBudgetMs }),
    session: { cwd: dir },
  });
  track(client);
  await client.submitText("start your grandchildren");
  assert.ok(await waitUntil(5000, () => existsSync(pidfile)), "the grandchildren started");
  const pids = JSON.parse(readFileSync(pidfile, "utf8")) as { agent: number; grandchildren: number[] };
  assert.equal(pids.agent, client.pid);
  const tree = [pids.agent, ...pids.grandchildren];
  assert.ok(tree.every(alive), "all alive before the cancel");
  return { client, tree };
}

test("cancel of a stubborn agent with grandchildren (one in a session of its own): the tree is gone", async () => {
  const dir = scratch();
  try {
    const { client, tree } = await stubborn(dir.path);
    const started = performance.now();
    const ending = await client.cancel();
    const took = performance.now() - started;
    assert.equal(ending.kind, "killed", JSON.stringify(ending));
    assert.equal(ending.signal, "SIGKILL");
    // The agent got the drain window (budget less the kill reserve) first.
    assert.ok(ending.elapsedMs >= DEFAULT_SHUTDOWN_BUDGET_MS - 150 - 5, `${ending.elapsedMs} ms`);
    assert.ok(took < DEFAULT_SHUTDOWN_BUDGET_MS + LENIENT_MS, `cancel took ${took} ms`);
    // Killed means dead: a zombie at most for an instant, until init reaps it.
    assert.ok(await waitUntil(1000, () => !tree.some(alive)), `left alive: ${tree.filter(alive).join(", ")}`);
  } finally {
    dir.dispose();
  }
});

test("cancel of deputy agent's `hang` fault (ignores SIGTERM, never answers, a grandchild): the tree is gone", async () => {
  const work = scratch();
  const home = scratch();
  try {
    const path = scenario(work.path, [{ steps: [{ type: "hang" }] }]);
    const client = await DeputyClient.connect({
      command: deputyBin(),
      args: ["agent"],
      env: agentEnv(home.path),
      session: { cwd: work.path, model: { name: "script", scenario: path } },
    });
    track(client);
    await client.submitText("hang");
    const pid = client.pid!;
    const children = (): number[] => {
      try {
        return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        return [];
      }
    };
    assert.ok(await waitUntil(5000, () => children().length > 0), "the hang step started its grandchild");
    const tree = [pid, ...children()];
    const ending = await client.cancel();
    assert.equal(ending.kind, "killed", JSON.stringify(ending));
    assert.ok(ending.elapsedMs < DEFAULT_SHUTDOWN_BUDGET_MS + LENIENT_MS, `${ending.elapsedMs} ms`);
    assert.ok(await waitUntil(1000, () => !tree.some(alive)), `left alive: ${tree.filter(alive).join(", ")}`);
  } finally {
    work.dispose();
    home.dispose();
  }
});

test("a smaller budget is honoured too", async () => {
  const dir = scratch();
  try {
    const { client, tree } = await stubborn(dir.path, 200);
    const ending = await client.cancel();
    assert.equal(ending.kind, "killed");
    // Drain window: 200 less min(150, 200/3).
    assert.ok(ending.elapsedMs >= 200 - 200 / 3 - 5, `${ending.elapsedMs} ms`);
    assert.ok(ending.elapsedMs < 200 + LENIENT_MS, `${ending.elapsedMs} ms`);
    assert.ok(await waitUntil(1000, () => !tree.some(alive)), `left alive: ${tree.filter(alive).join(", ")}`);
  } finally {
    dir.dispose();
  }
});
