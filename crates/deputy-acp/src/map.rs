//! Deputy ↔ ACP: events to `session/update`s, approvals to
//! `session/request_permission`, prompts to user input, rollouts to a
//! `session/load` replay. The tables are in PROTOCOL.md ("ACP").

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use deputy_protocol::{EventMsg, FileChange, InputItem, ReviewDecision, RolloutItem};
use serde_json::{Value, json};

use crate::wire::{
    ContentChunk, PermissionOption, PermissionOptionKind, RequestPermissionOutcome, SessionUpdate,
    StopReason, ToolCall, ToolCallContent, ToolCallLocation, ToolCallStatus, ToolCallUpdate, ToolKind,
    UsageUpdate,
};

/// One file of a patch, whole text before and after, for ACP's `diff`
/// content (ACP shows diffs from full texts, Deputy's events carry unified
/// diffs). `old_text` is `None` for a new file; a deleted file has an empty
/// `new_text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// The file (absolute).
    pub path: PathBuf,
    /// Its text before (`None`: a new file).
    pub old_text: Option<String>,
    /// Its text after (empty: deleted).
    pub new_text: String,
}

/// The most bytes of file text one patch's diffs may show; past it the
/// tool call shows Deputy's capped unified diffs instead (ACP has no way to
/// show part of a file's text as a diff).
pub const MAX_DIFF_BYTES: usize = FileChange::SHOWN_BYTES_PER_PATCH;

/// The option ids of a permission request.
pub mod option_ids {
    /// `allow_once`: Deputy's `approved`.
    pub const ALLOW_ONCE: &str = "approved";
    /// `allow_always`: Deputy's `approved_for_session`.
    pub const ALLOW_ALWAYS: &str = "approved_for_session";
    /// `reject_once`: Deputy's `denied`.
    pub const REJECT_ONCE: &str = "denied";
    /// `reject_always`: denied, and not asked again this session.
    pub const REJECT_ALWAYS: &str = "denied_for_session";
}

/// What the person answered to a permission request, in Deputy's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// A Deputy decision.
    Decision(ReviewDecision),
    /// `reject_always`: denied, and the same request is denied without
    /// asking for the rest of the session (Deputy's engine has no such
    /// grant, so the ACP face keeps it).
    DeniedForSession,
}

impl Permission {
    /// The engine's decision.
    pub fn decision(self) -> ReviewDecision {
        match self {
            Permission::Decision(d) => d,
            Permission::DeniedForSession => ReviewDecision::Denied,
        }
    }
}

/// The four options Deputy offers, in this order.
pub fn permission_options() -> Vec<PermissionOption> {
    let o = |id: &str, name: &str, kind| PermissionOption { option_id: id.into(), name: name.into(), kind };
    vec![
        o(option_ids::ALLOW_ONCE, "Allow once", PermissionOptionKind::AllowOnce),
        o(option_ids::ALLOW_ALWAYS, "Allow for this session", PermissionOptionKind::AllowAlways),
        o(option_ids::REJECT_ONCE, "Reject", PermissionOptionKind::RejectOnce),
        o(
            option_ids::REJECT_ALWAYS,
            "Reject, and do not ask again this session",
            PermissionOptionKind::RejectAlways,
        ),
    ]
}

/// Maps an answer onto Deputy's decisions. `cancelled` is `abort` (the turn
/// ends); an option id Deputy did not offer is a denial (fail closed).
pub fn permission(outcome: &RequestPermissionOutcome) -> Permission {
    match outcome {
        RequestPermissionOutcome::Cancelled => Permission::Decision(ReviewDecision::Abort),
        RequestPermissionOutcome::Selected { option_id } => match option_id.as_str() {
            option_ids::ALLOW_ONCE => Permission::Decision(ReviewDecision::Approved),
            option_ids::ALLOW_ALWAYS => Permission::Decision(ReviewDecision::ApprovedForSession),
            option_ids::REJECT_ALWAYS => Permission::DeniedForSession,
            _ => Permission::Decision(ReviewDecision::Denied),
        },
    }
}

/// The prompt's stop reason for a turn-ending event (`None` for others).
/// `capped`: the turn ended because it reached its cap of model calls.
pub fn stop_reason(msg: &EventMsg, capped: bool) -> Option<StopReason> {
    match msg {
        EventMsg::TaskComplete { .. } if capped => Some(StopReason::MaxTurnRequests),
        EventMsg::TaskComplete { .. } => Some(StopReason::EndTurn),
        EventMsg::TurnAborted { .. } => Some(StopReason::Cancelled),
        _ => None,
    }
}

/// A prompt block Deputy cannot take (answered `-32602`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptError(pub String);

impl std::fmt::Display for PromptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user input of a `session/prompt`: text blocks as they are, text
/// resources and resource links as context text after them. Images, audio
/// and binary resources are refused, naming the kind (the agent advertises
/// `image: false, audio: false`).
pub fn prompt_text(blocks: &[Value]) -> Result<Vec<InputItem>, PromptError> {
    let mut parts: Vec<String> = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
        let field = |name: &str| block.get(name).and_then(Value::as_str);
        match kind {
            "text" => match field("text") {
                Some(t) => parts.push(t.to_owned()),
                None => return Err(PromptError(format!("prompt block {i}: a `text` block needs `text`"))),
            },
            "resource_link" => {
                let uri = field("uri").unwrap_or("");
                let name = field("name").unwrap_or(uri);
                parts.push(format!("[resource: {name}] {uri}"));
            }
            "resource" => {
                let res = block.get("resource").unwrap_or(&Value::Null);
                let uri = res.get("uri").and_then(Value::as_str).unwrap_or("");
                match res.get("text").and_then(Value::as_str) {
                    Some(text) => parts.push(format!("Context from {uri}:\n```\n{text}\n```")),
                    None => {
                        return Err(PromptError(format!(
                            "prompt block {i}: unsupported content block kind `resource` with a binary (blob) resource"
                        )));
                    }
                }
            }
            other => {
                return Err(PromptError(format!(
                    "prompt block {i}: unsupported content block kind `{other}`"
                )));
            }
        }
    }
    if parts.is_empty() {
        return Err(PromptError("the prompt has no content".into()));
    }
    Ok(vec![InputItem::Text { text: parts.join("\n") }])
}

/// An argv as one line, quoted like a POSIX shell would need it.
pub fn command_title(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain =
                !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
            if plain { a.clone() } else { format!("'{}'", a.replace('\'', r"'\''")) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `tool_call` of a command.
pub fn exec_tool_call(call_id: &str, argv: &[String], cwd: &Path, status: ToolCallStatus) -> ToolCall {
    ToolCall {
        tool_call_id: call_id.to_owned(),
        title: command_title(argv),
        kind: ToolKind::Execute,
        status,
        content: Vec::new(),
        locations: Vec::new(),
        raw_input: Some(json!({ "command": argv, "cwd": cwd })),
        raw_output: None,
    }
}

fn abs(cwd: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) }
}

/// The `tool_call` of a patch: kind `move` if it moves a file, `delete` if
/// it only deletes, else `edit`; a `diff` per file (from `diffs` when the
/// face computed them, else from the changes: added and deleted files as
/// diffs, updates as their unified diff in text).
pub fn patch_tool_call(
    call_id: &str,
    changes: &BTreeMap<String, FileChange>,
    diffs: Option<&[FileDiff]>,
    cwd: &Path,
    status: ToolCallStatus,
) -> ToolCall {
    let moves = changes.values().any(|c| matches!(c, FileChange::Update { move_path: Some(_), .. }));
    let deletes_only =
        !changes.is_empty() && changes.values().all(|c| matches!(c, FileChange::Delete { .. }));
    let (kind, verb) = if moves {
        (ToolKind::Move, "Move")
    } else if deletes_only {
        (ToolKind::Delete, "Delete")
    } else {
        (ToolKind::Edit, "Edit")
    };
    let mut locations = Vec::new();
    let mut names = Vec::new();
    for (path, change) in changes {
        locations.push(ToolCallLocation { path: abs(cwd, path) });
        match change {
            FileChange::Update { move_path: Some(to), .. } => {
                names.push(format!("{path} → {}", to.display()));
                locations.push(ToolCallLocation { path: abs(cwd, &to.to_string_lossy()) });
            }
            _ => names.push(path.clone()),
        }
    }
    let shown: usize = diffs
        .map(|d| d.iter().map(|f| f.old_text.as_ref().map_or(0, String::len) + f.new_text.len()).sum())
        .unwrap_or(0);
    let content = match diffs {
        Some(d) if shown <= MAX_DIFF_BYTES => d
            .iter()
            .map(|f| ToolCallContent::Diff {
                path: f.path.clone(),
                old_text: f.old_text.clone(),
                new_text: f.new_text.clone(),
            })
            .collect(),
        _ => changes
            .iter()
            .map(|(path, change)| match change {
                FileChange::Add { content, truncated: false, .. } => {
                    ToolCallContent::Diff { path: abs(cwd, path), old_text: None, new_text: content.clone() }
                }
                FileChange::Delete { content, truncated: false, .. } => ToolCallContent::Diff {
                    path: abs(cwd, path),
                    old_text: Some(content.clone()),
                    new_text: String::new(),
                },
                FileChange::Add { content, .. } => ToolCallContent::text(format!("add {path}:\n{content}")),
                FileChange::Delete { .. } => ToolCallContent::text(format!("delete {path}")),
                FileChange::Update { unified_diff, .. } => {
                    ToolCallContent::text(format!("```diff\n{unified_diff}```"))
                }
            })
            .collect(),
    };
    ToolCall {
        tool_call_id: call_id.to_owned(),
        title: format!("{verb} {}", names.join(", ")),
        kind,
        status,
        content,
        locations,
        raw_input: Some(json!({ "changes": changes })),
        raw_output: None,
    }
}

fn update(call_id: &str, status: ToolCallStatus) -> ToolCallUpdate {
    ToolCallUpdate { tool_call_id: call_id.to_owned(), status: Some(status), ..ToolCallUpdate::default() }
}

/// Turns one session's events into updates. Keeps what it needs across
/// events: whether the current message was streamed (its final
/// `agent_message` is then not sent again), the tool calls announced and
/// not finished (so every `tool_call` gets exactly one final status, also
/// when the turn is cut short), and the diffs noted for patches.
#[derive(Debug, Default)]
pub struct TurnMapper {
    /// The session's cwd: patch paths are relative to it.
    cwd: PathBuf,
    streamed_message: bool,
    streamed_reasoning: bool,
    open: Vec<String>,
    diffs: HashMap<String, Vec<FileDiff>>,
}

impl TurnMapper {
    /// A mapper for a session whose cwd is `cwd` (patch paths are relative to it).
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        TurnMapper { cwd: cwd.into(), ..TurnMapper::default() }
    }

    /// Keeps the full texts of a patch's files for its tool call.
    pub fn note_patch(&mut self, call_id: &str, diffs: Vec<FileDiff>) {
        self.diffs.insert(call_id.to_owned(), diffs);
    }

    /// The diffs noted for `call_id`.
    pub fn diffs(&self, call_id: &str) -> Option<&[FileDiff]> {
        self.diffs.get(call_id).map(Vec::as_slice)
    }

    /// Announces a tool call (the `tool_call` update): it is open until a
    /// final status is sent.
    pub fn announce(&mut self, call: ToolCall) -> SessionUpdate {
        if !self.open.contains(&call.tool_call_id) {
            self.open.push(call.tool_call_id.clone());
        }
        SessionUpdate::ToolCall(call)
    }

    /// Whether `call_id` was announced and has no final status yet.
    pub fn is_open(&self, call_id: &str) -> bool {
        self.open.iter().any(|c| c == call_id)
    }

    /// Ends an open tool call as `failed` with `why` as its content: a
    /// rejected permission (ACP v1 has no rejected status).
    pub fn fail(&mut self, call_id: &str, why: &str) -> Option<SessionUpdate> {
        if !self.close(call_id) {
            return None;
        }
        self.diffs.remove(call_id);
        let mut u = update(call_id, ToolCallStatus::Failed);
        u.content = Some(vec![ToolCallContent::text(why)]);
        Some(SessionUpdate::ToolCallUpdate(u))
    }

    fn close(&mut self, call_id: &str) -> bool {
        let before = self.open.len();
        self.open.retain(|c| c != call_id);
        self.open.len() != before
    }

    /// The updates for one event (often none).
    pub fn event(&mut self, msg: &EventMsg) -> Vec<SessionUpdate> {
        match msg {
            EventMsg::AgentMessageDelta { delta } => {
                self.streamed_message = true;
                vec![SessionUpdate::AgentMessageChunk(ContentChunk::text(delta.clone()))]
            }
            EventMsg::AgentMessage { message } => {
                if std::mem::take(&mut self.streamed_message) {
                    Vec::new()
                } else {
                    vec![SessionUpdate::AgentMessageChunk(ContentChunk::text(message.clone()))]
                }
            }
            EventMsg::AgentReasoningDelta { delta } => {
                self.streamed_reasoning = true;
                vec![SessionUpdate::AgentThoughtChunk(ContentChunk::text(delta.clone()))]
            }
            EventMsg::AgentReasoning { text } => {
                if std::mem::take(&mut self.streamed_reasoning) {
                    Vec::new()
                } else {
                    vec![SessionUpdate::AgentThoughtChunk(ContentChunk::text(text.clone()))]
                }
            }
            // ACP's `size` (the context window) is required; Deputy knows it
            // only for some models, and does not invent one.
            EventMsg::TokenCount { info: Some(info) } => match info.model_context_window {
                Some(size) => {
                    let last = info.last_token_usage;
                    let used = if last.total_tokens > 0 {
                        last.total_tokens
                    } else {
                        last.input_tokens + last.output_tokens
                    };
                    vec![SessionUpdate::UsageUpdate(UsageUpdate { used, size })]
                }
                None => Vec::new(),
            },
            EventMsg::ExecCommandBegin { call_id, command, cwd, .. } => {
                if self.is_open(call_id) {
                    vec![SessionUpdate::ToolCallUpdate(update(call_id, ToolCallStatus::InProgress))]
                } else {
                    vec![self.announce(exec_tool_call(call_id, command, cwd, ToolCallStatus::InProgress))]
                }
            }
            EventMsg::ExecCommandEnd {
                call_id,
                exit_code,
                duration_ms,
                output,
                truncated,
                timed_out,
                interrupted,
                ..
            } => {
                if !self.close(call_id) {
                    return Vec::new();
                }
                let ok = *exit_code == 0 && !timed_out && !interrupted;
                let mut u =
                    update(call_id, if ok { ToolCallStatus::Completed } else { ToolCallStatus::Failed });
                let mut text = output.clone();
                if *timed_out {
                    text.push_str("\n(timed out)");
                } else if *interrupted {
                    text.push_str("\n(killed: the turn was cancelled)");
                }
                if !text.is_empty() {
                    u.content = Some(vec![ToolCallContent::text(text)]);
                }
                u.raw_output = Some(json!({
                    "exit_code": exit_code,
                    "duration_ms": duration_ms,
                    "truncated": truncated,
                    "timed_out": timed_out,
                    "interrupted": interrupted,
                }));
                vec![SessionUpdate::ToolCallUpdate(u)]
            }
            EventMsg::PatchApplyBegin { call_id, changes, .. } => {
                if self.is_open(call_id) {
                    vec![SessionUpdate::ToolCallUpdate(update(call_id, ToolCallStatus::InProgress))]
                } else {
                    let call = patch_tool_call(
                        call_id,
                        changes,
                        self.diffs(call_id),
                        &self.cwd,
                        ToolCallStatus::InProgress,
                    );
                    vec![self.announce(call)]
                }
            }
            EventMsg::PatchApplyEnd { call_id, success, stdout, stderr, .. } => {
                if !self.close(call_id) {
                    return Vec::new();
                }
                let diffs = self.diffs.remove(call_id);
                let mut u = update(
                    call_id,
                    if *success { ToolCallStatus::Completed } else { ToolCallStatus::Failed },
                );
                u.raw_output = Some(json!({ "success": success, "stdout": stdout, "stderr": stderr }));
                if !success {
                    // Content is replaced as a whole: keep the diffs, add why.
                    let mut content: Vec<ToolCallContent> = diffs
                        .unwrap_or_default()
                        .into_iter()
                        .map(|f| ToolCallContent::Diff {
                            path: f.path,
                            old_text: f.old_text,
                            new_text: f.new_text,
                        })
                        .collect();
                    content.push(ToolCallContent::text(stderr.clone()));
                    u.content = Some(content);
                }
                vec![SessionUpdate::ToolCallUpdate(u)]
            }
            EventMsg::Error { message } => {
                vec![SessionUpdate::AgentMessageChunk(ContentChunk::text(format!("\n\nError: {message}\n")))]
            }
            EventMsg::StreamError { message } | EventMsg::Warning { message } => {
                vec![SessionUpdate::AgentThoughtChunk(ContentChunk::text(format!("\nWarning: {message}\n")))]
            }
            EventMsg::TaskComplete { .. } | EventMsg::TurnAborted { .. } => self.end_turn(),
            _ => Vec::new(),
        }
    }

    /// At a turn's end: every tool call still open ends `failed` (its
    /// permission was withdrawn, or it was refused after approval).
    pub fn end_turn(&mut self) -> Vec<SessionUpdate> {
        self.streamed_message = false;
        self.streamed_reasoning = false;
        self.diffs.clear();
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|id| {
                let mut u = update(&id, ToolCallStatus::Failed);
                u.content = Some(vec![ToolCallContent::text("not run: the turn ended first")]);
                SessionUpdate::ToolCallUpdate(u)
            })
            .collect()
    }
}

/// The updates that replay a stored conversation (`session/load`): user
/// and agent messages, reasoning, and tool calls with their final status
/// and output, in order.
pub fn replay(items: &[RolloutItem], cwd: &Path) -> Vec<SessionUpdate> {
    let results: HashMap<&str, (bool, &str)> = items
        .iter()
        .filter_map(|i| match i {
            RolloutItem::ToolResult { call_id, success, output, .. } => {
                Some((call_id.as_str(), (*success, output.as_str())))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for item in items {
        match item {
            RolloutItem::UserInput { items, .. } => {
                for InputItem::Text { text } in items {
                    out.push(SessionUpdate::UserMessageChunk(ContentChunk::text(text.clone())));
                }
            }
            RolloutItem::AgentMessage { message, .. } => {
                out.push(SessionUpdate::AgentMessageChunk(ContentChunk::text(message.clone())));
            }
            RolloutItem::Reasoning { text, .. } => {
                out.push(SessionUpdate::AgentThoughtChunk(ContentChunk::text(text.clone())));
            }
            RolloutItem::ToolCall { call_id, name, arguments, .. } => {
                let (success, output) = results.get(call_id.as_str()).copied().unwrap_or((false, "not run"));
                let status = if success { ToolCallStatus::Completed } else { ToolCallStatus::Failed };
                let argv: Option<Vec<String>> =
                    arguments.get("command").and_then(|c| serde_json::from_value(c.clone()).ok());
                let mut call = match (name.as_str(), argv) {
                    ("shell", Some(argv)) => exec_tool_call(call_id, &argv, cwd, status),
                    _ => ToolCall {
                        tool_call_id: call_id.clone(),
                        title: name.clone(),
                        kind: if name == "apply_patch" { ToolKind::Edit } else { ToolKind::Other },
                        status,
                        content: Vec::new(),
                        locations: Vec::new(),
                        raw_input: Some(arguments.clone()),
                        raw_output: None,
                    },
                };
                if !output.is_empty() {
                    call.content.push(ToolCallContent::text(output));
                }
                out.push(SessionUpdate::ToolCall(call));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
