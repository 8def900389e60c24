//! Histories: how a session starts (`InitialHistory`) and what it persists
//! (`RolloutItem`, one per line of a rollout file).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ts_rs::TS;

use crate::{ApprovalPolicy, InputItem, ReviewDecision, SessionSource, TokenUsageInfo, TurnAbortReason};

/// What the session starts from.
///
/// `{"type":"new"}`, `{"type":"resumed","from":{"session_id":"…"}}`,
/// `{"type":"forked","from":{"rollout_path":"/…/rollout-….jsonl"}}`,
/// `{"type":"forked","from":{"items":[…]}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InitialHistory {
    /// A fresh session.
    #[default]
    New,
    /// Continue an earlier session: same session id, same rollout file
    /// (appended to), history and last token usage restored.
    Resumed {
        /// The session to resume: a session id or a rollout path.
        from: HistorySource,
    },
    /// Start a new session (new id, new rollout) from a copy of a history.
    Forked {
        /// The history to copy: a session id, a rollout path or inline items.
        from: HistorySource,
    },
}

/// Where a history comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum HistorySource {
    /// A rollout file, by path.
    RolloutPath(PathBuf),
    /// A session under the agent's home, by id.
    SessionId(String),
    /// Inline rollout items (only meaningful for `forked`).
    Items(Vec<RolloutItem>),
}

/// The first item of every rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct SessionMeta {
    /// The session's id.
    pub session_id: String,
    /// RFC 3339 time the session was created.
    pub created_at: String,
    /// The session's working directory.
    pub cwd: PathBuf,
    /// Who started the session.
    pub source: SessionSource,
    /// The name of the model (brain) the session started with.
    pub model: String,
    /// The session's approval policy.
    pub approval_policy: ApprovalPolicy,
    /// The session id this one was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub forked_from: Option<String>,
    /// The version of the agent that wrote it.
    pub agent_version: String,
}

/// Which kind of tool an approval was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// An `approval/exec`: a command.
    Exec,
    /// An `approval/patch`: a patch.
    Patch,
}

/// One persisted record of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RolloutItem {
    /// What the session is (always the first item).
    SessionMeta(SessionMeta),
    /// The user's input that started a turn.
    UserInput {
        /// The turn this input started.
        turn_id: String,
        /// The input, as submitted.
        items: Vec<InputItem>,
    },
    /// A complete agent message.
    AgentMessage {
        /// The turn it belongs to.
        turn_id: String,
        /// The message's whole text.
        message: String,
    },
    /// A complete piece of reasoning.
    Reasoning {
        /// The turn it belongs to.
        turn_id: String,
        /// The reasoning's whole text.
        text: String,
    },
    /// The model asked for a tool: `name` is `shell` (arguments
    /// `{"command": [argv…]}`) or `apply_patch` (arguments `{"patch": "…"}`).
    ToolCall {
        /// The turn it belongs to.
        turn_id: String,
        /// Identifies the call; its result and approval carry the same id.
        call_id: String,
        /// The tool's name.
        name: String,
        /// The tool's arguments, as the model gave them.
        arguments: Value,
    },
    /// What the tool call produced (as fed back to the model).
    ToolResult {
        /// The turn it belongs to.
        turn_id: String,
        /// The tool call this is the result of.
        call_id: String,
        /// Whether the tool succeeded (false also when it was denied).
        success: bool,
        /// The text the model was given.
        output: String,
    },
    /// An approval asked and its answer.
    Approval {
        /// The turn it belongs to.
        turn_id: String,
        /// The tool call it was asked for.
        call_id: String,
        /// A command or a patch.
        kind: ApprovalKind,
        /// The host's answer.
        decision: ReviewDecision,
    },
    /// Token usage after a model call.
    TokenCount {
        /// The session's usage after that call.
        info: TokenUsageInfo,
    },
    /// The turn completed.
    TurnComplete {
        /// The turn that completed.
        turn_id: String,
    },
    /// The turn was aborted.
    TurnAborted {
        /// The turn that was aborted.
        turn_id: String,
        /// Why it was aborted.
        reason: TurnAbortReason,
    },
}

/// One line of a rollout file: a timestamp and an item.
///
/// `{"timestamp":"2026-11-24T03:40:00.123Z","type":"user_input",…}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
pub struct RolloutLine {
    /// RFC 3339 time the item was written.
    pub timestamp: String,
    /// The record; its `type` and fields sit next to `timestamp`.
    #[serde(flatten)]
    pub item: RolloutItem,
}
