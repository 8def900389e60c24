//! What the host sends after the handshake (`submit`), and what the agent asks
//! of the host (`approval/*`), plus `$/cancelRequest`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::RequestId;

/// Params of `submit`: an op, with the caller's id for it.
///
/// Every event caused by this submission carries `id` in [`crate::Event::id`].
/// If `id` is absent the agent makes one up and returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
pub struct Submission {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub id: Option<String>,
    pub op: Op,
}

/// Result of `submit`: the submission id (the caller's, or a generated one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct SubmitResult {
    pub id: String,
}

/// An operation submitted to the agent.
///
/// New op types may be added in later versions; an agent that does not know
/// one answers `submit` with error -32602 (invalid params) naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Start a turn with this input.
    UserInput { items: Vec<InputItem> },
    /// Abort the running turn (no-op when idle): commands are killed, pending
    /// approvals cancelled, and the turn ends with `turn_aborted`.
    Interrupt,
    /// Abort any turn, flush the rollout, emit `shutdown_complete`, exit 0.
    Shutdown,
}

impl Op {
    /// A user input of one text item.
    pub fn text(text: impl Into<String>) -> Op {
        Op::UserInput { items: vec![InputItem::Text { text: text.into() }] }
    }

    /// The wire name of this op's type.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::UserInput { .. } => "user_input",
            Op::Interrupt => "interrupt",
            Op::Shutdown => "shutdown",
        }
    }
}

/// One piece of user input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputItem {
    Text { text: String },
}

/// Params of `approval/exec`: may this command run?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct ExecApprovalParams {
    /// The tool call this approval is for (matches `exec_command_begin`).
    pub call_id: String,
    /// Identifies this approval when one call needs several; absent means
    /// `call_id` identifies it. Answers are keyed by [`Self::approval_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub approval_id: Option<String>,
    pub turn_id: String,
    /// The argv to run (no shell unless argv itself is e.g. `sh -c …`).
    pub command: Vec<String>,
    pub cwd: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
}

impl ExecApprovalParams {
    /// The id this approval is known by: `approval_id`, else `call_id`.
    pub fn approval_key(&self) -> &str {
        self.approval_id.as_deref().unwrap_or(&self.call_id)
    }
}

/// Params of `approval/patch`: may this patch be applied?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct PatchApprovalParams {
    pub call_id: String,
    pub turn_id: String,
    /// The changes, by path (relative to the session's cwd, or absolute).
    pub changes: BTreeMap<String, FileChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
    /// Set when the patch writes outside the session's writable roots: an
    /// approval also grants writes under this directory for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub grant_root: Option<PathBuf>,
}

/// One file's change in a patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileChange {
    /// A new file with this content.
    Add { content: String },
    /// The file is removed; `content` is what it held.
    Delete { content: String },
    /// The file is edited (and moved to `move_path` if set).
    Update {
        unified_diff: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        move_path: Option<PathBuf>,
    },
}

/// The host's answer to an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    /// Run it, this once.
    Approved,
    /// Run it, and do not ask again this session for the same argv (exec) or
    /// the same files (patch).
    ApprovedForSession,
    /// Do not run it; the turn goes on (the model is told it was denied).
    Denied,
    /// Do not run it, and end the turn as aborted.
    Abort,
}

impl ReviewDecision {
    pub fn is_approved(self) -> bool {
        matches!(self, ReviewDecision::Approved | ReviewDecision::ApprovedForSession)
    }
}

/// Result of `approval/exec` and `approval/patch`.
///
/// A JSON-RPC error, or a result that does not decode, counts as `denied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct ApprovalResult {
    pub decision: ReviewDecision,
}

/// Params of `$/cancelRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct CancelRequestParams {
    pub id: RequestId,
}
