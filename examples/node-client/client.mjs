#!/usr/bin/env node
// A dependency-free Deputy client: the shape an editor extension takes.
//
// It spawns `deputy agent`, performs the handshake, runs one turn, answers the
// agent's approval requests, prints every event, then shuts the agent down.
// Written from PROTOCOL.md alone, with Node's own child_process and readline.
//
//   node client.mjs '$ echo hello from a sub-agent'
//   DEPUTY_BIN=target/debug/deputy node client.mjs --deny '$ touch x'
//
// Options: --deny (answer approvals "denied" instead of "approved").

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

const args = process.argv.slice(2);
const deny = args.includes("--deny");
const prompt = args.filter((a) => a !== "--deny").join(" ") || "$ echo hello from a sub-agent";
const deputy = process.env.DEPUTY_BIN || "deputy";

// stdin/stdout are the protocol; stderr is the agent's log, passed through.
const agent = spawn(deputy, ["agent"], { stdio: ["pipe", "pipe", "inherit"] });
agent.on("error", (err) => {
  console.error(`cannot start ${deputy}: ${err.message}`);
  process.exit(1);
});

let nextId = 1;
const pending = new Map(); // request id -> {resolve, reject}
const listeners = []; // functions called with every event

function send(message) {
  // One message per line, compact JSON (JSON.stringify never emits raw newlines).
  agent.stdin.write(JSON.stringify({ jsonrpc: "2.0", ...message }) + "\n");
}

function request(method, params) {
  const id = nextId++;
  send({ id, method, params });
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

function answerApproval(message) {
  const { method, params } = message;
  const what = method === "approval/exec" ? params.command.join(" ") : Object.keys(params.changes).join(", ");
  const decision = deny ? "denied" : "approved";
  console.log(`approval ${method} [${params.approval_id ?? params.call_id}] ${what} -> ${decision}`);
  send({ id: message.id, result: { decision } });
}

createInterface({ input: agent.stdout }).on("line", (line) => {
  if (line.trim() === "") return;
  const message = JSON.parse(line);
  if ("id" in message && ("result" in message || "error" in message)) {
    const waiter = pending.get(message.id);
    pending.delete(message.id);
    if (!waiter) return; // an answer nobody waits for: ignore it
    if (message.error) waiter.reject(new Error(`${message.error.code}: ${message.error.message}`));
    else waiter.resolve(message.result);
  } else if (message.method === "event") {
    const { id, msg } = message.params;
    const detail = msg.message ?? msg.delta ?? msg.output ?? msg.last_agent_message ?? msg.reason ?? "";
    console.log(`event ${msg.type} (${id})${detail ? ": " + JSON.stringify(detail) : ""}`);
    for (const listener of listeners) listener(msg);
  } else if (message.method === "approval/exec" || message.method === "approval/patch") {
    answerApproval(message);
  } else if (message.method === "$/cancelRequest") {
    console.log(`the agent withdrew request ${message.params.id}`);
  } else if ("id" in message && "method" in message) {
    send({ id: message.id, error: { code: -32601, message: `unknown method ${message.method}` } });
  } // unknown notifications are ignored
});

function turnEnded() {
  return new Promise((resolve) => {
    listeners.push((msg) => {
      if (msg.type === "task_complete" || msg.type === "turn_aborted") resolve(msg);
    });
  });
}

const exited = new Promise((resolve) => agent.on("exit", (code, signal) => resolve({ code, signal })));

try {
  const init = await request("initialize", {
    protocol_version: 1,
    client_info: { name: "node-client", version: "1" },
    capabilities: {},
  });
  console.log(`connected to ${init.agent_info.name} ${init.agent_info.version ?? ""}`);
  const session = await request("session/start", { cwd: process.cwd(), source: "ide" });
  console.log(`session ${session.session_id}`);

  const ended = turnEnded();
  await request("submit", { id: "turn-1", op: { type: "user_input", items: [{ type: "text", text: prompt }] } });
  const end = await ended;

  await request("submit", { id: "bye", op: { type: "shutdown" } });
  const { code, signal } = await exited;
  console.log(`agent exited with ${signal ?? code}`);
  process.exit(end.type === "task_complete" && code === 0 ? 0 : 3);
} catch (err) {
  console.error(`error: ${err.message}`);
  agent.kill("SIGKILL");
  process.exit(1);
}
