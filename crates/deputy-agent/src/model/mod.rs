//! Brains: what decides a turn's actions.
//!
//! The turn engine calls a [`Model`] in a loop, the way a chat-completions
//! client calls an LLM: it hands over a [`Prompt`] (the conversation so far),
//! consumes the [`ModelStream`] of [`ModelEvent`]s (message and reasoning
//! deltas, complete messages, tool calls, token usage), runs the tool calls
//! the response asked for (approvals first), appends their results to the
//! history, and calls the model again — until a response asks for no tool.
//! Dropping the stream cancels the call mid-stream (that is how an interrupt
//! reaches a model), so an implementation must not need cleanup beyond `Drop`.
//!
//! An OpenAI-compatible streaming backend fits as is: map SSE chunks to
//! [`ModelEvent::MessageDelta`]/[`ModelEvent::ReasoningDelta`], the assembled
//! message to [`ModelEvent::Message`], each finished function call to
//! [`ModelEvent::ToolCall`] via [`ToolCall::from_function`], the `usage` chunk
//! to [`ModelEvent::Usage`], and transport failures to a [`ModelError`]
//! (`retryable` ones are retried by the engine with a `stream_error` event).
//!
//! Built in: [`shell::ShellBrain`] (deterministic, the default),
//! [`script::ScriptBrain`] (plays a scenario file, for tests and benchmarks)
//! and [`openai::OpenAiModel`] (`openai:MODEL`: any OpenAI-compatible Chat
//! Completions endpoint, that very mapping).

pub mod openai;
pub mod script;
pub mod shell;

use std::pin::Pin;
use std::time::Duration;

use deputy_protocol::{RolloutItem, TokenUsage};
use futures::Stream;
use serde_json::{Value, json};

/// What a model call sees.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The turn's id (the id of the `user_input` submission).
    pub turn_id: String,
    /// Index of the turn within this process, from 0.
    pub turn_index: u64,
    /// The conversation so far, this turn's input and tool results included:
    /// user inputs, agent messages, reasoning, tool calls and tool results
    /// (plus bookkeeping items a model may ignore: approvals, token counts,
    /// turn ends).
    pub history: Vec<RolloutItem>,
}

impl Prompt {
    /// The text of the latest user input.
    pub fn last_user_text(&self) -> String {
        self.history
            .iter()
            .rev()
            .find_map(|i| match i {
                RolloutItem::UserInput { items, .. } => Some(
                    items
                        .iter()
                        .map(|it| match it {
                            deputy_protocol::InputItem::Text { text } => text.as_str(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Whether a tool result follows the latest user input (this is a
    /// follow-up call within the turn).
    pub fn has_tool_results_this_turn(&self) -> bool {
        for item in self.history.iter().rev() {
            match item {
                RolloutItem::ToolResult { .. } => return true,
                RolloutItem::UserInput { .. } => return false,
                _ => {}
            }
        }
        false
    }
}

/// A tool the model asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// `shell {"command": [argv…]}`: run a command.
    Shell {
        /// The argv to run.
        command: Vec<String>,
        /// Why the model wants it run, shown in the approval.
        reason: Option<String>,
    },
    /// `apply_patch {"patch": "*** Begin Patch…"}`: apply a patch.
    ApplyPatch {
        /// The patch text, in the `*** Begin Patch` format.
        patch: String,
    },
    /// `n` approval round trips for a harmless argv, `in_flight` outstanding
    /// at a time; nothing runs (the script brain's `ask_approval_only` step,
    /// for benchmarks).
    ApprovalProbe {
        /// How many round trips.
        n: u64,
        /// How many may be outstanding at once.
        in_flight: u64,
    },
    /// A call the engine cannot run (unknown tool, bad arguments); it answers
    /// the model with `error`.
    Invalid {
        /// The tool name the model gave.
        name: String,
        /// The arguments the model gave.
        arguments: Value,
        /// What is wrong with the call, as the model is told.
        error: String,
    },
}

/// One tool call of a model response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The model's id for the call, echoed in the result it is given.
    pub call_id: String,
    /// The tool and its arguments.
    pub tool: Tool,
}

impl ToolCall {
    /// From an LLM function call: `name` and its JSON `arguments` text.
    pub fn from_function(call_id: String, name: &str, arguments: &str) -> ToolCall {
        let parsed: Result<Value, _> = serde_json::from_str(arguments);
        let invalid =
            |error: String, arguments: Value| Tool::Invalid { name: name.to_owned(), arguments, error };
        let tool = match (name, parsed) {
            (_, Err(e)) => {
                invalid(format!("arguments are not JSON: {e}"), Value::String(arguments.to_owned()))
            }
            ("shell", Ok(v)) => {
                match serde_json::from_value::<Vec<String>>(v.get("command").cloned().unwrap_or(Value::Null))
                {
                    Ok(command) if !command.is_empty() => Tool::Shell {
                        command,
                        reason: v.get("reason").and_then(Value::as_str).map(str::to_owned),
                    },
                    _ => invalid("`command` must be a non-empty array of strings".into(), v),
                }
            }
            ("apply_patch", Ok(v)) => match v.get("patch").and_then(Value::as_str) {
                Some(p) => Tool::ApplyPatch { patch: p.to_owned() },
                None => invalid("`patch` must be a string".into(), v),
            },
            (other, Ok(v)) => invalid(format!("unknown tool `{other}`"), v),
        };
        ToolCall { call_id, tool }
    }

    /// The tool's name, as recorded in the rollout.
    pub fn name(&self) -> &str {
        match &self.tool {
            Tool::Shell { .. } => "shell",
            Tool::ApplyPatch { .. } => "apply_patch",
            Tool::ApprovalProbe { .. } => "approval_probe",
            Tool::Invalid { name, .. } => name,
        }
    }

    /// The tool's arguments, as recorded in the rollout.
    pub fn arguments(&self) -> Value {
        match &self.tool {
            Tool::Shell { command, reason: None } => json!({ "command": command }),
            Tool::Shell { command, reason: Some(r) } => json!({ "command": command, "reason": r }),
            Tool::ApplyPatch { patch } => json!({ "patch": patch }),
            Tool::ApprovalProbe { n, in_flight } => json!({ "n": n, "in_flight": in_flight }),
            Tool::Invalid { arguments, .. } => arguments.clone(),
        }
    }
}

/// A fault a scenario asks the agent to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Write `stderr`, flush what was sent (best effort, ≤ 1 s), exit with `code`.
    Exit {
        /// The exit status.
        code: i32,
        /// Written to the agent's stderr before exiting.
        stderr: Option<String>,
    },
    /// Ignore SIGTERM, start a `sleep 3600` grandchild in the agent's process
    /// group, and never answer or exit again.
    Hang,
}

/// What a model call produces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelEvent {
    /// A piece of the answer (→ `agent_message_delta`).
    MessageDelta(String),
    /// A complete answer (→ `agent_message`, recorded).
    Message(String),
    /// A piece of reasoning (→ `agent_reasoning_delta`).
    ReasoningDelta(String),
    /// A complete piece of reasoning (→ `agent_reasoning`, recorded).
    Reasoning(String),
    /// A tool call; run after the stream ends.
    ToolCall(ToolCall),
    /// Token usage of this call (→ `token_count`).
    Usage(TokenUsage),
    /// A simulated fault (script brain only).
    Fault(Fault),
}

/// A failed model call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// What went wrong, for the `error` or `stream_error` event.
    pub message: String,
    /// Worth retrying (the engine retries up to [`MAX_RETRIES`] times).
    pub retryable: bool,
    /// How long to wait before retrying (e.g. a `Retry-After`); `None`:
    /// [`Model::retry_delay`].
    pub retry_after: Option<Duration>,
}

/// How many times the engine retries a retryable model error per call.
pub const MAX_RETRIES: u32 = 3;

impl ModelError {
    /// An error not worth retrying.
    pub fn fatal(message: impl Into<String>) -> Self {
        ModelError { message: message.into(), retryable: false, retry_after: None }
    }

    /// An error worth retrying, after the model's default delay.
    pub fn retryable(message: impl Into<String>) -> Self {
        ModelError { message: message.into(), retryable: true, retry_after: None }
    }
}

/// The stream of one model call.
pub type ModelStream<'a> = Pin<Box<dyn Stream<Item = Result<ModelEvent, ModelError>> + Send + 'a>>;

/// A brain. Implementations are shared by the session (`Arc<dyn Model>`).
pub trait Model: Send + Sync {
    /// The name reported in `session_configured`.
    fn name(&self) -> &str;

    /// The context window in tokens, if known (reported in `task_started` and
    /// token counts).
    fn context_window(&self) -> Option<u64> {
        None
    }

    /// How long to wait before retry number `attempt` (from 1) of a call
    /// that failed with a retryable error without a `retry_after`.
    fn retry_delay(&self, attempt: u32) -> Duration {
        let _ = attempt;
        Duration::ZERO
    }

    /// Starts one call. Dropping the stream cancels it.
    fn stream<'a>(&'a self, prompt: &'a Prompt) -> ModelStream<'a>;
}

/// A rough token estimate: one token per 4 bytes, rounded up.
pub fn estimate_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_calls_map_to_tools() {
        let c = ToolCall::from_function("c1".into(), "shell", r#"{"command":["ls","-l"]}"#);
        assert_eq!(c.tool, Tool::Shell { command: vec!["ls".into(), "-l".into()], reason: None });
        assert_eq!(c.arguments(), json!({"command": ["ls", "-l"]}));
        let c = ToolCall::from_function("c2".into(), "apply_patch", r#"{"patch":"x"}"#);
        assert_eq!(c.tool, Tool::ApplyPatch { patch: "x".into() });
        let c = ToolCall::from_function("c3".into(), "shell", r#"{"command":"ls"}"#);
        assert!(matches!(c.tool, Tool::Invalid { .. }));
        let c = ToolCall::from_function("c4".into(), "browse", "{}");
        assert!(matches!(&c.tool, Tool::Invalid { error, .. } if error.contains("unknown tool")));
        let c = ToolCall::from_function("c5".into(), "shell", "{");
        assert!(matches!(&c.tool, Tool::Invalid { error, .. } if error.contains("not JSON")));
    }
}
