// Generated from the deputy-protocol crate by `deputy schema`; do not edit.
// Protocol version 1. See PROTOCOL.md for the semantics.

export type JsonValue = number | string | boolean | Array<JsonValue> | { [key in string]: JsonValue } | null;

export type RequestId = number | string;

export type PeerInfo = { 
/**
 * A short program name, e.g. `"deputy"` or `"my-editor-extension"`.
 */
name: string, 
/**
 * The program's version, if it has one.
 */
version?: string, };

export type ClientCapabilities = { 
/**
 * The longest line, in bytes, this host reads; the agent never writes a
 * longer one (an event or request over it is not sent; see PROTOCOL.md
 * §1 "Flow control and limits"). Absent: no limit announced.
 */
max_line_bytes?: number, 
/**
 * Free-form, non-standard capabilities.
 */
experimental?: JsonValue, };

export type InitializeParams = { 
/**
 * The protocol version the host speaks; `PROTOCOL_VERSION`.
 */
protocol_version: number, 
/**
 * The host program's name and version.
 */
client_info: PeerInfo, 
/**
 * What the host can do; absent: nothing announced.
 */
capabilities?: ClientCapabilities, 
/**
 * Extension point: anything, ignored by peers that do not know it.
 */
_meta?: JsonValue, };

export type AgentCapabilities = { 
/**
 * The `Op` types this agent accepts in `submit` (e.g. `user_input`,
 * `interrupt`, `shutdown`).
 */
ops: Array<string>, 
/**
 * The models (brains) this agent can run, by name (e.g. `shell`, `script`).
 */
models: Array<string>, 
/**
 * The `InitialHistory` types this agent supports (`new`, `resumed`, `forked`).
 */
initial_history: Array<string>, 
/**
 * The longest line, in bytes, this agent reads; longer lines are rejected.
 */
max_line_bytes?: number, 
/**
 * What command sandboxing this agent can enforce on this kernel
 * (absent: an agent that does not sandbox).
 */
sandbox?: SandboxSupport, };

export type InitializeResult = { 
/**
 * The protocol version the agent will speak (equal to the requested one).
 */
protocol_version: number, 
/**
 * The agent program's name and version.
 */
agent_info: PeerInfo, 
/**
 * What the agent can do.
 */
capabilities: AgentCapabilities, 
/**
 * Extension point: anything, ignored by peers that do not know it.
 */
_meta?: JsonValue, };

export type SessionSource = "cli" | "exec" | "ide" | "mcp" | { "subagent": SubAgentSource } | "unknown";

export type SubAgentSource = "review" | "compact" | { "other": string };

export type ApprovalPolicy = "ask_always" | "ask_unless_read_only" | "never_ask" | "ask_to_escalate";

export type ModelSelection = { 
/**
 * The brain's name: `shell`, `script`, or an agent-specific one.
 */
name: string, 
/**
 * Path of a scenario file, for the `script` model.
 */
scenario?: string, 
/**
 * Base URL of an HTTP model endpoint.
 */
base_url?: string, 
/**
 * Name of the environment variable holding the endpoint's API key.
 */
api_key_env?: string, };

export type ExecSettings = { 
/**
 * Per-command timeout in milliseconds (default 60000).
 */
timeout_ms?: number, 
/**
 * Keep environment variables whose names contain KEY, SECRET, TOKEN or
 * PASSWORD (they are removed by default).
 */
keep_secret_env?: boolean, };

export type OnBusy = "reject" | "queue" | "replace";

export type SandboxMode = "workspace_write" | "read_only" | "off";

export type SandboxSupport = { 
/**
 * The kernel's Landlock ABI version (0: no Landlock). The file-system
 * rules need 3 or more; 4 adds TCP bind/connect rules; 6 adds scoping
 * of abstract unix sockets and signals.
 */
landlock_abi: number, 
/**
 * Whether seccomp filters are available (the network rule needs them).
 */
seccomp: boolean, 
/**
 * The `sandbox` modes a session can ask for without `sandbox_best_effort`
 * (always contains `off`).
 */
modes: Array<SandboxMode>, };

export type SessionStartParams = { 
/**
 * The session's working directory: commands run here and patches are
 * relative to it. Must be absolute.
 */
cwd: string, 
/**
 * Who started the session (default `unknown`).
 */
source?: SessionSource, 
/**
 * What the session starts from (default `{"type":"new"}`).
 */
initial_history?: InitialHistory, 
/**
 * When the agent asks before running a tool (default `ask_always`).
 */
approval_policy?: ApprovalPolicy, 
/**
 * The brain; the agent's default (`shell` for `deputy agent`) if absent.
 */
model?: ModelSelection, 
/**
 * Directories, besides `cwd`, that patches may write to.
 */
writable_roots?: Array<string>, 
/**
 * How commands run: timeout and environment (defaults if absent).
 */
exec?: ExecSettings, 
/**
 * What a `user_input` does while a turn runs (default `reject`). Whatever
 * this says, a `user_input` that arrives after the running turn was told
 * to stop (an `interrupt`) waits for that turn's `turn_aborted` and then
 * starts: it is never rejected.
 */
on_busy?: OnBusy, 
/**
 * How commands are confined. Absent: `workspace_write`, best effort
 * (on a kernel without Landlock/seccomp the session starts with a
 * `warning` event instead of failing). Given explicitly, it is enforced
 * or `session/start` fails with -32016, unless `sandbox_best_effort`.
 */
sandbox?: SandboxMode, 
/**
 * Allow the network to sandboxed commands (default false).
 */
network?: boolean, 
/**
 * When the kernel cannot enforce the sandbox: true starts the session
 * anyway (commands then run unsandboxed, a `warning` event says so and
 * every `exec_command_begin` carries `unsandboxed: true`); false fails
 * `session/start` with -32016. Default: false when `sandbox` is given,
 * true when it is absent.
 */
sandbox_best_effort?: boolean, 
/**
 * Extension point: anything, ignored by peers that do not know it.
 */
_meta?: JsonValue, };

export type SessionStartResult = { 
/**
 * The session's id: give it as `session_id` to resume the session later.
 */
session_id: string, 
/**
 * Where the session's rollout is written, if it is persisted.
 */
rollout_path?: string, };

export type Submission = { 
/**
 * The caller's id for this submission; absent: the agent makes one up.
 */
id?: string, 
/**
 * What to do.
 */
op: Op, };

export type SubmitResult = { 
/**
 * The submission's id; the events it causes carry it.
 */
id: string, };

export type Op = { "type": "user_input", 
/**
 * The input, in order.
 */
items: Array<InputItem>, } | { "type": "interrupt" } | { "type": "shutdown" };

export type InputItem = { "type": "text", 
/**
 * The text.
 */
text: string, };

export type Event = { 
/**
 * The id of the submission that caused this event (`""` for events that
 * belong to no submission, such as `session_configured`).
 */
id: string, 
/**
 * What happened: an object tagged by `type` (the event table is in
 * PROTOCOL.md §3, `event`). Unknown types are to be ignored.
 */
msg: EventMsg, };

export type KnownEventMsg = { "type": "session_configured", 
/**
 * The session's id (a resumed session keeps the id it had).
 */
session_id: string, 
/**
 * The model (brain) name in use.
 */
model: string, 
/**
 * Where the session's rollout is written; absent when it is not persisted.
 */
rollout_path?: string, 
/**
 * How many items of history were loaded (0 for a new session).
 */
history_len: number, 
/**
 * The last token usage found in the loaded history.
 */
token_usage?: TokenUsageInfo, 
/**
 * The session's working directory (absolute).
 */
cwd: string, 
/**
 * When the agent asks the host before running a tool.
 */
approval_policy: ApprovalPolicy, 
/**
 * Set when this session was forked from another.
 */
forked_from?: string, } | { "type": "task_started", 
/**
 * The new turn's id; its later events carry it.
 */
turn_id: string, 
/**
 * The model's context window in tokens; absent when unknown.
 */
model_context_window?: number, } | { "type": "task_complete", 
/**
 * The turn that finished.
 */
turn_id: string, 
/**
 * The text of the turn's last agent message; absent when it sent none.
 */
last_agent_message?: string, } | { "type": "turn_aborted", 
/**
 * The turn that ended.
 */
turn_id: string, 
/**
 * Why it ended.
 */
reason: TurnAbortReason, } | { "type": "agent_message", 
/**
 * The message's whole text.
 */
message: string, } | { "type": "agent_message_delta", 
/**
 * The next piece of text, to append to the ones before.
 */
delta: string, } | { "type": "agent_reasoning", 
/**
 * The reasoning's whole text.
 */
text: string, } | { "type": "agent_reasoning_delta", 
/**
 * The next piece of text, to append to the ones before.
 */
delta: string, } | { "type": "token_count", 
/**
 * The usage after this call; absent when the model reported none.
 */
info?: TokenUsageInfo, } | { "type": "exec_command_begin", 
/**
 * The tool call: the same id as in its approval, output deltas and end.
 */
call_id: string, 
/**
 * The turn the command belongs to.
 */
turn_id: string, 
/**
 * The argv as run (no shell unless the argv itself is e.g. `sh -c …`).
 */
command: Array<string>, 
/**
 * The directory it runs in (absolute).
 */
cwd: string, 
/**
 * True when the command runs **outside** the sandbox: the session's
 * `sandbox` is `off`, the sandbox could not be enforced (best
 * effort), or an escalation was approved. Absent (false): it runs in
 * the session's sandbox.
 */
unsandboxed?: boolean, } | { "type": "exec_command_output_delta", 
/**
 * The tool call, as in its `exec_command_begin`.
 */
call_id: string, 
/**
 * Which stream the chunk was read from.
 */
stream: ExecOutputStream, 
/**
 * The next piece of output, as read.
 */
chunk: string, } | { "type": "exec_command_end", 
/**
 * The tool call, as in its `exec_command_begin`.
 */
call_id: string, 
/**
 * The turn the command belongs to.
 */
turn_id: string, 
/**
 * The exit code; 128 + N when killed by signal N; -1 if it never ran.
 */
exit_code: number, 
/**
 * How long it ran, in milliseconds.
 */
duration_ms: number, 
/**
 * stdout and stderr interleaved as read, capped: the first and last
 * 64 KiB are kept and the middle replaced by a marker.
 */
output: string, 
/**
 * True when `output` was cut.
 */
truncated: boolean, 
/**
 * The timeout killed it (`exit_code` is then 137: SIGKILL).
 */
timed_out: boolean, 
/**
 * The turn was aborted (interrupt, `abort` answer, replace, shutdown,
 * end of input, SIGTERM) while it ran, so the agent killed it;
 * `exit_code` is then 137 (128 + SIGKILL) and `output` is what it
 * wrote until then. Sent before the turn's `turn_aborted`.
 */
interrupted: boolean, } | { "type": "patch_apply_begin", 
/**
 * The tool call, as in its `approval/patch` (if one was asked).
 */
call_id: string, 
/**
 * The turn the patch belongs to.
 */
turn_id: string, 
/**
 * True when no approval was asked (policy or session grant).
 */
auto_approved: boolean, 
/**
 * The changes by path, capped as in `approval/patch`.
 */
changes: { [key in string]: FileChange }, } | { "type": "patch_apply_end", 
/**
 * The tool call, as in its `patch_apply_begin`.
 */
call_id: string, 
/**
 * The turn the patch belongs to.
 */
turn_id: string, 
/**
 * True when every change was applied; false when none was.
 */
success: boolean, 
/**
 * On success, a summary of the files updated; may be empty.
 */
stdout: string, 
/**
 * On failure, why the patch was not applied; may be empty.
 */
stderr: string, } | { "type": "error", 
/**
 * What failed, for a person to read.
 */
message: string, } | { "type": "stream_error", 
/**
 * What failed, for a person to read.
 */
message: string, } | { "type": "warning", 
/**
 * The warning, for a person to read.
 */
message: string, } | { "type": "background_event", 
/**
 * The status text.
 */
message: string, } | { "type": "shutdown_complete" };

export type TokenUsage = { 
/**
 * Prompt tokens sent to the model, cached ones included.
 */
input_tokens: number, 
/**
 * The part of `input_tokens` the model served from its prompt cache.
 */
cached_input_tokens: number, 
/**
 * Tokens the model generated, reasoning included.
 */
output_tokens: number, 
/**
 * The part of `output_tokens` spent on reasoning.
 */
reasoning_output_tokens: number, 
/**
 * All tokens counted, as the model reports them (usually input plus output).
 */
total_tokens: number, };

export type TokenUsageInfo = { 
/**
 * Summed over every model call of the session so far.
 */
total_token_usage: TokenUsage, 
/**
 * Of the most recent model call alone.
 */
last_token_usage: TokenUsage, 
/**
 * The model's context window in tokens; absent when unknown.
 */
model_context_window?: number, };

export type TurnAbortReason = "interrupted" | "replaced" | "shutdown";

export type ExecOutputStream = "stdout" | "stderr";

export type ExecApprovalParams = { 
/**
 * The tool call this approval is for (matches `exec_command_begin`).
 */
call_id: string, 
/**
 * Identifies this approval when one call needs several; absent means
 * `call_id` identifies it. A host tells approvals apart by this, else by
 * `call_id` (in Rust: `approval_key`), never by `turn_id`.
 */
approval_id?: string, 
/**
 * The turn the call belongs to.
 */
turn_id: string, 
/**
 * The argv to run (no shell unless argv itself is e.g. `sh -c …`).
 */
command: Array<string>, 
/**
 * The directory it would run in (absolute).
 */
cwd: string, 
/**
 * Why the agent wants to run it, if it said.
 */
reason?: string, 
/**
 * True for an **escalation** (policy `ask_to_escalate`): the command
 * already ran in the sandbox and failed in a way that looks like the
 * sandbox blocked it (`reason` says what); approving runs it again
 * **outside** the sandbox. Absent (false): approving runs it in the
 * session's sandbox.
 */
unsandboxed?: boolean, };

export type PatchApprovalParams = { 
/**
 * The tool call this approval is for (matches `patch_apply_begin`).
 */
call_id: string, 
/**
 * The turn the call belongs to.
 */
turn_id: string, 
/**
 * The changes, by path (relative to the session's cwd, or absolute).
 */
changes: { [key in string]: FileChange }, 
/**
 * Why the agent wants to apply it, if it said.
 */
reason?: string, 
/**
 * Every path this patch writes (adds, updates, deletes or moves to)
 * outside the workspace (the session's cwd and writable roots), absolute,
 * with its directories' symlinks resolved: where the write really lands
 * (a symlink as the last component is replaced, not followed). Empty (and
 * omitted) for a patch that stays inside. A host must show these to the
 * person as a separate decision: approving the patch approves them.
 */
outside_workspace?: Array<string>, 
/**
 * Set when `outside_workspace` is not empty and all of it lies in one
 * directory: that directory, exactly (the smallest grant that covers the
 * patch). Only `approved_for_session` grants it (writes under it join
 * the workspace for the rest of the session); `approved` applies this
 * patch and grants nothing. Absent when the outside paths lie in several
 * directories: then nothing outside is ever granted for the session.
 */
grant_root?: string, };

export type FileChange = { "type": "add", 
/**
 * The new file's whole content, possibly cut.
 */
content: string, 
/**
 * `content` was cut (see the type's docs).
 */
truncated?: boolean, 
/**
 * When `truncated`: the size in bytes of the whole content.
 */
total_bytes?: number, } | { "type": "delete", 
/**
 * What the file held, possibly cut.
 */
content: string, 
/**
 * `content` was cut (see the type's docs).
 */
truncated?: boolean, 
/**
 * When `truncated`: the size in bytes of the whole content.
 */
total_bytes?: number, } | { "type": "update", 
/**
 * The edit as a unified diff, possibly cut.
 */
unified_diff: string, 
/**
 * Where the file moves to; absent: it stays.
 */
move_path?: string, 
/**
 * `unified_diff` was cut (see the type's docs).
 */
truncated?: boolean, 
/**
 * When `truncated`: the size in bytes of the whole diff.
 */
total_bytes?: number, };

export type ReviewDecision = "approved" | "approved_for_session" | "denied" | "abort";

export type ApprovalResult = { 
/**
 * The host's answer.
 */
decision: ReviewDecision, };

export type CancelRequestParams = { 
/**
 * The id of the request to cancel (sent earlier by the same side).
 */
id: RequestId, };

export type InitialHistory = { "type": "new" } | { "type": "resumed", 
/**
 * The session to resume: a session id or a rollout path.
 */
from: HistorySource, } | { "type": "forked", 
/**
 * The history to copy: a session id, a rollout path or inline items.
 */
from: HistorySource, };

export type HistorySource = { "rollout_path": string } | { "session_id": string } | { "items": Array<RolloutItem> };

export type SessionMeta = { 
/**
 * The session's id.
 */
session_id: string, 
/**
 * RFC 3339 time the session was created.
 */
created_at: string, 
/**
 * The session's working directory.
 */
cwd: string, 
/**
 * Who started the session.
 */
source: SessionSource, 
/**
 * The name of the model (brain) the session started with.
 */
model: string, 
/**
 * The session's approval policy.
 */
approval_policy: ApprovalPolicy, 
/**
 * The session id this one was forked from.
 */
forked_from?: string, 
/**
 * The version of the agent that wrote it.
 */
agent_version: string, };

export type ApprovalKind = "exec" | "patch";

export type RolloutItem = { "type": "session_meta" } & SessionMeta | { "type": "user_input", 
/**
 * The turn this input started.
 */
turn_id: string, 
/**
 * The input, as submitted.
 */
items: Array<InputItem>, } | { "type": "agent_message", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The message's whole text.
 */
message: string, } | { "type": "reasoning", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The reasoning's whole text.
 */
text: string, } | { "type": "tool_call", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * Identifies the call; its result and approval carry the same id.
 */
call_id: string, 
/**
 * The tool's name.
 */
name: string, 
/**
 * The tool's arguments, as the model gave them.
 */
arguments: JsonValue, } | { "type": "tool_result", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The tool call this is the result of.
 */
call_id: string, 
/**
 * Whether the tool succeeded (false also when it was denied).
 */
success: boolean, 
/**
 * The text the model was given.
 */
output: string, } | { "type": "approval", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The tool call it was asked for.
 */
call_id: string, 
/**
 * A command or a patch.
 */
kind: ApprovalKind, 
/**
 * The host's answer.
 */
decision: ReviewDecision, } | { "type": "token_count", 
/**
 * The session's usage after that call.
 */
info: TokenUsageInfo, } | { "type": "turn_complete", 
/**
 * The turn that completed.
 */
turn_id: string, } | { "type": "turn_aborted", 
/**
 * The turn that was aborted.
 */
turn_id: string, 
/**
 * Why it was aborted.
 */
reason: TurnAbortReason, };

export type RolloutLine = { 
/**
 * RFC 3339 time the item was written.
 */
timestamp: string, } & ({ "type": "session_meta" } & SessionMeta | { "type": "user_input", 
/**
 * The turn this input started.
 */
turn_id: string, 
/**
 * The input, as submitted.
 */
items: Array<InputItem>, } | { "type": "agent_message", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The message's whole text.
 */
message: string, } | { "type": "reasoning", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The reasoning's whole text.
 */
text: string, } | { "type": "tool_call", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * Identifies the call; its result and approval carry the same id.
 */
call_id: string, 
/**
 * The tool's name.
 */
name: string, 
/**
 * The tool's arguments, as the model gave them.
 */
arguments: JsonValue, } | { "type": "tool_result", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The tool call this is the result of.
 */
call_id: string, 
/**
 * Whether the tool succeeded (false also when it was denied).
 */
success: boolean, 
/**
 * The text the model was given.
 */
output: string, } | { "type": "approval", 
/**
 * The turn it belongs to.
 */
turn_id: string, 
/**
 * The tool call it was asked for.
 */
call_id: string, 
/**
 * A command or a patch.
 */
kind: ApprovalKind, 
/**
 * The host's answer.
 */
decision: ReviewDecision, } | { "type": "token_count", 
/**
 * The session's usage after that call.
 */
info: TokenUsageInfo, } | { "type": "turn_complete", 
/**
 * The turn that completed.
 */
turn_id: string, } | { "type": "turn_aborted", 
/**
 * The turn that was aborted.
 */
turn_id: string, 
/**
 * Why it was aborted.
 */
reason: TurnAbortReason, });

/**
 * The protocol version this file describes; sent in `initialize`.
 */
export const PROTOCOL_VERSION = 1;

/**
 * The JSON-RPC error codes used on a Deputy connection; PROTOCOL.md §4 says
 * when each is sent.
 */
export const ErrorCodes = {
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  REQUEST_CANCELLED: -32800,
  NOT_INITIALIZED: -32002,
  ALREADY_INITIALIZED: -32003,
  UNSUPPORTED_PROTOCOL_VERSION: -32004,
  NO_SESSION: -32010,
  SESSION_ALREADY_STARTED: -32011,
  HISTORY_UNAVAILABLE: -32012,
  MODEL_UNAVAILABLE: -32013,
  TURN_IN_PROGRESS: -32014,
  SHUTTING_DOWN: -32015,
  SANDBOX_UNAVAILABLE: -32016,
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * Every method name of the protocol.
 */
export const Methods = {
  INITIALIZE: "initialize",
  SESSION_START: "session/start",
  SUBMIT: "submit",
  EVENT: "event",
  APPROVAL_EXEC: "approval/exec",
  APPROVAL_PATCH: "approval/patch",
  CANCEL_REQUEST: "$/cancelRequest",
} as const;

/**
 * Requests a host sends to an agent: params and result by method.
 */
export type HostRequests = {
  "initialize": { params: InitializeParams, result: InitializeResult },
  "session/start": { params: SessionStartParams, result: SessionStartResult },
  "submit": { params: Submission, result: SubmitResult },
};

/**
 * Notifications a host sends to an agent: params by method.
 */
export type HostNotifications = {
  "$/cancelRequest": { params: CancelRequestParams },
};

/**
 * Requests an agent sends to its host: params and result by method.
 */
export type AgentRequests = {
  "approval/exec": { params: ExecApprovalParams, result: ApprovalResult },
  "approval/patch": { params: PatchApprovalParams, result: ApprovalResult },
};

/**
 * Notifications an agent sends to its host: params by method.
 */
export type AgentNotifications = {
  "event": { params: Event },
  "$/cancelRequest": { params: CancelRequestParams },
};

export type HostRequestMethod = keyof HostRequests;
export type AgentRequestMethod = keyof AgentRequests;

/**
 * A JSON-RPC 2.0 request: answered by a response with the same `id`.
 */
export type JsonRpcRequest<M extends string = string, P = JsonValue> = { jsonrpc: "2.0", id: RequestId, method: M, params?: P };

/**
 * A JSON-RPC 2.0 notification: never answered.
 */
export type JsonRpcNotification<M extends string = string, P = JsonValue> = { jsonrpc: "2.0", method: M, params?: P };

/**
 * The `error` member of a failed response.
 */
export type JsonRpcErrorObject = { code: number, message: string, data?: JsonValue };

/**
 * A successful response.
 */
export type JsonRpcSuccess<R = JsonValue> = { jsonrpc: "2.0", id: RequestId, result: R };

/**
 * A failed response; `id` is `null` when the request could not be read.
 */
export type JsonRpcFailure = { jsonrpc: "2.0", id: RequestId | null, error: JsonRpcErrorObject };

export type JsonRpcResponse<R = JsonValue> = JsonRpcSuccess<R> | JsonRpcFailure;

export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResponse;

/**
 * Every request a host may send, typed by method.
 */
export type HostRequest = { [M in keyof HostRequests]: JsonRpcRequest<M, HostRequests[M]["params"]> }[keyof HostRequests];

/**
 * Every request an agent may send, typed by method.
 */
export type AgentRequest = { [M in keyof AgentRequests]: JsonRpcRequest<M, AgentRequests[M]["params"]> }[keyof AgentRequests];

/**
 * Every notification an agent may send, typed by method.
 */
export type AgentNotification = { [M in keyof AgentNotifications]: JsonRpcNotification<M, AgentNotifications[M]["params"]> }[keyof AgentNotifications];

/**
 * Every notification a host may send, typed by method.
 */
export type HostNotification = { [M in keyof HostNotifications]: JsonRpcNotification<M, HostNotifications[M]["params"]> }[keyof HostNotifications];

declare const unknownEventType: unique symbol;

/**
 * The `type` of an event this file does not describe. At run time it is a
 * string (none of the known ones); the type checker sees an opaque mark
 * instead, so that `switch (msg.type)` and `msg.type === "…"` narrow to
 * the known events. `eventType(msg)` gives the string.
 */
export type UnknownEventType = { readonly [unknownEventType]: "an event type this version does not know" };

/**
 * An event of a type this file does not describe (a newer agent's). Hosts
 * must ignore event types they do not know (PROTOCOL.md §3); Rust decodes
 * them as `EventMsg::Unknown`.
 */
export type UnknownEventMsg = { type: UnknownEventType, [field: string]: unknown };

/**
 * What happened, tagged by `type`: one of the known events, or one of a
 * type this version does not know.
 */
export type EventMsg = KnownEventMsg | UnknownEventMsg;

export type KnownEventType = KnownEventMsg["type"];

/**
 * The `type` of every known event.
 */
export const KNOWN_EVENT_TYPES: readonly KnownEventType[] = ["session_configured", "task_started", "task_complete", "turn_aborted", "agent_message", "agent_message_delta", "agent_reasoning", "agent_reasoning_delta", "token_count", "exec_command_begin", "exec_command_output_delta", "exec_command_end", "patch_apply_begin", "patch_apply_end", "error", "stream_error", "warning", "background_event", "shutdown_complete"];

/**
 * Whether `msg` is one of the events this file describes.
 */
export function isKnownEventMsg(msg: EventMsg): msg is KnownEventMsg {
  return (KNOWN_EVENT_TYPES as readonly string[]).includes(eventType(msg));
}

/**
 * The `type` of any event, known or not, as the string it is on the wire.
 */
export function eventType(msg: EventMsg | { type: string }): string {
  return msg.type as unknown as string;
}
