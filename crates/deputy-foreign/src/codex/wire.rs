//! The Codex app-server v2 messages Deputy reads and writes, after the
//! schema Codex 0.171.0 generates itself (`codex app-server
//! generate-json-schema --experimental`; the TypeScript twin is
//! `generate-ts`).
//!
//! The framing is JSON-RPC 2.0's shapes **without** the `"jsonrpc"` member,
//! one object per line, in both directions. Field names are camelCase.
//! Incoming messages decode leniently (unknown fields and variants are
//! ignored, as Codex adds them often); outgoing ones hold only the fields
//! Deputy sets.

use std::path::PathBuf;

use deputy_protocol::RequestId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::DecodeError;

/// Method names.
pub mod methods {
    /// Deputy → Codex request: the handshake.
    pub const INITIALIZE: &str = "initialize";
    /// Deputy → Codex notification: the handshake is done.
    pub const INITIALIZED: &str = "initialized";
    /// Deputy → Codex request: start a thread (a conversation).
    pub const THREAD_START: &str = "thread/start";
    /// Deputy → Codex request: load a stored thread and continue it.
    pub const THREAD_RESUME: &str = "thread/resume";
    /// Deputy → Codex request: start a turn with user input.
    pub const TURN_START: &str = "turn/start";
    /// Deputy → Codex request: stop the running turn.
    pub const TURN_INTERRUPT: &str = "turn/interrupt";
    /// Experimental (needs `capabilities.experimentalApi`): kills every
    /// background terminal of the thread (the commands an interrupt left
    /// running).
    pub const BACKGROUND_TERMINALS_CLEAN: &str = "thread/backgroundTerminals/clean";

    /// Codex → Deputy notification: a thread exists.
    pub const THREAD_STARTED: &str = "thread/started";
    /// Codex → Deputy notification: a turn began.
    pub const TURN_STARTED: &str = "turn/started";
    /// Codex → Deputy notification: a turn ended (completed, interrupted or failed).
    pub const TURN_COMPLETED: &str = "turn/completed";
    /// Codex → Deputy notification: an item (command, file change, message, …) began.
    pub const ITEM_STARTED: &str = "item/started";
    /// Codex → Deputy notification: an item ended.
    pub const ITEM_COMPLETED: &str = "item/completed";
    /// Codex → Deputy notification: a piece of an agent message.
    pub const AGENT_MESSAGE_DELTA: &str = "item/agentMessage/delta";
    /// Codex → Deputy notification: a piece of raw reasoning text.
    pub const REASONING_TEXT_DELTA: &str = "item/reasoning/textDelta";
    /// Codex → Deputy notification: a piece of a reasoning summary.
    pub const REASONING_SUMMARY_DELTA: &str = "item/reasoning/summaryTextDelta";
    /// Codex → Deputy notification: a piece of a command's output.
    pub const COMMAND_OUTPUT_DELTA: &str = "item/commandExecution/outputDelta";
    /// Codex → Deputy notification: the thread's token usage after a model call.
    pub const TOKEN_USAGE_UPDATED: &str = "thread/tokenUsage/updated";
    /// Codex → Deputy notification: an error (the turn may retry or fail).
    pub const ERROR: &str = "error";
    /// Codex → Deputy notification: a warning.
    pub const WARNING: &str = "warning";
    /// Codex → Deputy notification: a problem in the user's Codex config.
    pub const CONFIG_WARNING: &str = "configWarning";
    /// Codex → Deputy notification: a deprecated feature is in use.
    pub const DEPRECATION_NOTICE: &str = "deprecationNotice";
    /// Codex → Deputy notification: a server request was settled without our answer (withdrawn).
    pub const SERVER_REQUEST_RESOLVED: &str = "serverRequest/resolved";

    /// Codex → Deputy request: may this command run?
    pub const COMMAND_APPROVAL: &str = "item/commandExecution/requestApproval";
    /// Codex → Deputy request: may this file change be applied?
    pub const FILE_CHANGE_APPROVAL: &str = "item/fileChange/requestApproval";
}

/// JSON-RPC's "method not found", sent for server requests Deputy cannot answer.
pub const METHOD_NOT_FOUND: i64 = -32601;

// ---------------------------------------------------------------------------
// Framing.

/// One line from the app-server.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to one of our requests.
    Response {
        /// The id of our request.
        id: RequestId,
        /// Its result, or the error Codex answered with.
        result: Result<Value, RpcError>,
    },
    /// A request of the server (an approval, …): it waits for our answer.
    Request {
        /// The id to answer with.
        id: RequestId,
        /// The method's name (see `methods`).
        method: String,
        /// The params; `null` when absent.
        params: Value,
    },
    /// A notification of the server: no answer expected.
    Notification {
        /// The method's name (see `methods`).
        method: String,
        /// The params; `null` when absent.
        params: Value,
    },
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RpcError {
    /// The error code; 0 when absent.
    #[serde(default)]
    pub code: i64,
    /// The error message; empty when absent.
    #[serde(default)]
    pub message: String,
}

impl Incoming {
    /// Decodes a line. A `"jsonrpc"` member, if present, is ignored.
    pub fn parse(line: &str) -> Result<Incoming, DecodeError> {
        let v: Value =
            serde_json::from_str(line).map_err(|e| DecodeError::new(line, format!("not JSON: {e}")))?;
        let Value::Object(mut o) = v else {
            return Err(DecodeError::new(line, "not a JSON object"));
        };
        let id = match o.remove("id") {
            None | Some(Value::Null) => None,
            Some(id) => Some(
                serde_json::from_value::<RequestId>(id)
                    .map_err(|_| DecodeError::new(line, "an id that is neither an integer nor a string"))?,
            ),
        };
        let params = o.remove("params").unwrap_or(Value::Null);
        match (o.remove("method"), id) {
            (Some(Value::String(method)), Some(id)) => Ok(Incoming::Request { id, method, params }),
            (Some(Value::String(method)), None) => Ok(Incoming::Notification { method, params }),
            (Some(_), _) => Err(DecodeError::new(line, "a method that is not a string")),
            (None, Some(id)) => {
                if let Some(e) = o.remove("error") {
                    let e: RpcError = serde_json::from_value(e)
                        .map_err(|e| DecodeError::new(line, format!("a malformed error: {e}")))?;
                    Ok(Incoming::Response { id, result: Err(e) })
                } else if let Some(r) = o.remove("result") {
                    Ok(Incoming::Response { id, result: Ok(r) })
                } else {
                    Err(DecodeError::new(line, "a response without result or error"))
                }
            }
            (None, None) => Err(DecodeError::new(line, "neither a request, a notification nor a response")),
        }
    }
}

/// A request line.
pub fn request(id: i64, method: &str, params: impl Serialize) -> String {
    json!({"id": id, "method": method, "params": params}).to_string()
}

/// A notification line without params (`initialized`).
pub fn notification(method: &str) -> String {
    json!({"method": method}).to_string()
}

/// A response line for a server request.
pub fn response(id: &RequestId, result: impl Serialize) -> String {
    json!({"id": id, "result": result}).to_string()
}

/// An error response line for a server request.
pub fn error_response(id: &RequestId, code: i64, message: &str) -> String {
    json!({"id": id, "error": {"code": code, "message": message}}).to_string()
}

// ---------------------------------------------------------------------------
// Deputy → Codex.

/// Who the client is, in `initialize`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// Also Codex's `originator` header and the start of its user agent.
    pub name: String,
    /// A display name for the client (sent as `null` when `None`).
    pub title: Option<String>,
    /// The client's version.
    pub version: String,
}

/// Params of `initialize`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// Who the client is.
    pub client_info: ClientInfo,
    /// What the client opts into.
    pub capabilities: InitializeCapabilities,
}

/// The client's opt-ins in `initialize`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeCapabilities {
    /// Needed for `thread/backgroundTerminals/clean`.
    pub experimental_api: bool,
}

/// Params of `thread/start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartParams {
    /// The thread's working directory (absolute).
    pub cwd: PathBuf,
    /// `untrusted`, `on-request` or `never`; `None`: the user's Codex config decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<String>,
    /// `read-only`, `workspace-write` or `danger-full-access`; `None`: the user's Codex config decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// Params of `thread/resume`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResumeParams {
    /// The thread to resume.
    pub thread_id: String,
    /// The working directory to continue in (absolute).
    pub cwd: PathBuf,
    /// As in `thread/start`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<String>,
    /// As in `thread/start`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// Params of `turn/start`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartParams {
    /// The thread to run the turn in.
    pub thread_id: String,
    /// The user's input, in order.
    pub input: Vec<UserInput>,
}

/// One piece of user input (Deputy has text only).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum UserInput {
    /// Plain text.
    Text {
        /// The text.
        text: String,
        /// Spans of the text that are mentions etc.; none from Deputy.
        text_elements: Vec<Value>,
    },
}

/// Params of `turn/interrupt`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnInterruptParams {
    /// The thread of the turn.
    pub thread_id: String,
    /// The turn to stop.
    pub turn_id: String,
}

/// Params naming only a thread (`thread/backgroundTerminals/clean`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadIdParams {
    /// The thread.
    pub thread_id: String,
}

/// An approval answer: `{"decision": …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalResponse {
    /// `"accept"`, `"acceptForSession"`, `"decline"`, `"cancel"` or one of the offered object decisions.
    pub decision: Value,
}

// ---------------------------------------------------------------------------
// Codex → Deputy.

/// Result of `thread/start` and `thread/resume`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResponse {
    /// The thread started or resumed.
    pub thread: Thread,
    /// The model the thread runs, if said.
    #[serde(default)]
    pub model: Option<String>,
    /// The thread's working directory, if said.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// `"untrusted" | "on-request" | "never" | {"granular": …}`.
    #[serde(default)]
    pub approval_policy: Value,
    /// `{"type": "readOnly" | "workspaceWrite" | "dangerFullAccess" | "externalSandbox", …}`.
    #[serde(default)]
    pub sandbox: Value,
}

/// A Codex thread (conversation), as its responses describe it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thread {
    /// The thread's id: Deputy's session id.
    pub id: String,
    /// Its working directory, if said.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Its model, if said.
    #[serde(default)]
    pub model: Option<String>,
    /// The thread it was forked from, if any.
    #[serde(default)]
    pub forked_from_id: Option<String>,
    /// Filled on resume (the loaded history).
    #[serde(default)]
    pub turns: Vec<Value>,
}

/// Result of `turn/start`; also `turn/started`'s and `turn/completed`'s params.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnHolder {
    /// The turn.
    pub turn: Turn,
}

/// A Codex turn.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    /// The turn's id.
    pub id: String,
    /// Where the turn is.
    pub status: TurnStatus,
    /// Set when the turn failed.
    #[serde(default)]
    pub error: Option<TurnError>,
}

/// Where a Codex turn is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TurnStatus {
    /// It ended normally.
    Completed,
    /// It was interrupted.
    Interrupted,
    /// It failed (`error` says why).
    Failed,
    /// It is running.
    InProgress,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

/// Why a turn or a model call failed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnError {
    /// What failed; empty when absent.
    #[serde(default)]
    pub message: String,
    /// More detail, if Codex gives any.
    #[serde(default)]
    pub additional_details: Option<String>,
}

/// `item/started` and `item/completed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemNotification {
    /// The item.
    pub item: ThreadItem,
    /// The turn it belongs to.
    pub turn_id: String,
}

/// The items Deputy maps; the others decode as [`ThreadItem::Other`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ThreadItem {
    /// A command run by the agent.
    #[serde(rename_all = "camelCase")]
    CommandExecution {
        /// The item's id (Deputy's `call_id`).
        id: String,
        /// The argv, joined and POSIX-quoted (`/bin/bash -lc 'echo hi'`).
        command: String,
        /// The directory it runs in.
        cwd: PathBuf,
        /// Set once the command runs; `null` while it waits for approval.
        #[serde(default)]
        process_id: Option<String>,
        /// Where it is (running, completed, declined, …).
        status: ItemStatus,
        /// stdout and stderr as read, once it ended.
        #[serde(default)]
        aggregated_output: Option<String>,
        /// The exit code, once it ended.
        #[serde(default)]
        exit_code: Option<i64>,
        /// How long it ran in milliseconds, once it ended.
        #[serde(default)]
        duration_ms: Option<u64>,
    },
    /// A patch: changes to one or more files.
    #[serde(rename_all = "camelCase")]
    FileChange {
        /// The item's id (Deputy's `call_id`).
        id: String,
        /// The changes, one per file.
        changes: Vec<FileUpdateChange>,
        /// Where it is (in progress, completed, declined, …).
        status: ItemStatus,
    },
    /// A complete agent message.
    #[serde(rename_all = "camelCase")]
    AgentMessage {
        /// The item's id.
        id: String,
        /// The message's whole text.
        text: String,
    },
    /// Reasoning: a summary, the raw text, or both.
    #[serde(rename_all = "camelCase")]
    Reasoning {
        /// The item's id.
        id: String,
        /// The summary's parts.
        #[serde(default)]
        summary: Vec<String>,
        /// The raw reasoning's parts.
        #[serde(default)]
        content: Vec<String>,
    },
    /// An item type Deputy does not map (web search, MCP tool call, …).
    #[serde(other)]
    Other,
}

/// Where a Codex item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ItemStatus {
    /// Running (or waiting for approval).
    InProgress,
    /// Ended successfully.
    Completed,
    /// Ended with a failure.
    Failed,
    /// Not run: the approval was declined.
    Declined,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

/// One file of a `fileChange` item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FileUpdateChange {
    /// Absolute.
    pub path: String,
    /// Added, deleted, or updated (and maybe moved).
    pub kind: PatchChangeKind,
    /// A new file's content, a deleted file's content, or an update's
    /// unified diff hunks.
    pub diff: String,
}

/// What a file change does to its file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PatchChangeKind {
    /// A new file.
    Add,
    /// The file is removed.
    Delete,
    /// The file is edited.
    Update {
        /// Where the file moves to; `None`: it stays.
        #[serde(default)]
        move_path: Option<PathBuf>,
    },
}

/// `item/agentMessage/delta`, `item/reasoning/*Delta`, `item/commandExecution/outputDelta`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaNotification {
    /// The turn it belongs to.
    pub turn_id: String,
    /// The item the delta belongs to.
    pub item_id: String,
    /// The next piece of text, to append to the ones before.
    pub delta: String,
}

/// Params of `thread/tokenUsage/updated`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageNotification {
    /// The turn whose model call it was.
    pub turn_id: String,
    /// The usage.
    pub token_usage: ThreadTokenUsage,
}

/// A thread's token usage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadTokenUsage {
    /// Summed over the thread so far.
    pub total: TokenUsageBreakdown,
    /// Of the last model call.
    pub last: TokenUsageBreakdown,
    /// The model's context window in tokens, if known.
    #[serde(default)]
    pub model_context_window: Option<u64>,
}

/// Token counts; 0 when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenUsageBreakdown {
    /// All tokens counted.
    pub total_tokens: u64,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// The part of the prompt served from the model's cache.
    pub cached_input_tokens: u64,
    /// Tokens generated, reasoning included.
    pub output_tokens: u64,
    /// The part of the output spent on reasoning.
    pub reasoning_output_tokens: u64,
}

/// Params of `error`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorNotification {
    /// What failed.
    pub error: TurnError,
    /// True when Codex retries (the turn goes on).
    #[serde(default)]
    pub will_retry: bool,
    /// The turn it happened in, if any.
    #[serde(default)]
    pub turn_id: Option<String>,
}

/// `warning`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WarningNotification {
    /// The warning's text.
    pub message: String,
}

/// `configWarning` and `deprecationNotice`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SummaryNotification {
    /// A one-line summary.
    pub summary: String,
    /// More detail, if any.
    #[serde(default)]
    pub details: Option<String>,
}

/// Params of `serverRequest/resolved`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRequestResolved {
    /// The id of the server request that no longer needs an answer.
    pub request_id: RequestId,
}

/// `item/commandExecution/requestApproval` params.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandApprovalParams {
    /// `"command"`, `"humanCommand"`, or `"writeStdin"` (input for a running terminal).
    #[serde(default)]
    pub kind: Option<String>,
    /// The turn asking.
    pub turn_id: String,
    /// The command item this approval is for.
    pub item_id: String,
    /// Set when one item needs several approvals.
    #[serde(default)]
    pub approval_id: Option<String>,
    /// Why Codex asks, if it says.
    #[serde(default)]
    pub reason: Option<String>,
    /// The command (joined and quoted), if it says.
    #[serde(default)]
    pub command: Option<String>,
    /// The directory it would run in, if it says.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Set when the approval is for network access: `{host, protocol}`.
    #[serde(default)]
    pub network_approval_context: Option<Value>,
    /// The decisions Codex offers (e.g. `["accept", {"acceptWithExecpolicyAmendment": …}, "cancel"]`).
    #[serde(default)]
    pub available_decisions: Option<Vec<Value>>,
}

/// `item/fileChange/requestApproval` params (the changes are in the item's `item/started`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChangeApprovalParams {
    /// The turn asking.
    pub turn_id: String,
    /// The `fileChange` item this approval is for.
    pub item_id: String,
    /// Why Codex asks, if it says.
    #[serde(default)]
    pub reason: Option<String>,
    /// A directory the agent asks to be allowed to write, if any.
    #[serde(default)]
    pub grant_root: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_without_jsonrpc_decode_by_their_members() {
        let r = Incoming::parse(r#"{"id":1,"result":{"userAgent":"x"}}"#).unwrap();
        assert_eq!(r, Incoming::Response { id: 1.into(), result: Ok(json!({"userAgent": "x"})) });
        let q =
            Incoming::parse(r#"{"method":"item/fileChange/requestApproval","id":0,"params":{}}"#).unwrap();
        assert!(matches!(q, Incoming::Request { id: RequestId::Integer(0), .. }));
        let n = Incoming::parse(r#"{"method":"turn/started","params":{},"emittedAtMs":1}"#).unwrap();
        assert!(matches!(n, Incoming::Notification { .. }));
        let e = Incoming::parse(r#"{"id":"a","error":{"code":-32600,"message":"bad"}}"#).unwrap();
        assert_eq!(
            e,
            Incoming::Response {
                id: "a".into(),
                result: Err(RpcError { code: -32600, message: "bad".into() })
            }
        );
        // A jsonrpc member is tolerated.
        assert!(Incoming::parse(r#"{"jsonrpc":"2.0","method":"x"}"#).is_ok());
    }

    #[test]
    fn malformed_lines_are_errors_naming_what_is_wrong() {
        for (line, why) in [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"id":1.5,"result":{}}"#, "neither an integer nor a string"),
            (r#"{"id":1}"#, "without result or error"),
            (r#"{"method":3}"#, "not a string"),
            (r#"{"params":{}}"#, "neither a request"),
        ] {
            let e = Incoming::parse(line).unwrap_err();
            assert!(e.message.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn outgoing_lines_have_no_jsonrpc_member() {
        let l = request(
            2,
            methods::THREAD_START,
            ThreadStartParams { cwd: "/w".into(), approval_policy: None, sandbox: None },
        );
        assert_eq!(l, r#"{"id":2,"method":"thread/start","params":{"cwd":"/w"}}"#);
        assert_eq!(notification(methods::INITIALIZED), r#"{"method":"initialized"}"#);
        assert_eq!(
            response(&0.into(), ApprovalResponse { decision: json!("accept") }),
            r#"{"id":0,"result":{"decision":"accept"}}"#
        );
        let input = UserInput::Text { text: "hi".into(), text_elements: vec![] };
        assert_eq!(
            serde_json::to_value(input).unwrap(),
            json!({"type": "text", "text": "hi", "text_elements": []})
        );
    }
}
