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
    /// The caller's id for this submission; absent: the agent makes one up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub id: Option<String>,
    /// What to do.
    pub op: Op,
}

/// Result of `submit`: the submission id (the caller's, or a generated one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct SubmitResult {
    /// The submission's id; the events it causes carry it.
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
    UserInput {
        /// The input, in order.
        items: Vec<InputItem>,
    },
    /// Abort the running turn (no-op when idle) and cancel the inputs queued
    /// behind it: commands are killed (each still gets its
    /// `exec_command_end`, `interrupted: true`), pending approvals cancelled,
    /// and the turn ends with `turn_aborted`. A `user_input` sent after it
    /// starts once that `turn_aborted` was written.
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
    /// Plain text, as the user typed it.
    Text {
        /// The text.
        text: String,
    },
}

/// Params of `approval/exec`: may this command run?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct ExecApprovalParams {
    /// The tool call this approval is for (matches `exec_command_begin`).
    pub call_id: String,
    /// Identifies this approval when one call needs several; absent means
    /// `call_id` identifies it. A host tells approvals apart by this, else by
    /// `call_id` (in Rust: [`Self::approval_key`]), never by `turn_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub approval_id: Option<String>,
    /// The turn the call belongs to.
    pub turn_id: String,
    /// The argv to run (no shell unless argv itself is e.g. `sh -c …`).
    pub command: Vec<String>,
    /// The directory it would run in (absolute).
    pub cwd: PathBuf,
    /// Why the agent wants to run it, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
    /// True for an **escalation** (policy `ask_to_escalate`): the command
    /// already ran in the sandbox and failed in a way that looks like the
    /// sandbox blocked it (`reason` says what); approving runs it again
    /// **outside** the sandbox. Absent (false): approving runs it in the
    /// session's sandbox.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[ts(optional, as = "Option<bool>")]
    pub unsandboxed: bool,
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
    /// The tool call this approval is for (matches `patch_apply_begin`).
    pub call_id: String,
    /// The turn the call belongs to.
    pub turn_id: String,
    /// The changes, by path (relative to the session's cwd, or absolute).
    pub changes: BTreeMap<String, FileChange>,
    /// Why the agent wants to apply it, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
    /// Every path this patch writes (adds, updates, deletes or moves to)
    /// outside the workspace (the session's cwd and writable roots), absolute,
    /// with its directories' symlinks resolved: where the write really lands
    /// (a symlink as the last component is replaced, not followed). Empty (and
    /// omitted) for a patch that stays inside. A host must show these to the
    /// person as a separate decision: approving the patch approves them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(optional, as = "Option<Vec<PathBuf>>")]
    pub outside_workspace: Vec<PathBuf>,
    /// Set when `outside_workspace` is not empty and all of it lies in one
    /// directory: that directory, exactly (the smallest grant that covers the
    /// patch). Only `approved_for_session` grants it (writes under it join
    /// the workspace for the rest of the session); `approved` applies this
    /// patch and grants nothing. Absent when the outside paths lie in several
    /// directories: then nothing outside is ever granted for the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub grant_root: Option<PathBuf>,
}

/// One file's change in a patch.
///
/// In `approval/patch` and `patch_apply_begin` the text (`content`,
/// `unified_diff`) is capped: each change shows at most 64 KiB
/// ([`FileChange::SHOWN_BYTES_PER_CHANGE`]) and one message at most 1 MiB
/// ([`FileChange::SHOWN_BYTES_PER_PATCH`]) in all; a cut text has
/// `truncated: true` and `total_bytes`, the size of the whole text. The
/// change itself is applied whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileChange {
    /// A new file with this content (a patch never adds over an existing file).
    Add {
        /// The new file's whole content, possibly cut.
        content: String,
        /// `content` was cut (see the type's docs).
        #[serde(default, skip_serializing_if = "is_false")]
        #[ts(optional, as = "Option<bool>")]
        truncated: bool,
        /// When `truncated`: the size in bytes of the whole content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        total_bytes: Option<u64>,
    },
    /// The file is removed; `content` is what it held.
    Delete {
        /// What the file held, possibly cut.
        content: String,
        /// `content` was cut (see the type's docs).
        #[serde(default, skip_serializing_if = "is_false")]
        #[ts(optional, as = "Option<bool>")]
        truncated: bool,
        /// When `truncated`: the size in bytes of the whole content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        total_bytes: Option<u64>,
    },
    /// The file is edited (and moved to `move_path` if set; a move never
    /// replaces an existing file).
    Update {
        /// The edit as a unified diff, possibly cut.
        unified_diff: String,
        /// Where the file moves to; absent: it stays.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        move_path: Option<PathBuf>,
        /// `unified_diff` was cut (see the type's docs).
        #[serde(default, skip_serializing_if = "is_false")]
        #[ts(optional, as = "Option<bool>")]
        truncated: bool,
        /// When `truncated`: the size in bytes of the whole diff.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[ts(optional)]
        total_bytes: Option<u64>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FileChange {
    /// The most bytes of text one change shows in an approval or event.
    pub const SHOWN_BYTES_PER_CHANGE: usize = 64 * 1024;
    /// The most bytes of text all changes of one message show together.
    pub const SHOWN_BYTES_PER_PATCH: usize = 1024 * 1024;

    /// A new file, shown whole.
    pub fn add(content: impl Into<String>) -> Self {
        FileChange::Add { content: content.into(), truncated: false, total_bytes: None }
    }

    /// A deletion, shown whole.
    pub fn delete(content: impl Into<String>) -> Self {
        FileChange::Delete { content: content.into(), truncated: false, total_bytes: None }
    }

    /// An update, shown whole.
    pub fn update(unified_diff: impl Into<String>, move_path: Option<PathBuf>) -> Self {
        FileChange::Update {
            unified_diff: unified_diff.into(),
            move_path,
            truncated: false,
            total_bytes: None,
        }
    }

    /// The shown text (`content` or `unified_diff`).
    pub fn text(&self) -> &str {
        match self {
            FileChange::Add { content, .. } | FileChange::Delete { content, .. } => content,
            FileChange::Update { unified_diff, .. } => unified_diff,
        }
    }

    /// Whether the shown text was cut.
    pub fn is_truncated(&self) -> bool {
        match self {
            FileChange::Add { truncated, .. }
            | FileChange::Delete { truncated, .. }
            | FileChange::Update { truncated, .. } => *truncated,
        }
    }

    /// This change with its text cut to at most `limit` bytes (at a character
    /// boundary), marked `truncated` with the whole size when cut.
    pub fn capped(&self, limit: usize) -> FileChange {
        let text = self.text();
        if text.len() <= limit {
            return self.clone();
        }
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let shown = text[..end].to_owned();
        let total = Some(match self {
            FileChange::Add { total_bytes, .. }
            | FileChange::Delete { total_bytes, .. }
            | FileChange::Update { total_bytes, .. } => total_bytes.unwrap_or(text.len() as u64),
        });
        match self {
            FileChange::Add { .. } => FileChange::Add { content: shown, truncated: true, total_bytes: total },
            FileChange::Delete { .. } => {
                FileChange::Delete { content: shown, truncated: true, total_bytes: total }
            }
            FileChange::Update { move_path, .. } => FileChange::Update {
                unified_diff: shown,
                move_path: move_path.clone(),
                truncated: true,
                total_bytes: total,
            },
        }
    }

    /// The changes as a message shows them: each capped at
    /// [`Self::SHOWN_BYTES_PER_CHANGE`], all together at
    /// [`Self::SHOWN_BYTES_PER_PATCH`] (later changes, in path order, get
    /// what is left, possibly nothing).
    pub fn cap_all(changes: &BTreeMap<String, FileChange>) -> BTreeMap<String, FileChange> {
        let mut budget = Self::SHOWN_BYTES_PER_PATCH;
        changes
            .iter()
            .map(|(path, change)| {
                let shown = change.capped(Self::SHOWN_BYTES_PER_CHANGE.min(budget));
                budget -= shown.text().len();
                (path.clone(), shown)
            })
            .collect()
    }
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
    /// True for `approved` and `approved_for_session`.
    pub fn is_approved(self) -> bool {
        matches!(self, ReviewDecision::Approved | ReviewDecision::ApprovedForSession)
    }
}

/// Result of `approval/exec` and `approval/patch`.
///
/// A JSON-RPC error, or a result that does not decode, counts as `denied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct ApprovalResult {
    /// The host's answer.
    pub decision: ReviewDecision,
}

/// Params of `$/cancelRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct CancelRequestParams {
    /// The id of the request to cancel (sent earlier by the same side).
    pub id: RequestId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_cuts_at_a_character_and_keeps_the_total() {
        // 'é' is two bytes: a cut at an odd byte moves back to the boundary.
        let text = "é".repeat(FileChange::SHOWN_BYTES_PER_CHANGE);
        let capped = FileChange::delete(text.clone()).capped(FileChange::SHOWN_BYTES_PER_CHANGE - 1);
        assert!(capped.is_truncated());
        assert_eq!(capped.text().len(), FileChange::SHOWN_BYTES_PER_CHANGE - 2);
        assert!(matches!(capped, FileChange::Delete { total_bytes: Some(n), .. } if n == text.len() as u64));
        let small = FileChange::add("hi\n");
        assert_eq!(small.capped(10), small);
        // The whole message stays within its budget; changes past it show nothing.
        let big = "x".repeat(FileChange::SHOWN_BYTES_PER_CHANGE * 2);
        let changes: BTreeMap<String, FileChange> =
            (0..20).map(|i| (format!("f{i:02}"), FileChange::add(big.clone()))).collect();
        let shown = FileChange::cap_all(&changes);
        let total: usize = shown.values().map(|c| c.text().len()).sum();
        assert_eq!(total, FileChange::SHOWN_BYTES_PER_PATCH);
        assert!(shown.values().all(FileChange::is_truncated));
        assert_eq!(shown["f19"].text(), "");
    }
}
