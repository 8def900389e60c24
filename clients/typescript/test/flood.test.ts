// A consumer slower than the agent, over floods of 100,000 events: the
// buffer stays bounded (the agent's stdout is paused instead, so the agent
// blocks writing), so this Node process's memory does too, and nothing is
// lost. node --test runs each file in a process of its own, so the RSS
// measured here is this file's alone.

import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_MAX_BUFFERED_EVENTS, DeputyClient, eventType, type ClientEvent } from "../src/index.js";
import { agentEnv, deputyBin, FAKE_AGENT, scenario, scratch, sleep, track } from "./helpers.js";

const EVENTS = 100_000;
/**
 * Generous for a bounded buffer (measured +22 to +55 MiB, mostly V8's young
 * generation growing under the allocation rate); an unbounded buffer holds
 * what the fast agent writes during the stall instead (measured: +131 MiB
 * after a 1.5 s stall, 37 k events; the 3 s stall here doubles that).
 */
const RSS_GROWTH_LIMIT = 96 * 1024 * 1024;

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Reads a turn slowly after a stall; returns the deltas and the RSS peak over the baseline. */
async function slowConsumer(client: DeputyClient, stallMs: number, check: (delta: string, n: number) => void) {
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const stream = client.turn("flood", "f");
  // Stalled: not reading at all for a while; the agent is paused meanwhile.
  for (;;) {
    const next = await stream.next();
    assert.equal(next.done, false);
    if ((next.value as ClientEvent).msg.type === "task_started") break;
  }
  await sleep(stallMs);
  const stalled = client.stats;
  assert.ok(stalled.pauses >= 1, `paused while stalled: ${JSON.stringify(stalled)}`);
  assert.ok(stalled.buffered <= DEFAULT_MAX_BUFFERED_EVENTS, JSON.stringify(stalled));
  // Then slow: a pause every 100 events.
  let deltas = 0;
  let last = "";
  for await (const event of stream) {
    last = eventType(event.msg);
    if (event.msg.type === "agent_message_delta") {
      check(event.msg.delta, ++deltas);
      if (deltas % 100 === 0) await sleep(1);
      if (deltas % 1000 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
  }
  assert.equal(deltas, EVENTS, "every event arrived");
  assert.equal(last, "task_complete");
  const stats = client.stats;
  assert.ok(stats.peakBuffered <= DEFAULT_MAX_BUFFERED_EVENTS, JSON.stringify(stats));
  console.log(`RSS ${mib(baseline)} -> peak ${mib(peak)} (+${mib(peak - baseline)}); ${JSON.stringify(stats)}`);
  assert.ok(peak - baseline < RSS_GROWTH_LIMIT, `RSS grew by ${mib(peak - baseline)}`);
}

test("a fast agent flooding 100k events of 1 KiB, a stalled then slow consumer: bounded memory, in order", async () => {
  const dir = scratch();
  try {
    const client = await DeputyClient.connect({
      command: process.execPath,
      args: [FAKE_AGENT, "flood"],
      env: { ...process.env, FLOOD_N: String(EVENTS), FLOOD_BYTES: "1000" },
      session: { cwd: dir.path },
    });
    track(client);
    await slowConsumer(client, 3000, (delta, n) => {
      if (!delta.startsWith(`${n} `)) assert.fail(`event ${n} out of order: ${delta.slice(0, 20)}`);
    });
    await client.cancel();
  } finally {
    dir.dispose();
  }
});

test("deputy agent's own flood step (100k events), a stalled then slow consumer: bounded, nothing lost", async () => {
  const work = scratch();
  const home = scratch();
  try {
    const path = scenario(work.path, [{ steps: [{ type: "flood", n: EVENTS }] }]);
    const client = await DeputyClient.connect({
      command: deputyBin(),
      args: ["agent"],
      env: agentEnv(home.path),
      shutdownBudgetMs: 5000, // a graceful end is asserted, not its speed
      session: { cwd: work.path, model: { name: "script", scenario: path } },
    });
    track(client);
    await slowConsumer(client, 500, () => {});
    assert.equal((await client.shutdown()).kind, "graceful");
  } finally {
    work.dispose();
    home.dispose();
  }
});
