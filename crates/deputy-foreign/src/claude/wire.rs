//! Claude Code's `-p --input-format stream-json --output-format
//! stream-json` messages, as Claude Code 2.1.332 writes and reads them
//! (recorded in PEERS.md and `tests/fixtures/claude/`; the shapes follow
//! the Claude Agent SDK's `SDKMessage` / control-protocol types).
//!
//! No JSON-RPC: one JSON object per line, discriminated by its top-level
//! `type`. The host's requests to the CLI and the CLI's requests to the host
//! are both `control_request {request_id, request: {subtype, …}}`, answered
//! by `control_response {response: {subtype: "success" | "error",
//! request_id, …}}`. Incoming lines decode leniently (unknown fields and
//! types are ignored).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::DecodeError;

/// The flags that make `claude` speak this protocol on stdio. The last is
/// required (permission prompts come as `can_use_tool` requests) and is not
/// listed in `claude --help`.
pub const PROTOCOL_ARGS: [&str; 8] = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool",
    "stdio",
];

/// One line from the CLI.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// The answer to one of our control requests.
    ControlResponse {
        /// The id of our request.
        request_id: String,
        /// Its `response` on success, or the error text.
        result: Result<Value, String>,
    },
    /// A request of the CLI (`can_use_tool`, hooks, MCP…).
    ControlRequest {
        /// The id to answer with.
        request_id: String,
        /// The request object (`{subtype, …}`).
        request: Value,
    },
    /// The CLI withdrew one of its requests (an interrupt came first).
    ControlCancelRequest {
        /// The id of the withdrawn request.
        request_id: String,
    },
    /// A `system` line: `init` (the session's settings), `status`, task progress, …
    System(System),
    /// An `assistant` line: one message of the model (text, thinking, tool calls).
    Assistant(Box<AssistantLine>),
    /// A `user` line: tool results fed back to the model (or an echoed prompt).
    User(Box<UserLine>),
    /// A `result` line: the turn ended.
    Result(Box<ResultLine>),
    /// A partial message (`--include-partial-messages`): an Anthropic
    /// Messages stream event.
    StreamEvent {
        /// The stream event (`content_block_delta`, …).
        event: Value,
        /// Set for the events of a sub-agent (the `Task` tool).
        parent_tool_use_id: Option<String>,
    },
    /// Anything else (`tool_progress`, …), with the `tool_use_id` it names, if any.
    Other {
        /// The line's `type`.
        kind: String,
        /// The tool call the line names, if any.
        tool_use_id: Option<String>,
    },
}

/// A `system` line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct System {
    /// `init`, `status`, `task_started`, …; empty when absent.
    #[serde(default)]
    pub subtype: String,
    /// The session's id, if given.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The model in use, if given.
    #[serde(default)]
    pub model: Option<String>,
    /// The working directory, if given.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The permission mode (`default`, `acceptEdits`, …), if given.
    #[serde(default, rename = "permissionMode")]
    pub permission_mode: Option<String>,
    /// `task_started` and friends name the tool call they belong to.
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

/// An `assistant` line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssistantLine {
    /// The model's message.
    pub message: AssistantMessage,
    /// Set for the messages of a sub-agent (the `Task` tool).
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// When it was written, if given.
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// One message of the model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssistantMessage {
    /// The Anthropic message id (the same across the lines of one message).
    #[serde(default)]
    pub id: Option<String>,
    /// The message's content blocks, in order.
    #[serde(default)]
    pub content: Vec<ContentBlock>,
}

/// One content block of a message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text for the user.
    Text {
        /// The text.
        text: String,
    },
    /// Extended thinking.
    Thinking {
        /// The thinking text; empty when redacted.
        #[serde(default)]
        thinking: String,
    },
    /// A tool call.
    ToolUse {
        /// The call's id; its result and approval name it.
        id: String,
        /// The tool's name (`Bash`, `Edit`, `Write`, …).
        name: String,
        /// The tool's input, as the model gave it.
        #[serde(default)]
        input: Value,
    },
    /// A tool's result, as given to the model.
    ToolResult {
        /// The tool call it is the result of.
        tool_use_id: String,
        /// A string, or content blocks (`[{"type": "text", "text": …}]`).
        #[serde(default)]
        content: Value,
        /// True when the tool failed or was denied.
        #[serde(default)]
        is_error: Option<bool>,
    },
    /// A block type Deputy does not map.
    #[serde(other)]
    Other,
}

/// A `user` line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserLine {
    /// The message.
    pub message: UserMessage,
    /// Set for the messages of a sub-agent (the `Task` tool).
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    /// When it was written, if given.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The tool's own result: for Bash `{stdout, stderr, interrupted, …}`;
    /// a string for errors and rejections.
    #[serde(default)]
    pub tool_use_result: Value,
    /// Per tool call: `{id, permission_decision?, non_execution_kind?}`.
    #[serde(default)]
    pub tool_result_meta: Vec<Value>,
}

/// The content of a `user` line's message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserMessage {
    /// A string, or content blocks.
    #[serde(default)]
    pub content: Value,
}

impl UserMessage {
    /// The tool results among the content blocks.
    pub fn tool_results(&self) -> Vec<ContentBlock> {
        match &self.content {
            Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| serde_json::from_value::<ContentBlock>(b.clone()).ok())
                .filter(|b| matches!(b, ContentBlock::ToolResult { .. }))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A `result` line: the end of a turn.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResultLine {
    /// `success`, `error_during_execution`, `error_max_turns`, …
    #[serde(default)]
    pub subtype: String,
    /// True when the turn failed.
    #[serde(default)]
    pub is_error: bool,
    /// The final text (success), or an error text.
    #[serde(default)]
    pub result: Option<String>,
    /// `completed`, `aborted_tools`, …
    #[serde(default)]
    pub terminal_reason: Option<String>,
    /// Error texts, if the turn failed.
    #[serde(default)]
    pub errors: Vec<String>,
    /// The turn's token usage, if given.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Per model: `{contextWindow, …}`.
    #[serde(default, rename = "modelUsage")]
    pub model_usage: Value,
    /// The session's id, if given.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// Anthropic's usage object (the turn's, in a `result`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Prompt tokens not read from or written to the cache.
    pub input_tokens: u64,
    /// Prompt tokens written to the cache.
    pub cache_creation_input_tokens: u64,
    /// Prompt tokens read from the cache.
    pub cache_read_input_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
    /// A breakdown of `output_tokens`, if given.
    pub output_tokens_details: Option<OutputTokensDetails>,
}

/// A breakdown of the output tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct OutputTokensDetails {
    /// The part spent on thinking.
    pub thinking_tokens: u64,
}

/// `control_request` `can_use_tool`: may this tool run?
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CanUseTool {
    /// The tool's name (`Bash`, `Edit`, `WebFetch`, …).
    pub tool_name: String,
    /// The tool's input, as the model gave it.
    #[serde(default)]
    pub input: Value,
    /// The tool call this is for, if given.
    #[serde(default)]
    pub tool_use_id: Option<String>,
    /// A description of the call, if given.
    #[serde(default)]
    pub description: Option<String>,
    /// Why Claude Code asks (e.g. `This command requires approval`), if given.
    #[serde(default)]
    pub decision_reason: Option<String>,
    /// The path that needs the permission (e.g. a file outside the workspace), if given.
    #[serde(default)]
    pub blocked_path: Option<String>,
}

impl Incoming {
    /// Decodes a line; a line without a string `type` or of a malformed known type is an error.
    pub fn parse(line: &str) -> Result<Incoming, DecodeError> {
        let v: Value =
            serde_json::from_str(line).map_err(|e| DecodeError::new(line, format!("not JSON: {e}")))?;
        let Some(kind) = v.get("type").and_then(Value::as_str).map(str::to_owned) else {
            return Err(DecodeError::new(line, "a line without a string `type`"));
        };
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let shape = |e: serde_json::Error| DecodeError::new(line, format!("a malformed `{kind}` line: {e}"));
        Ok(match kind.as_str() {
            "control_response" => {
                let r = v
                    .get("response")
                    .ok_or_else(|| DecodeError::new(line, "a control_response without `response`"))?;
                let request_id = text(r, "request_id")
                    .ok_or_else(|| DecodeError::new(line, "a control_response without `request_id`"))?;
                let result = match r.get("subtype").and_then(Value::as_str) {
                    Some("success") => Ok(r.get("response").cloned().unwrap_or(Value::Null)),
                    _ => Err(text(r, "error").unwrap_or_else(|| "unknown error".into())),
                };
                Incoming::ControlResponse { request_id, result }
            }
            "control_request" => Incoming::ControlRequest {
                request_id: text(&v, "request_id")
                    .ok_or_else(|| DecodeError::new(line, "a control_request without `request_id`"))?,
                request: v.get("request").cloned().unwrap_or(Value::Null),
            },
            "control_cancel_request" => Incoming::ControlCancelRequest {
                request_id: text(&v, "request_id")
                    .ok_or_else(|| DecodeError::new(line, "a control_cancel_request without `request_id`"))?,
            },
            "system" => Incoming::System(serde_json::from_value(v).map_err(shape)?),
            "assistant" => Incoming::Assistant(Box::new(serde_json::from_value(v).map_err(shape)?)),
            "user" => Incoming::User(Box::new(serde_json::from_value(v).map_err(shape)?)),
            "result" => Incoming::Result(Box::new(serde_json::from_value(v).map_err(shape)?)),
            "stream_event" => Incoming::StreamEvent {
                parent_tool_use_id: text(&v, "parent_tool_use_id"),
                event: v.get("event").cloned().unwrap_or(Value::Null),
            },
            _ => Incoming::Other { tool_use_id: text(&v, "tool_use_id"), kind },
        })
    }
}

// ---------------------------------------------------------------------------
// Deputy → Claude.

/// A control request line.
pub fn control_request(request_id: &str, request: Value) -> String {
    json!({"type": "control_request", "request_id": request_id, "request": request}).to_string()
}

/// The handshake (`hooks: null`: Deputy registers none).
pub fn initialize(request_id: &str) -> String {
    control_request(request_id, json!({"subtype": "initialize", "hooks": null}))
}

/// Stops the running turn (its tools are killed; a `result` follows).
pub fn interrupt(request_id: &str) -> String {
    control_request(request_id, json!({"subtype": "interrupt"}))
}

/// A user message (starts a turn, or is queued behind the running one).
pub fn user_message(text: &str) -> String {
    json!({
        "type": "user",
        "session_id": "",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": null,
    })
    .to_string()
}

/// A successful answer to a CLI request.
pub fn control_success(request_id: &str, response: Value) -> String {
    json!({"type": "control_response", "response": {"subtype": "success", "request_id": request_id, "response": response}})
        .to_string()
}

/// An error answer to a CLI request.
pub fn control_error(request_id: &str, error: &str) -> String {
    json!({"type": "control_response", "response": {"subtype": "error", "request_id": request_id, "error": error}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_by_their_type() {
        let r = Incoming::parse(
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"r1","response":{"pid":7}}}"#,
        )
        .unwrap();
        assert_eq!(r, Incoming::ControlResponse { request_id: "r1".into(), result: Ok(json!({"pid": 7})) });
        let e = Incoming::parse(
            r#"{"type":"control_response","response":{"subtype":"error","request_id":"r1","error":"no"}}"#,
        )
        .unwrap();
        assert_eq!(e, Incoming::ControlResponse { request_id: "r1".into(), result: Err("no".into()) });
        let c = Incoming::parse(r#"{"type":"control_cancel_request","request_id":"u"}"#).unwrap();
        assert_eq!(c, Incoming::ControlCancelRequest { request_id: "u".into() });
        let o = Incoming::parse(r#"{"type":"tool_progress","tool_use_id":"t1","elapsed_time_seconds":30}"#)
            .unwrap();
        assert_eq!(o, Incoming::Other { kind: "tool_progress".into(), tool_use_id: Some("t1".into()) });
        let a = Incoming::parse(
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t","name":"Bash","input":{}},{"type":"server_tool_use"}]}}"#,
        )
        .unwrap();
        let Incoming::Assistant(a) = a else { panic!() };
        assert_eq!(a.message.content[1], ContentBlock::Other);
    }

    #[test]
    fn malformed_lines_are_errors_naming_what_is_wrong() {
        for (line, why) in [
            ("{", "not JSON"),
            (r#"{"type":1}"#, "without a string `type`"),
            (r#"{"type":"control_request"}"#, "without `request_id`"),
            (r#"{"type":"control_response","response":{}}"#, "without `request_id`"),
            (r#"{"type":"assistant","message":{"content":"x"}}"#, "a malformed `assistant` line"),
        ] {
            let e = Incoming::parse(line).unwrap_err();
            assert!(e.message.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn outgoing_lines_match_the_recorded_ones() {
        assert_eq!(
            initialize("req_1"),
            r#"{"request":{"hooks":null,"subtype":"initialize"},"request_id":"req_1","type":"control_request"}"#
        );
        let u: Value = serde_json::from_str(&user_message("[scenario:bash] please run a command")).unwrap();
        assert_eq!(
            u,
            json!({"type":"user","session_id":"","message":{"role":"user","content":[{"type":"text","text":"[scenario:bash] please run a command"}]},"parent_tool_use_id":null})
        );
        let a: Value =
            serde_json::from_str(&control_success("x", json!({"behavior": "deny", "message": "m"}))).unwrap();
        assert_eq!(
            a["response"],
            json!({"subtype": "success", "request_id": "x", "response": {"behavior": "deny", "message": "m"}})
        );
    }
}
