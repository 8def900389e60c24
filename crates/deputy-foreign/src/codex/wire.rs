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
    pub const INITIALIZE: &str = "initialize";
    pub const INITIALIZED: &str = "initialized";
    pub const THREAD_START: &str = "thread/start";
    pub const THREAD_RESUME: &str = "thread/resume";
    pub const TURN_START: &str = "turn/start";
    pub const TURN_INTERRUPT: &str = "turn/interrupt";
    /// Experimental (needs `capabilities.experimentalApi`): kills every
    /// background terminal of the thread (the commands an interrupt left
    /// running).
    pub const BACKGROUND_TERMINALS_CLEAN: &str = "thread/backgroundTerminals/clean";

    pub const THREAD_STARTED: &str = "thread/started";
    pub const TURN_STARTED: &str = "turn/started";
    pub const TURN_COMPLETED: &str = "turn/completed";
    pub const ITEM_STARTED: &str = "item/started";
    pub const ITEM_COMPLETED: &str = "item/completed";
    pub const AGENT_MESSAGE_DELTA: &str = "item/agentMessage/delta";
    pub const REASONING_TEXT_DELTA: &str = "item/reasoning/textDelta";
    pub const REASONING_SUMMARY_DELTA: &str = "item/reasoning/summaryTextDelta";
    pub const COMMAND_OUTPUT_DELTA: &str = "item/commandExecution/outputDelta";
    pub const TOKEN_USAGE_UPDATED: &str = "thread/tokenUsage/updated";
    pub const ERROR: &str = "error";
    pub const WARNING: &str = "warning";
    pub const CONFIG_WARNING: &str = "configWarning";
    pub const DEPRECATION_NOTICE: &str = "deprecationNotice";
    pub const SERVER_REQUEST_RESOLVED: &str = "serverRequest/resolved";

    pub const COMMAND_APPROVAL: &str = "item/commandExecution/requestApproval";
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
        id: RequestId,
        result: Result<Value, RpcError>,
    },
    /// A request of the server (an approval, …): it waits for our answer.
    Request {
        id: RequestId,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RpcError {
    #[serde(default)]
    pub code: i64,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// Also Codex's `originator` header and the start of its user agent.
    pub name: String,
    pub title: Option<String>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    pub client_info: ClientInfo,
    pub capabilities: InitializeCapabilities,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeCapabilities {
    /// Needed for `thread/backgroundTerminals/clean`.
    pub experimental_api: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadStartParams {
    pub cwd: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResumeParams {
    pub thread_id: String,
    pub cwd: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnStartParams {
    pub thread_id: String,
    pub input: Vec<UserInput>,
}

/// One piece of user input (Deputy has text only).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum UserInput {
    Text {
        text: String,
        /// Spans of the text that are mentions etc.; none from Deputy.
        text_elements: Vec<Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnInterruptParams {
    pub thread_id: String,
    pub turn_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadIdParams {
    pub thread_id: String,
}

/// An approval answer: `{"decision": …}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalResponse {
    pub decision: Value,
}

// ---------------------------------------------------------------------------
// Codex → Deputy.

/// Result of `thread/start` and `thread/resume`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadResponse {
    pub thread: Thread,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// `"untrusted" | "on-request" | "never" | {"granular": …}`.
    #[serde(default)]
    pub approval_policy: Value,
    /// `{"type": "readOnly" | "workspaceWrite" | "dangerFullAccess" | "externalSandbox", …}`.
    #[serde(default)]
    pub sandbox: Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thread {
    pub id: String,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub model: Option<String>,
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
    pub turn: Turn,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    pub id: String,
    pub status: TurnStatus,
    #[serde(default)]
    pub error: Option<TurnError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TurnStatus {
    Completed,
    Interrupted,
    Failed,
    InProgress,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub additional_details: Option<String>,
}

/// `item/started` and `item/completed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemNotification {
    pub item: ThreadItem,
    pub turn_id: String,
}

/// The items Deputy maps; the others decode as [`ThreadItem::Other`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ThreadItem {
    #[serde(rename_all = "camelCase")]
    CommandExecution {
        id: String,
        /// The argv, joined and POSIX-quoted (`/bin/bash -lc 'echo hi'`).
        command: String,
        cwd: PathBuf,
        /// Set once the command runs; `null` while it waits for approval.
        #[serde(default)]
        process_id: Option<String>,
        status: ItemStatus,
        #[serde(default)]
        aggregated_output: Option<String>,
        #[serde(default)]
        exit_code: Option<i64>,
        #[serde(default)]
        duration_ms: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    FileChange { id: String, changes: Vec<FileUpdateChange>, status: ItemStatus },
    #[serde(rename_all = "camelCase")]
    AgentMessage { id: String, text: String },
    #[serde(rename_all = "camelCase")]
    Reasoning {
        id: String,
        #[serde(default)]
        summary: Vec<String>,
        #[serde(default)]
        content: Vec<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ItemStatus {
    InProgress,
    Completed,
    Failed,
    Declined,
    #[serde(other)]
    Unknown,
}

/// One file of a `fileChange` item.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FileUpdateChange {
    /// Absolute.
    pub path: String,
    pub kind: PatchChangeKind,
    /// A new file's content, a deleted file's content, or an update's
    /// unified diff hunks.
    pub diff: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PatchChangeKind {
    Add,
    Delete,
    Update {
        #[serde(default)]
        move_path: Option<PathBuf>,
    },
}

/// `item/agentMessage/delta`, `item/reasoning/*Delta`, `item/commandExecution/outputDelta`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaNotification {
    pub turn_id: String,
    pub item_id: String,
    pub delta: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsageNotification {
    pub turn_id: String,
    pub token_usage: ThreadTokenUsage,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadTokenUsage {
    pub total: TokenUsageBreakdown,
    pub last: TokenUsageBreakdown,
    #[serde(default)]
    pub model_context_window: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenUsageBreakdown {
    pub total_tokens: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorNotification {
    pub error: TurnError,
    #[serde(default)]
    pub will_retry: bool,
    #[serde(default)]
    pub turn_id: Option<String>,
}

/// `warning`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WarningNotification {
    pub message: String,
}

/// `configWarning` and `deprecationNotice`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SummaryNotification {
    pub summary: String,
    #[serde(default)]
    pub details: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRequestResolved {
    pub request_id: RequestId,
}

/// `item/commandExecution/requestApproval` params.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandApprovalParams {
    /// `"command"`, `"humanCommand"`, or `"writeStdin"` (input for a running terminal).
    #[serde(default)]
    pub kind: Option<String>,
    pub turn_id: String,
    pub item_id: String,
    /// Set when one item needs several approvals.
    #[serde(default)]
    pub approval_id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
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
    pub turn_id: String,
    pub item_id: String,
    #[serde(default)]
    pub reason: Option<String>,
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
