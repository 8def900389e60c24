//! The client's side of ACP: what a host (`deputy-host`'s ACP dialect)
//! sends an ACP agent, and how it reads the agent's messages as Deputy
//! events and approvals. The tables are in PROTOCOL.md ("Driving an ACP
//! agent").
//!
//! Everything the agent says is untrusted and decoded leniently: unknown
//! update kinds, content kinds, fields and enum values are skipped (as the
//! spec asks of receivers), never an error; what Deputy cannot show is said
//! so in the events rather than dropped silently where it matters (a tool
//! call of a kind Deputy has no event for becomes a `background_event`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use deputy_protocol::{EventMsg, ExecApprovalParams, FileChange, PatchApprovalParams, ReviewDecision};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::map::command_title;
use crate::wire::{Implementation, PermissionOptionKind, RequestPermissionOutcome, StopReason, ToolKind};

// ---------------------------------------------------------------------------
// Client → agent.

/// `initialize` params from a client that offers no `fs` and no `terminal`:
/// a Deputy host lets the agent run its own tools.
pub fn initialize_params(client_name: &str, client_version: Option<&str>) -> Value {
    json!({
        "protocolVersion": crate::wire::PROTOCOL_VERSION,
        "clientCapabilities": { "fs": { "readTextFile": false, "writeTextFile": false }, "terminal": false },
        "clientInfo": { "name": client_name, "version": client_version.unwrap_or("") },
    })
}

/// `session/new` params.
pub fn new_session_params(cwd: &Path) -> Value {
    json!({ "cwd": cwd, "mcpServers": [] })
}

/// `session/load` params.
pub fn load_session_params(session_id: &str, cwd: &Path) -> Value {
    json!({ "sessionId": session_id, "cwd": cwd, "mcpServers": [] })
}

/// `session/prompt` params: the text as one text block.
pub fn prompt_params(session_id: &str, text: &str) -> Value {
    json!({ "sessionId": session_id, "prompt": [{ "type": "text", "text": text }] })
}

/// `session/cancel` and `session/close` params.
pub fn session_params(session_id: &str) -> Value {
    json!({ "sessionId": session_id })
}

/// The answer to `session/request_permission`.
pub fn permission_answer(outcome: &RequestPermissionOutcome) -> Value {
    match outcome {
        RequestPermissionOutcome::Cancelled => json!({ "outcome": { "outcome": "cancelled" } }),
        RequestPermissionOutcome::Selected { option_id } => {
            json!({ "outcome": { "outcome": "selected", "optionId": option_id } })
        }
    }
}

// ---------------------------------------------------------------------------
// Agent → client.

/// What a host reads of the agent's `initialize` answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInitialize {
    /// The version the agent chose (Deputy speaks 1).
    pub protocol_version: u16,
    /// What it offers.
    #[serde(default)]
    pub agent_capabilities: AgentCaps,
    /// Its name and version, if it says.
    #[serde(default)]
    pub agent_info: Option<Implementation>,
    /// How to authenticate, if it needs to (Deputy does not).
    #[serde(default)]
    pub auth_methods: Vec<Value>,
}

/// The capabilities a host uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCaps {
    /// It answers `session/load` (so sessions can be resumed).
    #[serde(default)]
    pub load_session: bool,
    /// The optional session methods it answers.
    #[serde(default)]
    pub session_capabilities: SessionCaps,
}

/// The optional session methods an agent answers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SessionCaps {
    /// Present (`{}`) when the agent supports `session/close`.
    #[serde(default)]
    pub close: Option<Value>,
}

/// `session/new`'s answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    /// The new session's id.
    pub session_id: String,
}

/// `session/update` params, the update left as JSON for [`EventMapper::update`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionNotification {
    /// The session it is about.
    pub session_id: String,
    /// The update (`sessionUpdate` names its kind).
    pub update: Value,
}

/// `session/request_permission` params.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionRequest {
    /// The session it is about.
    pub session_id: String,
    /// The tool call it asks about (at least its `toolCallId`).
    pub tool_call: Value,
    /// What the person may choose.
    #[serde(default)]
    pub options: Vec<PermissionChoice>,
}

/// One option of a permission request (an unknown `kind` is kept as `None`
/// and never chosen).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionChoice {
    /// The id the answer names.
    pub option_id: String,
    /// What the person would see.
    #[serde(default)]
    pub name: String,
    /// What it means (`None`: a kind this crate does not know).
    #[serde(default, deserialize_with = "lenient")]
    pub kind: Option<PermissionOptionKind>,
}

/// An enum value the receiver does not know decodes as `None`.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// A prompt's stop reason as the agent wrote it: known values, else `None`.
pub fn stop_reason_of(result: &Value) -> Option<StopReason> {
    result.get("stopReason").and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The option that carries Deputy's `decision`, or `cancelled`.
///
/// - `approved` → an `allow_once` option; none offered → a reject option
///   (never more than the person allowed: `allow_always` is not chosen for
///   a one-time approval);
/// - `approved_for_session` → `allow_always`, else `allow_once` (less than
///   asked, never more);
/// - `denied` → `reject_once`, else `reject_always`, else `cancelled`;
/// - `abort` → `cancelled` (the caller also sends `session/cancel`: the
///   turn ends).
pub fn choose(decision: ReviewDecision, options: &[PermissionChoice]) -> RequestPermissionOutcome {
    use PermissionOptionKind::*;
    let find = |kinds: &[PermissionOptionKind]| {
        kinds
            .iter()
            .find_map(|k| options.iter().find(|o| o.kind == Some(*k)))
            .map(|o| RequestPermissionOutcome::Selected { option_id: o.option_id.clone() })
    };
    let reject = || find(&[RejectOnce, RejectAlways]).unwrap_or(RequestPermissionOutcome::Cancelled);
    match decision {
        ReviewDecision::Approved => find(&[AllowOnce]).unwrap_or_else(reject),
        ReviewDecision::ApprovedForSession => find(&[AllowAlways, AllowOnce]).unwrap_or_else(reject),
        ReviewDecision::Denied => reject(),
        ReviewDecision::Abort => RequestPermissionOutcome::Cancelled,
    }
}

// ---------------------------------------------------------------------------
// Updates and permission requests → Deputy.

/// What a permission request asks, in Deputy's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// An `execute` tool call: may this command run?
    Exec(ExecApprovalParams),
    /// An `edit`/`delete`/`move` tool call with diffs: may these changes be made?
    Patch(PatchApprovalParams),
    /// Anything else (a fetch, a read, an edit without diffs, …).
    Tool(ToolAsk),
}

/// A tool call of a kind Deputy has no approval of its own for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolAsk {
    /// The tool call's id.
    pub call_id: String,
    /// The turn it belongs to.
    pub turn_id: String,
    /// The ACP tool kind (`read`, `fetch`, `other`, …) as the agent sent it.
    pub kind: String,
    /// The agent's one-line description of the call.
    pub title: String,
    /// The agent's `rawInput`, if any.
    pub input: Option<Value>,
    /// The tool call's text content, if any.
    pub detail: Option<String>,
}

/// How a prompt turn ended, as the host saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEnd {
    /// The prompt's answer, with its stop reason (`None`: a value this
    /// crate does not know).
    Stopped(Option<StopReason>),
    /// The prompt was answered with an error.
    Failed(String),
    /// No answer will come (the conversation is ending): the turn was cut short.
    Cut,
}

/// One tool call as announced and updated.
#[derive(Debug, Clone)]
struct Call {
    kind: Option<ToolKind>,
    kind_name: String,
    title: String,
    raw_input: Option<Value>,
    raw_output: Option<Value>,
    content: Vec<Value>,
    /// `exec_command_begin`/`patch_apply_begin` was emitted.
    begun: Option<Instant>,
    /// A permission was asked for it (so its begin is not `auto_approved`).
    asked: bool,
    /// The host answered its permission request with a refusal: if it fails
    /// without having run, nothing is emitted (it never ran).
    refused: bool,
    ended: bool,
}

impl Call {
    fn new(id: &str) -> Call {
        Call {
            kind: None,
            kind_name: String::new(),
            title: id.to_owned(),
            raw_input: None,
            raw_output: None,
            content: Vec::new(),
            begun: None,
            asked: false,
            refused: false,
            ended: false,
        }
    }

    /// Merges a `tool_call` or `tool_call_update` (or a permission
    /// request's `toolCall`): set fields replace, absent ones stay.
    fn merge(&mut self, v: &Value) {
        if let Some(kind) = v.get("kind").and_then(Value::as_str) {
            self.kind_name = kind.to_owned();
            self.kind = serde_json::from_value(json!(kind)).ok();
        }
        if let Some(title) = v.get("title").and_then(Value::as_str) {
            self.title = title.to_owned();
        }
        if let Some(input) = v.get("rawInput").filter(|i| !i.is_null()) {
            self.raw_input = Some(input.clone());
        }
        if let Some(output) = v.get("rawOutput").filter(|o| !o.is_null()) {
            self.raw_output = Some(output.clone());
        }
        if let Some(content) = v.get("content").and_then(Value::as_array) {
            self.content = content.clone();
        }
    }

    /// The argv: `rawInput.command` as an array of strings; a string
    /// command is one element (the command line as the agent gave it); else
    /// the title.
    fn argv(&self) -> Vec<String> {
        let command = self.raw_input.as_ref().and_then(|i| i.get("command"));
        match command {
            Some(Value::Array(words)) if !words.is_empty() && words.iter().all(Value::is_string) => {
                words.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            Some(Value::String(line)) if !line.is_empty() => vec![line.clone()],
            _ => vec![self.title.clone()],
        }
    }

    /// `rawInput.cwd` (relative to the session's), else the session's.
    fn cwd(&self, session_cwd: &Path) -> PathBuf {
        match self.raw_input.as_ref().and_then(|i| i.get("cwd")).and_then(Value::as_str) {
            Some(dir) => session_cwd.join(dir),
            None => session_cwd.to_path_buf(),
        }
    }

    /// The text of its `content` blocks (and of text in `rawOutput` when
    /// the content has none).
    fn text(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for item in &self.content {
            if item.get("type").and_then(Value::as_str) == Some("content")
                && let Some(text) = item.get("content").and_then(text_of)
            {
                parts.push(text);
            }
        }
        if parts.is_empty()
            && let Some(out) = &self.raw_output
        {
            for key in ["output", "stdout", "formatted_output", "aggregated_output", "stderr"] {
                if let Some(text) = out.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    parts.push(text);
                }
            }
        }
        parts.join("\n")
    }

    /// The diffs of its content.
    fn diffs(&self) -> Vec<(&str, Option<&str>, &str)> {
        self.content
            .iter()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("diff"))
            .filter_map(|c| {
                let path = c.get("path")?.as_str()?;
                let old = c.get("oldText").and_then(Value::as_str);
                let new = c.get("newText").and_then(Value::as_str).unwrap_or("");
                Some((path, old, new))
            })
            .collect()
    }

    fn is_patch(&self) -> bool {
        matches!(self.kind, Some(ToolKind::Edit | ToolKind::Delete | ToolKind::Move))
            && !self.diffs().is_empty()
    }

    fn exit_code(&self, completed: bool) -> i32 {
        let code = self.raw_output.as_ref().and_then(|o| {
            ["exit_code", "exitCode", "code"].iter().find_map(|k| o.get(*k).and_then(Value::as_i64))
        });
        match code {
            Some(c) => i32::try_from(c).unwrap_or(if completed { 0 } else { 1 }),
            None if completed => 0,
            None => 1,
        }
    }
}

/// The text of a content block: `text` blocks, and resource links by name.
fn text_of(block: &Value) -> Option<&str> {
    match block.get("type").and_then(Value::as_str)? {
        "text" => block.get("text").and_then(Value::as_str),
        "resource_link" => block.get("uri").and_then(Value::as_str),
        _ => None,
    }
}

/// A change's path as Deputy's patches name them: relative to the session's
/// cwd when under it, else absolute.
fn shown_path(cwd: &Path, path: &str) -> String {
    let p = Path::new(path);
    match p.strip_prefix(cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
        _ => path.to_owned(),
    }
}

/// A unified diff of two texts, with three lines of context.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

/// The most bytes of a streamed message (or reasoning) kept for its final
/// `agent_message` (`agent_reasoning`): past it the final event holds the
/// start and says how long the whole was — the deltas carry all of it, and
/// a host's memory stays bounded whatever an agent streams.
pub const MAX_KEPT_MESSAGE_BYTES: usize = 1024 * 1024;

/// Streamed text, kept up to [`MAX_KEPT_MESSAGE_BYTES`].
#[derive(Debug, Default)]
struct Kept {
    text: String,
    total: usize,
}

impl Kept {
    fn push(&mut self, piece: &str) {
        self.total += piece.len();
        let room = MAX_KEPT_MESSAGE_BYTES.saturating_sub(self.text.len());
        if piece.len() <= room {
            self.text.push_str(piece);
        } else {
            let mut end = room;
            while !piece.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&piece[..end]);
        }
    }

    fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The text kept, with a note when some was left out; empties it.
    fn take(&mut self) -> String {
        let Kept { mut text, total } = std::mem::take(self);
        if total > text.len() {
            text.push_str(&format!(
                "\n… ({total} bytes in all; the first {} are kept here, the deltas carry the whole)",
                text.len()
            ));
        }
        text
    }
}

/// Turns one ACP session's updates, permission requests and prompt answers
/// into Deputy events, one turn at a time. Keeps what it needs across
/// messages: the message and reasoning streamed so far (their final
/// `agent_message`/`agent_reasoning` is emitted when something else
/// starts, or at the turn's end), and the tool calls of the turn.
#[derive(Debug)]
pub struct EventMapper {
    cwd: PathBuf,
    message: Kept,
    reasoning: Kept,
    last_message: Option<String>,
    calls: HashMap<String, Call>,
    /// Call ids in announcement order (the end of a turn closes them in it).
    order: Vec<String>,
}

impl EventMapper {
    /// A mapper for a session whose cwd is `cwd` (tool paths are shown
    /// relative to it).
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        EventMapper {
            cwd: cwd.into(),
            message: Kept::default(),
            reasoning: Kept::default(),
            last_message: None,
            calls: HashMap::new(),
            order: Vec::new(),
        }
    }

    fn flush_message(&mut self, out: &mut Vec<EventMsg>) {
        if !self.message.is_empty() {
            let message = self.message.take();
            self.last_message = Some(message.clone());
            out.push(EventMsg::AgentMessage { message });
        }
    }

    fn flush_reasoning(&mut self, out: &mut Vec<EventMsg>) {
        if !self.reasoning.is_empty() {
            out.push(EventMsg::AgentReasoning { text: self.reasoning.take() });
        }
    }

    fn flush_text(&mut self, out: &mut Vec<EventMsg>) {
        self.flush_reasoning(out);
        self.flush_message(out);
    }

    fn call(&mut self, id: &str) -> &mut Call {
        if !self.calls.contains_key(id) {
            self.order.push(id.to_owned());
        }
        self.calls.entry(id.to_owned()).or_insert_with(|| Call::new(id))
    }

    /// The events for one `session/update`'s `update` of the turn `turn_id`
    /// (often none).
    pub fn update(&mut self, turn_id: &str, update: &Value) -> Vec<EventMsg> {
        let mut out = Vec::new();
        match update.get("sessionUpdate").and_then(Value::as_str).unwrap_or("") {
            "agent_message_chunk" => {
                if let Some(text) = update.get("content").and_then(text_of).filter(|t| !t.is_empty()) {
                    self.flush_reasoning(&mut out);
                    self.message.push(text);
                    out.push(EventMsg::AgentMessageDelta { delta: text.to_owned() });
                }
            }
            "agent_thought_chunk" => {
                if let Some(text) = update.get("content").and_then(text_of).filter(|t| !t.is_empty()) {
                    self.flush_message(&mut out);
                    self.reasoning.push(text);
                    out.push(EventMsg::AgentReasoningDelta { delta: text.to_owned() });
                }
            }
            "tool_call" | "tool_call_update" => {
                let Some(id) = update.get("toolCallId").and_then(Value::as_str) else {
                    return out;
                };
                self.flush_text(&mut out);
                self.call(id).merge(update);
                match update.get("status").and_then(Value::as_str) {
                    // `pending` is the default of a new tool call.
                    None | Some("pending") => {}
                    Some("in_progress") => self.begin(id, turn_id, &mut out),
                    Some("completed") => self.finish(id, turn_id, true, false, &mut out),
                    Some("failed") => self.finish(id, turn_id, false, false, &mut out),
                    Some(_) => {}
                }
            }
            "usage_update" => {
                let used = update.get("used").and_then(Value::as_u64);
                let size = update.get("size").and_then(Value::as_u64);
                if let Some(used) = used {
                    let usage = deputy_protocol::TokenUsage { total_tokens: used, ..Default::default() };
                    out.push(EventMsg::TokenCount {
                        info: Some(deputy_protocol::TokenUsageInfo {
                            total_token_usage: usage,
                            last_token_usage: usage,
                            model_context_window: size,
                        }),
                    });
                }
            }
            // user_message_chunk (an echo, or a replay), plan,
            // available_commands_update, current_mode_update, … : nothing
            // Deputy shows.
            _ => {}
        }
        out
    }

    fn begin(&mut self, id: &str, turn_id: &str, out: &mut Vec<EventMsg>) {
        let cwd = self.cwd.clone();
        let call = self.call(id);
        if call.begun.is_some() || call.ended {
            return;
        }
        call.begun = Some(Instant::now());
        if call.kind == Some(ToolKind::Execute) {
            out.push(EventMsg::ExecCommandBegin {
                call_id: id.to_owned(),
                turn_id: turn_id.to_owned(),
                command: call.argv(),
                cwd: call.cwd(&cwd),
                unsandboxed: false,
            });
        } else if call.is_patch() {
            let asked = call.asked;
            let changes = self.changes(id);
            out.push(EventMsg::PatchApplyBegin {
                call_id: id.to_owned(),
                turn_id: turn_id.to_owned(),
                auto_approved: !asked,
                changes,
            });
        }
    }

    fn finish(
        &mut self,
        id: &str,
        turn_id: &str,
        completed: bool,
        interrupted: bool,
        out: &mut Vec<EventMsg>,
    ) {
        let call = self.call(id);
        if call.ended {
            return;
        }
        if call.begun.is_none() {
            if call.refused {
                // Refused by the host: it never ran.
                call.ended = true;
                return;
            }
            self.begin(id, turn_id, out);
        }
        let call = self.call(id);
        call.ended = true;
        let elapsed = call.begun.map_or(0, |t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX));
        if call.kind == Some(ToolKind::Execute) {
            out.push(EventMsg::ExecCommandEnd {
                call_id: id.to_owned(),
                turn_id: turn_id.to_owned(),
                exit_code: call.exit_code(completed),
                duration_ms: elapsed,
                output: call.text(),
                truncated: false,
                timed_out: false,
                interrupted,
            });
        } else if call.is_patch() {
            let text = call.text();
            out.push(EventMsg::PatchApplyEnd {
                call_id: id.to_owned(),
                turn_id: turn_id.to_owned(),
                success: completed,
                stdout: if completed { text.clone() } else { String::new() },
                stderr: if completed { String::new() } else { text },
            });
        } else {
            let status = match (completed, interrupted) {
                (true, _) => "completed",
                (false, true) => "cut short",
                (false, false) => "failed",
            };
            let kind = if call.kind_name.is_empty() { "tool" } else { call.kind_name.as_str() };
            out.push(EventMsg::BackgroundEvent { message: format!("{kind} `{}`: {status}", call.title) });
        }
    }

    /// The changes of a patch-like tool call, as Deputy's patches show them.
    fn changes(&self, id: &str) -> BTreeMap<String, FileChange> {
        let Some(call) = self.calls.get(id) else { return BTreeMap::new() };
        let deletes = call.kind == Some(ToolKind::Delete);
        let changes = call
            .diffs()
            .into_iter()
            .map(|(path, old, new)| {
                let shown = shown_path(&self.cwd, path);
                let change = match old {
                    None => FileChange::add(new),
                    Some(old) if deletes && new.is_empty() => FileChange::delete(old),
                    Some(old) => FileChange::update(unified_diff(&shown, old, new), None),
                };
                (shown, change)
            })
            .collect();
        FileChange::cap_all(&changes)
    }

    /// What a `session/request_permission` asks, in Deputy's terms. Its
    /// `toolCall` is merged into the tool call it names (announced before,
    /// normally).
    pub fn permission(&mut self, turn_id: &str, request: &PermissionRequest) -> Option<Ask> {
        let id = request.tool_call.get("toolCallId").and_then(Value::as_str)?.to_owned();
        let cwd = self.cwd.clone();
        let call = self.call(&id);
        call.merge(&request.tool_call);
        call.asked = true;
        let call = call.clone();
        let reason = Some(call.title.clone()).filter(|t| !t.is_empty() && *t != command_title(&call.argv()));
        Some(if call.kind == Some(ToolKind::Execute) {
            Ask::Exec(ExecApprovalParams {
                call_id: id,
                approval_id: None,
                turn_id: turn_id.to_owned(),
                command: call.argv(),
                cwd: call.cwd(&cwd),
                reason,
                unsandboxed: false,
            })
        } else if call.is_patch() {
            let changes = self.changes(&id);
            let outside_workspace = call
                .diffs()
                .iter()
                .map(|(path, _, _)| cwd.join(path))
                .filter(|p| !p.starts_with(&cwd))
                .collect();
            Ask::Patch(PatchApprovalParams {
                call_id: id,
                turn_id: turn_id.to_owned(),
                changes,
                reason: Some(call.title.clone()).filter(|t| !t.is_empty()),
                outside_workspace,
                grant_root: None,
            })
        } else {
            let detail = Some(call.text()).filter(|t| !t.is_empty());
            Ask::Tool(ToolAsk {
                call_id: id,
                turn_id: turn_id.to_owned(),
                kind: if call.kind_name.is_empty() { "other".to_owned() } else { call.kind_name.clone() },
                title: call.title.clone(),
                input: call.raw_input.clone(),
                detail,
            })
        })
    }

    /// Notes the host's answer to the permission request of `call_id`.
    pub fn answered(
        &mut self,
        call_id: &str,
        outcome: &RequestPermissionOutcome,
        options: &[PermissionChoice],
    ) {
        let allowed = match outcome {
            RequestPermissionOutcome::Cancelled => false,
            RequestPermissionOutcome::Selected { option_id } => options.iter().any(|o| {
                o.option_id == *option_id
                    && matches!(
                        o.kind,
                        Some(PermissionOptionKind::AllowOnce | PermissionOptionKind::AllowAlways)
                    )
            }),
        };
        self.call(call_id).refused = !allowed;
    }

    /// The events that end the turn `turn_id`: the last message streamed,
    /// every tool call still running (ended `interrupted` when the turn was
    /// cancelled or cut), then `task_complete` or `turn_aborted`.
    pub fn end_turn(&mut self, turn_id: &str, end: &TurnEnd) -> Vec<EventMsg> {
        let mut out = Vec::new();
        self.flush_text(&mut out);
        let cancelled = matches!(end, TurnEnd::Stopped(Some(StopReason::Cancelled)) | TurnEnd::Cut);
        for id in std::mem::take(&mut self.order) {
            let open = self.calls.get(&id).is_some_and(|c| c.begun.is_some() && !c.ended);
            if open {
                self.finish(&id, turn_id, false, cancelled, &mut out);
            }
        }
        self.calls.clear();
        self.order.clear();
        let last_agent_message = self.last_message.take();
        match end {
            TurnEnd::Stopped(Some(StopReason::Cancelled)) | TurnEnd::Cut => {
                out.push(EventMsg::TurnAborted {
                    turn_id: turn_id.to_owned(),
                    reason: deputy_protocol::TurnAbortReason::Interrupted,
                });
                return out;
            }
            TurnEnd::Stopped(Some(StopReason::EndTurn)) => {}
            TurnEnd::Stopped(Some(reason)) => {
                let why = match reason {
                    StopReason::MaxTokens => "it reached its token limit (max_tokens)",
                    StopReason::MaxTurnRequests => "it reached its cap of model calls (max_turn_requests)",
                    StopReason::Refusal => "the model refused to go on (refusal)",
                    StopReason::EndTurn | StopReason::Cancelled => unreachable!("handled above"),
                };
                out.push(EventMsg::Warning { message: format!("the agent ended the turn early: {why}") });
            }
            TurnEnd::Stopped(None) => out.push(EventMsg::Warning {
                message: "the agent ended the turn with a stop reason this host does not know".to_owned(),
            }),
            TurnEnd::Failed(message) => out.push(EventMsg::Error { message: message.clone() }),
        }
        out.push(EventMsg::TaskComplete { turn_id: turn_id.to_owned(), last_agent_message });
        out
    }
}

#[cfg(test)]
mod tests;
