// Against the real `deputy agent` ($DEPUTY_BIN): a full turn, approvals
// allowed, denied and withdrawn, the agent crashing, the handshake timing
// out, a program that cannot start.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import {
  DeputyClient,
  DeputyError,
  ErrorCodes,
  eventType,
  type ApprovalRequest,
  type ClientEvent,
  type ReviewDecision,
} from "../src/index.js";
import { agentEnv, alive, deputyBin, FAKE_AGENT, scenario, scratch, track, waitUntil } from "./helpers.js";

const GENEROUS_BUDGET_MS = 5000;

function connect(work: string, home: string, onApproval: (r: ApprovalRequest) => Promise<ReviewDecision> | ReviewDecision, model?: { name: string; scenario?: string }) {
  return DeputyClient.connect({
    command: deputyBin(),
    args: ["agent"],
    env: agentEnv(home),
    onApproval,
    // Graceful endings are asserted here, not their speed (cancel.test.ts
    // holds the default budget): room for a loaded machine.
    shutdownBudgetMs: GENEROUS_BUDGET_MS,
    session: { cwd: work, source: "ide", ...(model ? { model } : {}) },
  }).then(track);
}

/** What a person would see of an event: the narrowing of `msg.type` is what is tested here too. */
function describe(event: ClientEvent): string {
  const msg = event.msg;
  switch (msg.type) {
    case "exec_command_begin":
      return `$ ${msg.command.join(" ")}`;
    case "exec_command_output_delta":
      return msg.chunk;
    case "exec_command_end":
      return `exit ${msg.exit_code}`;
    case "task_complete":
      return `done: ${msg.last_agent_message ?? ""}`;
    case "turn_aborted":
      return `aborted: ${msg.reason}`;
    case "protocol_error":
      return `protocol error: ${msg.message}`;
    default:
      return msg.type === "agent_message" ? msg.message : "";
  }
}

test("a full turn against deputy agent: events in order, the approval asked, a graceful shutdown", async () => {
  const work = scratch();
  const home = scratch();
  try {
    const asked: ApprovalRequest[] = [];
    const client = await connect(work.path, home.path, (request) => {
      asked.push(request);
      return "approved";
    });
    const first = await client.events().next();
    assert.equal(first.done, false);
    assert.equal(first.value?.msg.type, "session_configured");

    const events: ClientEvent[] = [];
    for await (const event of client.turn("$ echo hello from typescript", "turn-1")) events.push(event);
    const types = events.map((e) => eventType(e.msg));
    assert.equal(types[0], "task_started");
    assert.equal(types[types.length - 1], "task_complete");
    assert.ok(types.includes("exec_command_begin") && types.includes("exec_command_end"), types.join(" "));
    assert.ok(events.every((e) => e.id === "turn-1"), "every event carries the submission id");
    const shown = events.map(describe).join("\n");
    assert.match(shown, /\$ echo hello from typescript/);
    assert.match(shown, /^hello from typescript$/m);
    assert.match(shown, /exit 0/);

    assert.equal(asked.length, 1);
    const approval = asked[0]!;
    assert.equal(approval.method, "approval/exec");
    if (approval.method === "approval/exec") assert.deepEqual(approval.params.command, ["echo", "hello", "from", "typescript"]);
    assert.equal(approval.signal.aborted, false);

    const ending = await client.shutdown();
    assert.equal(ending.kind, "graceful", JSON.stringify(ending));
    assert.equal(ending.exitCode, 0);
    assert.equal(ending.error, undefined);
    const rest: string[] = [];
    for await (const event of client.events()) rest.push(eventType(event.msg));
    assert.deepEqual(rest, ["shutdown_complete"]);
    assert.equal(alive(client.pid!), false);
    assert.deepEqual(await client.exited, ending);
  } finally {
    work.dispose();
    home.dispose();
  }
});

for (const decision of ["approved", "denied"] as const) {
  test(`an approval answered ${decision}: the command runs or it does not (sentinel file)`, async () => {
    const work = scratch();
    const home = scratch();
    try {
      const client = await connect(work.path, home.path, () => decision);
      const types: string[] = [];
      for await (const event of client.turn("$ touch sentinel")) types.push(eventType(event.msg));
      assert.equal(types[types.length - 1], "task_complete");
      assert.equal(types.includes("exec_command_begin"), decision === "approved", types.join(" "));
      assert.equal(existsSync(join(work.path, "sentinel")), decision === "approved");
      assert.equal((await client.shutdown()).kind, "graceful");
    } finally {
      work.dispose();
      home.dispose();
    }
  });
}

test("an interrupt withdraws a pending approval: the handler's signal is aborted, nothing runs", async () => {
  const work = scratch();
  const home = scratch();
  try {
    let seen: ApprovalRequest | undefined;
    const client = await connect(work.path, home.path, (request) => {
      seen = request;
      // Answers only once withdrawn: that late answer must not count.
      return new Promise((resolve) => request.signal.addEventListener("abort", () => resolve("approved")));
    });
    const types: string[] = [];
    for await (const event of client.turn("$ touch late", "t")) {
      types.push(eventType(event.msg));
      if (event.msg.type === "task_started") {
        assert.ok(await waitUntil(5000, () => seen !== undefined), "the approval was asked");
        await client.interrupt();
      }
    }
    assert.equal(seen?.signal.aborted, true);
    assert.equal(types[types.length - 1], "turn_aborted");
    assert.equal(existsSync(join(work.path, "late")), false);
    assert.equal((await client.shutdown()).kind, "graceful");
  } finally {
    work.dispose();
    home.dispose();
  }
});

test("cancel() answers a pending approval `abort`, its signal aborts, the agent exits gracefully", async () => {
  const work = scratch();
  const home = scratch();
  try {
    let seen: ApprovalRequest | undefined;
    const client = await connect(work.path, home.path, (request) => {
      seen = request;
      return new Promise<ReviewDecision>(() => {}); // never answers on its own
    });
    const events = client.turn("$ touch never");
    for await (const event of events) {
      if (event.msg.type === "task_started") break;
    }
    assert.ok(await waitUntil(5000, () => seen !== undefined), "the approval was asked");
    const ending = await client.cancel();
    assert.equal(ending.kind, "graceful", JSON.stringify(ending));
    assert.equal(seen?.signal.aborted, true);
    assert.equal(existsSync(join(work.path, "never")), false);
    const rest: string[] = [];
    for await (const event of client.events()) rest.push(eventType(event.msg));
    assert.ok(rest.includes("turn_aborted") && rest.includes("shutdown_complete"), rest.join(" "));
    await assert.rejects(client.submitText("too late"), (e: DeputyError) => e.kind === "closed");
  } finally {
    work.dispose();
    home.dispose();
  }
});

test("an agent that crashes mid-turn: the stream throws with its exit status and stderr tail", async () => {
  const work = scratch();
  const home = scratch();
  try {
    const path = scenario(work.path, [{ steps: [{ type: "message", text: "about to fall" }, { type: "exit", code: 3, stderr: "the brain exploded" }] }]);
    const client = await connect(work.path, home.path, () => "denied", { name: "script", scenario: path });
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const event of client.turn("go")) seen.push(eventType(event.msg));
      })(),
      (error: DeputyError) => {
        assert.equal(error.kind, "agent_exited");
        assert.equal(error.details.exitCode, 3);
        assert.match(error.stderrTail, /the brain exploded/);
        assert.match(error.message, /exited with status 3[\s\S]*the brain exploded/);
        return true;
      },
    );
    assert.ok(seen.includes("agent_message"), seen.join(" "));
    const ending = await client.exited;
    assert.equal(ending.kind, "exited");
    assert.equal(ending.exitCode, 3);
    assert.equal(ending.error?.kind, "agent_exited");
    assert.equal(await client.cancel(), ending, "ending it again changes nothing");
  } finally {
    work.dispose();
    home.dispose();
  }
});

test("an agent that never answers: the handshake times out, it is killed, the error has its stderr", async () => {
  let pid: number | undefined;
  let started = 0;
  await assert.rejects(
    (async () => {
      let spoke!: () => void;
      const spoken = new Promise<void>((resolve) => (spoke = resolve));
      const client = track(
        DeputyClient.spawn({
          command: process.execPath,
          args: [FAKE_AGENT, "silent"],
          handshakeTimeoutMs: 300,
          onStderr: (text) => text.includes("never answer") && spoke(),
        }),
      );
      pid = client.pid;
      await spoken; // so the tail has it whatever the machine's load
      started = Date.now();
      await client.initialize();
    })(),
    (error: DeputyError) => {
      assert.equal(error.kind, "handshake_timeout");
      assert.match(error.message, /did not answer initialize within 300 ms/);
      assert.match(error.stderrTail, /silent agent: I read but never answer/);
      return true;
    },
  );
  assert.ok(Date.now() - started >= 300);
  assert.ok(pid !== undefined);
  assert.equal(alive(pid), false);
});

test("a program that cannot start: a spawn_failed error naming it", async () => {
  await assert.rejects(
    DeputyClient.connect({ command: "/nonexistent/deputy-agent", session: { cwd: "/" } }),
    (error: DeputyError) => error.kind === "spawn_failed" && /\/nonexistent\/deputy-agent: .*ENOENT/.test(error.message),
  );
});

test("an error answer is an rpc_error with the code: a second session/start", async () => {
  const work = scratch();
  const home = scratch();
  try {
    const client = await connect(work.path, home.path, () => "denied");
    await assert.rejects(client.startSession({ cwd: work.path }), (error: DeputyError) => {
      assert.equal(error.kind, "rpc_error");
      assert.equal(error.code, ErrorCodes.SESSION_ALREADY_STARTED);
      return true;
    });
    assert.equal((await client.shutdown()).kind, "graceful");
  } finally {
    work.dispose();
    home.dispose();
  }
});
