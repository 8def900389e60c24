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
    /// What happened: an object tagged by `type` (the event table is in
    /// PROTOCOL.md §3, `event`). Unknown types are to be ignored.
    // Decoded by `decode::event_msg`: the streaming deltas skip serde's
    // buffering of internally tagged enums.
    #[serde(deserialize_with = "decode::event_msg")]
    pub msg: EventMsg,
}

/// Token counts, as reported by the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct TokenUsage {
    /// Prompt tokens sent to the model, cached ones included.
    #[serde(default)]
    pub input_tokens: u64,
    /// The part of `input_tokens` the model served from its prompt cache.
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// Tokens the model generated, reasoning included.
    #[serde(default)]
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on reasoning.
    #[serde(default)]
    pub reasoning_output_tokens: u64,
    /// All tokens counted, as the model reports them (usually input plus output).
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
    /// Summed over every model call of the session so far.
    pub total_token_usage: TokenUsage,
    /// Of the most recent model call alone.
    pub last_token_usage: TokenUsage,
    /// The model's context window in tokens; absent when unknown.
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
    /// A `shutdown` op, the host closed the pipe, or the agent got SIGTERM
    /// or SIGHUP.
    Shutdown,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum ExecOutputStream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
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
        /// The session's id (a resumed session keeps the id it had).
        session_id: String,
        /// The model (brain) name in use.
        model: String,
        /// Where the session's rollout is written; absent when it is not persisted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        rollout_path: Option<PathBuf>,
        /// How many items of history were loaded (0 for a new session).
        history_len: u64,
        /// The last token usage found in the loaded history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        token_usage: Option<TokenUsageInfo>,
        /// The session's working directory (absolute).
        cwd: PathBuf,
        /// When the agent asks the host before running a tool.
        approval_policy: ApprovalPolicy,
        /// Set when this session was forked from another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        forked_from: Option<String>,
    },
    /// A turn began.
    TaskStarted {
        /// The new turn's id; its later events carry it.
        turn_id: String,
        /// The model's context window in tokens; absent when unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        model_context_window: Option<u64>,
    },
    /// The turn finished normally.
    TaskComplete {
        /// The turn that finished.
        turn_id: String,
        /// The text of the turn's last agent message; absent when it sent none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        last_agent_message: Option<String>,
    },
    /// The turn ended early.
    TurnAborted {
        /// The turn that ended.
        turn_id: String,
        /// Why it ended.
        reason: TurnAbortReason,
    },
    /// A complete agent message (after its deltas, if any were sent).
    AgentMessage {
        /// The message's whole text.
        message: String,
    },
    /// A piece of an agent message as it streams.
    AgentMessageDelta {
        /// The next piece of text, to append to the ones before.
        delta: String,
    },
    /// A complete piece of reasoning.
    AgentReasoning {
        /// The reasoning's whole text.
        text: String,
    },
    /// A piece of reasoning as it streams.
    AgentReasoningDelta {
        /// The next piece of text, to append to the ones before.
        delta: String,
    },
    /// Token usage after a model call.
    TokenCount {
        /// The usage after this call; absent when the model reported none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        info: Option<TokenUsageInfo>,
    },
    /// A command is about to run (after approval).
    ExecCommandBegin {
        /// The tool call: the same id as in its approval, output deltas and end.
        call_id: String,
        /// The turn the command belongs to.
        turn_id: String,
        /// The argv as run (no shell unless the argv itself is e.g. `sh -c …`).
        command: Vec<String>,
        /// The directory it runs in (absolute).
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
    ExecCommandOutputDelta {
        /// The tool call, as in its `exec_command_begin`.
        call_id: String,
        /// Which stream the chunk was read from.
        stream: ExecOutputStream,
        /// The next piece of output, as read.
        chunk: String,
    },
    /// A command finished (or was killed or timed out).
    ExecCommandEnd {
        /// The tool call, as in its `exec_command_begin`.
        call_id: String,
        /// The turn the command belongs to.
        turn_id: String,
        /// The exit code; 128 + N when killed by signal N; -1 if it never ran.
        exit_code: i32,
        /// How long it ran, in milliseconds.
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
        /// The tool call, as in its `approval/patch` (if one was asked).
        call_id: String,
        /// The turn the patch belongs to.
        turn_id: String,
        /// True when no approval was asked (policy or session grant).
        auto_approved: bool,
        /// The changes by path, capped as in `approval/patch`.
        changes: BTreeMap<String, FileChange>,
    },
    /// A patch was applied (all of it) or not at all. Every
    /// `patch_apply_begin` has exactly one, also when the turn is aborted.
    PatchApplyEnd {
        /// The tool call, as in its `patch_apply_begin`.
        call_id: String,
        /// The turn the patch belongs to.
        turn_id: String,
        /// True when every change was applied; false when none was.
        success: bool,
        /// On success, a summary of the files updated; may be empty.
        #[serde(default)]
        stdout: String,
        /// On failure, why the patch was not applied; may be empty.
        #[serde(default)]
        stderr: String,
    },
    /// Something failed; the turn usually ends after it.
    Error {
        /// What failed, for a person to read.
        message: String,
    },
    /// A model stream failed and is being retried.
    StreamError {
        /// What failed, for a person to read.
        message: String,
    },
    /// Something the user should know that is not an error.
    Warning {
        /// The warning, for a person to read.
        message: String,
    },
    /// Progress or status text, for logs.
    BackgroundEvent {
        /// The status text.
        message: String,
    },
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
