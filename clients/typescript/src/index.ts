// deputy-agent-client: a typed client for Deputy sub-agents.
//
// Spawn `deputy agent` (or any program that speaks the Deputy protocol),
// run turns, answer approvals, and stop the agent's whole process tree
// within a budget. The protocol types are generated from the Rust
// `deputy-protocol` crate (see ./protocol.ts, copied from the repository's
// schema/typescript/deputy-protocol.ts at build time).

export * from "./protocol.js";
export {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_BUFFERED_EVENTS,
  DEFAULT_MAX_LINE_BYTES,
  DEFAULT_SHUTDOWN_BUDGET_MS,
  DeputyClient,
  DeputyError,
  KILL_RESERVE_MS,
  STDERR_TAIL_BYTES,
  type ApprovalHandler,
  type ApprovalRequest,
  type ClientEvent,
  type ClientOptions,
  type ConnectOptions,
  type DeputyErrorKind,
  type Ending,
  type EventStats,
  type ProtocolErrorMsg,
} from "./client.js";
