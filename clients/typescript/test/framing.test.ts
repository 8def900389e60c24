// Line framing (partial chunks, huge lines, limits, encodings) and a peer
// that writes garbage: every bad line is a clear protocol_error event and
// an error answer, and the lines after it still count.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { LineSplitter, type FramingProblem } from "../src/framing.js";
import { DeputyClient, ErrorCodes, eventType, isKnownEventMsg, type ClientEvent } from "../src/index.js";
import { FAKE_AGENT, scratch, track } from "./helpers.js";

function split(chunks: (string | Buffer)[], max = 64): { lines: string[]; problems: FramingProblem[] } {
  const lines: string[] = [];
  const problems: FramingProblem[] = [];
  const splitter = new LineSplitter(max, (l) => lines.push(l), (p) => problems.push(p));
  for (const c of chunks) splitter.push(typeof c === "string" ? Buffer.from(c) : c);
  splitter.end();
  return { lines, problems };
}

test("lines split at every byte position come out whole", () => {
  const text = '{"a":"héllo"}\r\n\n{"b":2}\n';
  const bytes = Buffer.from(text);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const { lines, problems } = split([bytes.subarray(0, cut), bytes.subarray(cut)]);
    assert.deepEqual(lines, ['{"a":"héllo"}', '{"b":2}'], `cut at ${cut}`);
    assert.deepEqual(problems, []);
  }
  const oneByOne = split([...bytes].map((b) => Buffer.from([b])));
  assert.deepEqual(oneByOne.lines, ['{"a":"héllo"}', '{"b":2}']);
});

test("a byte-order mark at the start is skipped; elsewhere it is kept", () => {
  const { lines } = split([Buffer.from([0xef, 0xbb]), Buffer.from([0xbf]), "a\n\ufeffb\n"]);
  assert.deepEqual(lines, ["a", "\ufeffb"]);
});

test("a line over the limit is skipped to its newline and reported; the next one counts", () => {
  const long = "y".repeat(100);
  const { lines, problems } = split(["ok\n", long.slice(0, 30), long.slice(30), "\nafter\n"]);
  assert.deepEqual(lines, ["ok", "after"]);
  assert.deepEqual(problems, [{ kind: "too_long", bytes: 100, limit: 64 }]);
  // Exactly the limit passes, with or without `\r`.
  const exact = "z".repeat(64);
  assert.deepEqual(split([exact + "\r\n", exact + "\n"]).lines, [exact, exact]);
  assert.equal(split(["z".repeat(65) + "\n"]).problems.length, 1);
});

test("a huge line in many small chunks is assembled once", () => {
  const big = "q".repeat(8 * 1024 * 1024);
  const chunks: Buffer[] = [];
  const bytes = Buffer.from(big + "\n");
  for (let at = 0; at < bytes.length; at += 65536) chunks.push(bytes.subarray(at, at + 65536));
  const { lines, problems } = split(chunks, 16 * 1024 * 1024);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]!.length, big.length);
  assert.deepEqual(problems, []);
});

test("invalid UTF-8 and a partial line at the end are reported, not used", () => {
  const { lines, problems } = split([Buffer.from([0x61, 0xff, 0x0a]), "fine\n", "tail without newline"]);
  assert.deepEqual(lines, ["fine"]);
  assert.equal(problems[0]?.kind, "not_utf8");
  assert.deepEqual(problems[1], { kind: "partial_line_at_eof", bytes: 20 });
});

test("an agent writing garbage: protocol_error events and error answers, then its real events", async () => {
  const dir = scratch();
  try {
    const record = join(dir.path, "record.jsonl");
    const client = await DeputyClient.connect({
      command: process.execPath,
      args: [FAKE_AGENT, "garbage"],
      env: { ...process.env, RECORD: record, LONG_LINE_BYTES: String(5 * 1024 * 1024), HUGE_CHARS: String(1024 * 1024) },
      maxLineBytes: 4 * 1024 * 1024,
      session: { cwd: dir.path },
    });
    track(client);
    const events: ClientEvent[] = [];
    for await (const event of client.turn("go", "g")) events.push(event);
    const errors = events.flatMap((e) => (e.msg.type === "protocol_error" ? [e.msg.message] : []));
    assert.equal(errors.length, 6, errors.join("\n"));
    assert.match(errors[0]!, /not JSON .*"this is not json"/);
    assert.match(errors[1]!, /not a JSON-RPC 2\.0 message/);
    assert.match(errors[2]!, /not a JSON-RPC 2\.0 message: "42"/);
    assert.match(errors[3]!, /a line of 5242880 bytes, over the limit of 4194304/);
    assert.match(errors[4]!, /not UTF-8/);
    assert.match(errors[5]!, /an event that is not \{id, msg/);

    const unknown = events.find((e) => e.msg.type !== "protocol_error" && !isKnownEventMsg(e.msg));
    assert.ok(unknown, "the unknown event type is delivered");
    assert.equal(eventType(unknown.msg), "future_thing");
    assert.equal((unknown.msg as { answer?: number }).answer, 42);

    const huge = events.find((e) => e.msg.type === "agent_message");
    assert.ok(huge && huge.msg.type === "agent_message");
    assert.equal(huge.msg.message, "é".repeat(1024 * 1024));
    assert.equal(events[events.length - 1]?.msg.type, "task_complete");

    // The client answered each bad line as a JSON-RPC peer must (id null).
    const answers = readFileSync(record, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { id?: unknown; error?: { code: number } })
      .filter((m) => m.id === null);
    assert.deepEqual(
      answers.map((m) => m.error?.code),
      [ErrorCodes.PARSE_ERROR, ErrorCodes.INVALID_REQUEST, ErrorCodes.INVALID_REQUEST, ErrorCodes.INVALID_REQUEST, ErrorCodes.PARSE_ERROR],
    );
    await client.cancel();
  } finally {
    dir.dispose();
  }
});
