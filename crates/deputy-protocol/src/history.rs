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
    Resumed { from: HistorySource },
    /// Start a new session (new id, new rollout) from a copy of a history.
    Forked { from: HistorySource },
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
    pub session_id: String,
    /// RFC 3339 time the session was created.
    pub created_at: String,
    pub cwd: PathBuf,
    pub source: SessionSource,
    pub model: String,
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
    Exec,
    Patch,
}

/// One persisted record of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RolloutItem {
    SessionMeta(SessionMeta),
    /// The user's input that started a turn.
    UserInput {
        turn_id: String,
        items: Vec<InputItem>,
    },
    /// A complete agent message.
    AgentMessage {
        turn_id: String,
        message: String,
    },
    /// A complete piece of reasoning.
    Reasoning {
        turn_id: String,
        text: String,
    },
    /// The model asked for a tool: `name` is `shell` (arguments
    /// `{"command": [argv…]}`) or `apply_patch` (arguments `{"patch": "…"}`).
    ToolCall {
        turn_id: String,
        call_id: String,
        name: String,
        arguments: Value,
    },
    /// What the tool call produced (as fed back to the model).
    ToolResult {
        turn_id: String,
        call_id: String,
        success: bool,
        output: String,
    },
    /// An approval asked and its answer.
    Approval {
        turn_id: String,
        call_id: String,
        kind: ApprovalKind,
        decision: ReviewDecision,
    },
    /// Token usage after a model call.
    TokenCount {
        info: TokenUsageInfo,
    },
    /// The turn completed.
    TurnComplete {
        turn_id: String,
    },
    /// The turn was aborted.
    TurnAborted {
        turn_id: String,
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
    #[serde(flatten)]
    pub item: RolloutItem,
}
