//! JSON-RPC error codes used on a Deputy connection.
//!
//! The first six are JSON-RPC 2.0's own (plus LSP's `RequestCancelled`); the
//! rest are Deputy's, in the range JSON-RPC reserves for implementation-defined
//! server errors (-32000 to -32099). PROTOCOL.md lists each with when it is sent.

/// The line is not valid JSON (or not valid UTF-8). Answered with id `null`.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON is not a JSON-RPC 2.0 message (wrong keys, wrong `jsonrpc`, an empty
/// batch, a line over the size limit). Answered with id `null`.
pub const INVALID_REQUEST: i64 = -32600;
/// The method is not known to the receiver.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// The params do not decode into the method's params type; `data` carries the
/// decoder's message (for example `unknown variant "foo"` for an unknown op).
pub const INVALID_PARAMS: i64 = -32602;
/// The receiver failed while handling a well-formed request.
pub const INTERNAL_ERROR: i64 = -32603;
/// The request was cancelled (by `$/cancelRequest`, or because the receiver is
/// shutting down) before it was answered.
pub const REQUEST_CANCELLED: i64 = -32800;

/// A request other than `initialize` arrived before `initialize` succeeded.
pub const NOT_INITIALIZED: i64 = -32002;
/// `initialize` arrived a second time.
pub const ALREADY_INITIALIZED: i64 = -32003;
/// The client asked for a protocol version the agent does not speak; `data`
/// is `{"supported": [1]}`.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32004;
/// `submit` arrived before `session/start` succeeded.
pub const NO_SESSION: i64 = -32010;
/// `session/start` arrived a second time (one session per process).
pub const SESSION_ALREADY_STARTED: i64 = -32011;
/// The initial history could not be loaded (no such rollout, unreadable file).
pub const HISTORY_UNAVAILABLE: i64 = -32012;
/// The requested model (brain) is unknown or could not be set up.
pub const MODEL_UNAVAILABLE: i64 = -32013;
/// `user_input` arrived while a turn is running that was not told to stop,
/// and the session's `on_busy` is `reject` (the default). An input sent
/// after an `interrupt` is never rejected: it waits for `turn_aborted`.
pub const TURN_IN_PROGRESS: i64 = -32014;
/// The agent is shutting down and accepts no more submissions.
pub const SHUTTING_DOWN: i64 = -32015;

/// `session/start` asked for a sandbox (`sandbox` other than `off`) that the
/// kernel cannot enforce (no Landlock ABI 3+, or no seccomp when the network
/// is denied), without `sandbox_best_effort`; `data` is the agent's
/// `SandboxSupport` (`landlock_abi`, `seccomp`, `modes`).
pub const SANDBOX_UNAVAILABLE: i64 = -32016;

/// Every code above with its name, for documentation and tests.
pub const ALL: &[(&str, i64)] = &[
    ("PARSE_ERROR", PARSE_ERROR),
    ("INVALID_REQUEST", INVALID_REQUEST),
    ("METHOD_NOT_FOUND", METHOD_NOT_FOUND),
    ("INVALID_PARAMS", INVALID_PARAMS),
    ("INTERNAL_ERROR", INTERNAL_ERROR),
    ("REQUEST_CANCELLED", REQUEST_CANCELLED),
    ("NOT_INITIALIZED", NOT_INITIALIZED),
    ("ALREADY_INITIALIZED", ALREADY_INITIALIZED),
    ("UNSUPPORTED_PROTOCOL_VERSION", UNSUPPORTED_PROTOCOL_VERSION),
    ("NO_SESSION", NO_SESSION),
    ("SESSION_ALREADY_STARTED", SESSION_ALREADY_STARTED),
    ("HISTORY_UNAVAILABLE", HISTORY_UNAVAILABLE),
    ("MODEL_UNAVAILABLE", MODEL_UNAVAILABLE),
    ("TURN_IN_PROGRESS", TURN_IN_PROGRESS),
    ("SHUTTING_DOWN", SHUTTING_DOWN),
    ("SANDBOX_UNAVAILABLE", SANDBOX_UNAVAILABLE),
];
