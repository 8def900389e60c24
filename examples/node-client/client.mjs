#!/usr/bin/env node
// A Deputy client with the TypeScript package (clients/typescript): spawns
// `deputy agent`, runs one turn, answers approvals, prints every event, then
// shuts the agent down. `--deny` answers approvals "denied".
//
//   DEPUTY_BIN=target/debug/deputy node examples/node-client/client.mjs '$ echo hi'
import { DeputyClient } from "deputy-agent-client";

const args = process.argv.slice(2);
const deny = args.includes("--deny");
const prompt = args.filter((a) => a !== "--deny").join(" ") || "$ echo hello from a sub-agent";

try {
  const client = await DeputyClient.connect({
    session: { cwd: process.cwd(), source: "ide" },
    onStderr: (text) => process.stderr.write(text), // the agent's logs
    onApproval: ({ method, params }) => {
      const what = method === "approval/exec" ? params.command.join(" ") : Object.keys(params.changes).join(", ");
      const decision = deny ? "denied" : "approved";
      console.log(`approval ${method} [${params.approval_id ?? params.call_id}] ${what} -> ${decision}`);
      return decision;
    },
  });
  let end = "";
  for await (const { id, msg } of client.turn(prompt, "turn-1")) {
    const detail = msg.message ?? msg.delta ?? msg.output ?? msg.reason ?? "";
    console.log(`event ${msg.type} (${id})${detail ? ": " + JSON.stringify(detail) : ""}`);
    end = msg.type;
  }
  const ending = await client.shutdown();
  console.log(`agent exited with ${ending.signal ?? ending.exitCode}`);
  process.exit(end === "task_complete" && ending.exitCode === 0 ? 0 : 3);
} catch (error) {
  console.error(`error: ${error.message}`);
  process.exit(1);
}
