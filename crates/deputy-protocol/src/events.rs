//! What the agent tells the host: the `event` notification.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::{ApprovalPolicy, FileChange};

mod decode;

/// Params of the `event` notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
pub struct Event {
    /// The id of the submission that caused this event (`""` for events that
    /// belong to no submission, such as `session_configured`).
    pub id: String,
    // Decoded by `decode::event_msg`: the streaming deltas skip serde's
    // buffering of internally tagged enums. (Not a doc comment: it would
    // enter the published schema.)
    #[serde(deserialize_with = "decode::event_msg")]
    pub msg: EventMsg,
}

/// Token counts, as reported by the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct TokenUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub reasoning_output_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl TokenUsage {
    /// The sum of two usages, field by field.
    pub fn add(&self, other: &TokenUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens + other.input_tokens,
            cached_input_tokens: self.cached_input_tokens + other.cached_input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            reasoning_output_tokens: self.reasoning_output_tokens + other.reasoning_output_tokens,
            total_tokens: self.total_tokens + other.total_tokens,
        }
    }
}

/// The session's token usage: the running total, the last model call's, and
/// the model's context window when known. Restored from the rollout on resume
/// so the host can decide whether to compact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct TokenUsageInfo {
    pub total_token_usage: TokenUsage,
    pub last_token_usage: TokenUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub model_context_window: Option<u64>,
}

/// Why a turn ended without completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum TurnAbortReason {
    /// An `interrupt` op, or an approval answered `abort`.
    Interrupted,
    /// A newer turn replaced this one.
    Replaced,
    /// A `shutdown` op, or the host closed the pipe.
    Shutdown,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum ExecOutputStream {
    Stdout,
    Stderr,
}

/// What happened. Tagged by `"type"`.
///
/// Hosts must ignore event types they do not know (later versions add some);
/// in Rust they decode as [`EventMsg::Unknown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventMsg {
    /// The session is ready (answer to `session/start`, emitted once).
    SessionConfigured {
        session_id: String,
        /// The model (brain) name in use.
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        rollout_path: Option<PathBuf>,
        /// How many items of history were loaded (0 for a new session).
        history_len: u64,
        /// The last token usage found in the loaded history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        token_usage: Option<TokenUsageInfo>,
        cwd: PathBuf,
        approval_policy: ApprovalPolicy,
        /// Set when this session was forked from another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        forked_from: Option<String>,
    },
    /// A turn began.
    TaskStarted {
        turn_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        model_context_window: Option<u64>,
    },
    /// The turn finished normally.
    TaskComplete {
        turn_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        last_agent_message: Option<String>,
    },
    /// The turn ended early.
    TurnAborted { turn_id: String, reason: TurnAbortReason },
    /// A complete agent message (after its deltas, if any were sent).
    AgentMessage { message: String },
    /// A piece of an agent message as it streams.
    AgentMessageDelta { delta: String },
    /// A complete piece of reasoning.
    AgentReasoning { text: String },
    /// A piece of reasoning as it streams.
    AgentReasoningDelta { delta: String },
    /// Token usage after a model call.
    TokenCount {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        info: Option<TokenUsageInfo>,
    },
    /// A command is about to run (after approval).
    ExecCommandBegin {
        call_id: String,
        turn_id: String,
        command: Vec<String>,
        cwd: PathBuf,
        /// True when the command runs **outside** the sandbox: the session's
        /// `sandbox` is `off`, the sandbox could not be enforced (best
        /// effort), or an escalation was approved. Absent (false): it runs in
        /// the session's sandbox.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        #[ts(optional, as = "Option<bool>")]
        unsandboxed: bool,
    },
    /// Output of a running command. Bytes that are not valid UTF-8 are
    /// replaced with U+FFFD.
    ExecCommandOutputDelta { call_id: String, stream: ExecOutputStream, chunk: String },
    /// A command finished (or was killed or timed out).
    ExecCommandEnd {
        call_id: String,
        turn_id: String,
        /// The exit code; 128 + N when killed by signal N; -1 if it never ran.
        exit_code: i32,
        duration_ms: u64,
        /// stdout and stderr interleaved as read, capped: the first and last
        /// 64 KiB are kept and the middle replaced by a marker.
        output: String,
        /// True when `output` was cut.
        #[serde(default)]
        truncated: bool,
        /// The timeout killed it (`exit_code` is then 137: SIGKILL).
        #[serde(default)]
        timed_out: bool,
        /// The turn was aborted (interrupt, `abort` answer, replace, shutdown,
        /// end of input, SIGTERM) while it ran, so the agent killed it;
        /// `exit_code` is then 137 (128 + SIGKILL) and `output` is what it
        /// wrote until then. Sent before the turn's `turn_aborted`.
        #[serde(default)]
        interrupted: bool,
    },
    /// A patch is about to be applied (after approval).
    PatchApplyBegin {
        call_id: String,
        turn_id: String,
        /// True when no approval was asked (policy or session grant).
        auto_approved: bool,
        changes: BTreeMap<String, FileChange>,
    },
    /// A patch was applied (all of it) or not at all. Every
    /// `patch_apply_begin` has exactly one, also when the turn is aborted.
    PatchApplyEnd {
        call_id: String,
        turn_id: String,
        success: bool,
        #[serde(default)]
        stdout: String,
        #[serde(default)]
        stderr: String,
    },
    /// Something failed; the turn usually ends after it.
    Error { message: String },
    /// A model stream failed and is being retried.
    StreamError { message: String },
    /// Something the user should know that is not an error.
    Warning { message: String },
    /// Progress or status text, for logs.
    BackgroundEvent { message: String },
    /// The agent has shut down and is about to exit 0; the last event.
    ShutdownComplete,
    /// An event type this version does not know. Never sent.
    #[serde(other)]
    #[schemars(skip)]
    #[ts(skip)]
    Unknown,
}

impl EventMsg {
    /// The wire name of this event's type.
    pub fn kind(&self) -> &'static str {
        match self {
            EventMsg::SessionConfigured { .. } => "session_configured",
            EventMsg::TaskStarted { .. } => "task_started",
            EventMsg::TaskComplete { .. } => "task_complete",
            EventMsg::TurnAborted { .. } => "turn_aborted",
            EventMsg::AgentMessage { .. } => "agent_message",
            EventMsg::AgentMessageDelta { .. } => "agent_message_delta",
            EventMsg::AgentReasoning { .. } => "agent_reasoning",
            EventMsg::AgentReasoningDelta { .. } => "agent_reasoning_delta",
            EventMsg::TokenCount { .. } => "token_count",
            EventMsg::ExecCommandBegin { .. } => "exec_command_begin",
            EventMsg::ExecCommandOutputDelta { .. } => "exec_command_output_delta",
            EventMsg::ExecCommandEnd { .. } => "exec_command_end",
            EventMsg::PatchApplyBegin { .. } => "patch_apply_begin",
            EventMsg::PatchApplyEnd { .. } => "patch_apply_end",
            EventMsg::Error { .. } => "error",
            EventMsg::StreamError { .. } => "stream_error",
            EventMsg::Warning { .. } => "warning",
            EventMsg::BackgroundEvent { .. } => "background_event",
            EventMsg::ShutdownComplete => "shutdown_complete",
            EventMsg::Unknown => "unknown",
        }
    }

    /// True for the events that end a turn (`task_complete`, `turn_aborted`).
    pub fn ends_turn(&self) -> bool {
        matches!(self, EventMsg::TaskComplete { .. } | EventMsg::TurnAborted { .. })
    }
}
