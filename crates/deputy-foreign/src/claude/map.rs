//! Claude Code stream-json ↔ Deputy. The tables are in DIALECTS.md ("Claude Code").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deputy_protocol::{
    ApprovalPolicy, EventMsg, ExecApprovalParams, FileChange, InputItem, Op, PatchApprovalParams,
    ReviewDecision, TokenUsage, TokenUsageInfo, TurnAbortReason,
};
use serde_json::{Value, json};

use super::wire::{self, CanUseTool, ContentBlock, Incoming, ResultLine, Usage, UserLine};
use crate::{
    Approval, DecodeError, ForeignSession, Gate, OtherApproval, Output, SubmitError, cap_output,
    common_parent, edit_changes, end_of_output, event, gate, interrupted_exec_end, outside,
    unreported_patch_end,
};

/// A function returning a file's current text (`None`: missing or unreadable).
pub type ReadFile = dyn Fn(&Path) -> Option<String> + Send + Sync;

/// Reads a file's current text for an edit's diff.
#[derive(Clone)]
pub struct FileReader(pub Arc<ReadFile>);

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileReader")
    }
}

/// How to start the conversation.
#[derive(Debug, Clone)]
pub struct ClaudeConfig {
    /// The session's working directory (absolute): where `claude` runs.
    pub cwd: PathBuf,
    /// The session id: a UUID the caller chooses (`--session-id`), or the
    /// one to resume (`--resume`). Known before the first message, so
    /// `session_configured` can come right after the handshake.
    pub session_id: String,
    /// Resume `session_id` instead of starting it.
    pub resume: bool,
    /// Ask for partial messages (`--include-partial-messages`): message
    /// deltas as they stream.
    pub partial_messages: bool,
    /// Reads files for the diffs of `Edit`/`Write` approvals. `None`: no
    /// file is read (a write shows as a new file, an edit as its snippets).
    pub read_file: Option<FileReader>,
}

impl ClaudeConfig {
    /// A new session in `cwd` with this id; partial messages on, no file reader.
    pub fn new(cwd: impl Into<PathBuf>, session_id: impl Into<String>) -> Self {
        ClaudeConfig {
            cwd: cwd.into(),
            session_id: session_id.into(),
            resume: false,
            partial_messages: true,
            read_file: None,
        }
    }

    /// The arguments to add to the `claude` command: the protocol flags,
    /// the session, partial messages.
    pub fn launch_args(&self) -> Vec<String> {
        let mut args: Vec<String> = wire::PROTOCOL_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(if self.resume { "--resume" } else { "--session-id" }.into());
        args.push(self.session_id.clone());
        if self.partial_messages {
            args.push("--include-partial-messages".into());
        }
        args
    }
}

/// Deputy's policy for Claude's permission mode.
fn deputy_policy(mode: Option<&str>) -> ApprovalPolicy {
    match mode {
        // default: read-only tools run unasked, the rest is asked;
        // acceptEdits: edits too run unasked (closest: the same).
        Some("default" | "acceptEdits") => ApprovalPolicy::AskUnlessReadOnly,
        Some("bypassPermissions" | "dontAsk") => ApprovalPolicy::NeverAsk,
        _ => ApprovalPolicy::AskAlways,
    }
}

#[derive(Debug, Clone)]
enum ToolKind {
    Exec { argv: Vec<String>, cwd: PathBuf },
    Patch { changes: BTreeMap<String, FileChange> },
    Other,
}

#[derive(Debug, Clone)]
struct Tool {
    turn_id: String,
    kind: ToolKind,
    /// The model's call, as sent (answers echo it as `updatedInput`).
    input: Value,
    started_at: Option<String>,
    /// A permission was asked for it.
    asked: bool,
    begun: bool,
}

#[derive(Debug, Clone)]
struct PendingApproval {
    request_id: String,
    tool_use_id: String,
    turn_id: String,
    input: Value,
    grant: Option<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Grant {
    Exec(Vec<String>),
    Patch(Vec<String>),
}

#[derive(Debug, Clone)]
struct Turn {
    sub: String,
    id: String,
    /// An interrupt (or an `abort` answer) was sent: the error result that
    /// follows is the abort.
    aborting: bool,
    last_message: Option<String>,
}

/// One Claude Code conversation, without I/O.
#[derive(Debug)]
pub struct ClaudeSession {
    config: ClaudeConfig,
    next_request: u64,
    init_request: Option<String>,
    ready: bool,
    failed: bool,
    session_id: String,
    sandboxed: bool,
    turns: u64,
    turn: Option<Turn>,
    tools: HashMap<String, Tool>,
    order: Vec<String>,
    approvals: HashMap<String, PendingApproval>,
    approval_order: Vec<String>,
    grants: HashSet<Grant>,
    total: TokenUsage,
    shutdown: Option<String>,
}

impl ClaudeSession {
    /// A session not started yet; `start` gives the handshake lines.
    pub fn new(config: ClaudeConfig) -> Self {
        ClaudeSession {
            session_id: config.session_id.clone(),
            config,
            next_request: 1,
            init_request: None,
            ready: false,
            failed: false,
            sandboxed: false,
            turns: 0,
            turn: None,
            tools: HashMap::new(),
            order: Vec::new(),
            approvals: HashMap::new(),
            approval_order: Vec::new(),
            grants: HashSet::new(),
            total: TokenUsage::default(),
            shutdown: None,
        }
    }

    fn request_id(&mut self) -> String {
        let id = format!("deputy_{}", self.next_request);
        self.next_request += 1;
        id
    }

    fn sub(&self) -> String {
        self.turn.as_ref().map(|t| t.sub.clone()).unwrap_or_default()
    }

    fn turn_id(&self) -> String {
        self.turn.as_ref().map(|t| t.id.clone()).unwrap_or_default()
    }

    fn interrupt(&mut self) -> Vec<Output> {
        match &mut self.turn {
            Some(t) if !t.aborting => {
                t.aborting = true;
                let id = self.request_id();
                vec![Output::Send(wire::interrupt(&id))]
            }
            _ => Vec::new(),
        }
    }

    fn abort_reason(&self) -> TurnAbortReason {
        crate::abort_reason(&self.shutdown)
    }

    fn track(&mut self, id: String, tool: Tool) {
        if !self.tools.contains_key(&id) {
            self.order.push(id.clone());
        }
        self.tools.insert(id, tool);
    }

    fn untrack(&mut self, id: &str) -> Option<Tool> {
        self.order.retain(|i| i != id);
        self.tools.remove(id)
    }

    fn forget_approval(&mut self, key: &str) -> Option<PendingApproval> {
        self.approval_order.retain(|k| k != key);
        self.approvals.remove(key)
    }

    fn tool_kind(&self, name: &str, input: &Value) -> ToolKind {
        if name == "Bash"
            && let Some(command) = input.get("command").and_then(Value::as_str)
        {
            return ToolKind::Exec { argv: bash_argv(command), cwd: self.config.cwd.clone() };
        }
        let current = input
            .get("file_path")
            .and_then(Value::as_str)
            .zip(self.config.read_file.as_ref())
            .and_then(|(path, read)| (read.0)(Path::new(path)));
        match edit_changes(name, input, &self.config.cwd, current.as_deref()) {
            Some(changes) => ToolKind::Patch { changes },
            None => ToolKind::Other,
        }
    }

    /// The begin event of a tool call, once (commands and edits only).
    fn begin(&mut self, id: &str) -> Vec<Output> {
        let sandboxed = self.sandboxed;
        let sub = self.sub();
        let Some(tool) = self.tools.get_mut(id) else { return Vec::new() };
        if tool.begun {
            return Vec::new();
        }
        let msg = match &tool.kind {
            ToolKind::Exec { argv, cwd } => EventMsg::ExecCommandBegin {
                call_id: id.to_owned(),
                turn_id: tool.turn_id.clone(),
                command: argv.clone(),
                cwd: cwd.clone(),
                unsandboxed: !sandboxed,
            },
            ToolKind::Patch { changes } => EventMsg::PatchApplyBegin {
                call_id: id.to_owned(),
                turn_id: tool.turn_id.clone(),
                auto_approved: !tool.asked,
                changes: FileChange::cap_all(changes),
            },
            ToolKind::Other => return Vec::new(),
        };
        tool.begun = true;
        vec![event(&sub, msg)]
    }

    fn on_control_response(&mut self, request_id: &str, result: Result<Value, String>) -> Vec<Output> {
        if self.init_request.as_deref() != Some(request_id) {
            return Vec::new(); // an interrupt's receipt
        }
        self.init_request = None;
        match result {
            Ok(r) => {
                self.ready = true;
                self.sandboxed = r.get("sandbox_enabled").and_then(Value::as_bool).unwrap_or(false);
                let models = r.get("models").and_then(Value::as_array).cloned().unwrap_or_default();
                let resolved = |m: &Value| m.get("resolvedModel").and_then(Value::as_str).map(str::to_owned);
                let model = models
                    .iter()
                    .find(|m| m.get("value").and_then(Value::as_str) == Some("default"))
                    .and_then(resolved)
                    .or_else(|| models.first().and_then(resolved))
                    .unwrap_or_else(|| "claude".into());
                let mode = r.get("current_permission_mode").and_then(Value::as_str);
                vec![event(
                    "",
                    EventMsg::SessionConfigured {
                        session_id: self.session_id.clone(),
                        model,
                        rollout_path: None,
                        history_len: 0,
                        token_usage: None,
                        cwd: self.config.cwd.clone(),
                        approval_policy: deputy_policy(mode),
                        forked_from: None,
                    },
                )]
            }
            Err(e) => {
                self.failed = true;
                vec![Output::Failed(format!("claude refused `initialize`: {e}"))]
            }
        }
    }

    fn on_control_request(&mut self, request_id: String, request: Value) -> Vec<Output> {
        let subtype = request.get("subtype").and_then(Value::as_str).unwrap_or("").to_owned();
        if subtype != "can_use_tool" {
            let msg = format!("Deputy does not answer `{subtype}` requests");
            return vec![Output::Send(wire::control_error(&request_id, &msg))];
        }
        let Ok(ask) = serde_json::from_value::<CanUseTool>(request) else {
            return vec![Output::Send(wire::control_error(&request_id, "a can_use_tool Deputy cannot read"))];
        };
        let key = ask.tool_use_id.clone().unwrap_or_else(|| request_id.clone());
        let turn_id = self.turn_id();
        let kind = self.tool_kind(&ask.tool_name, &ask.input);
        match self.tools.get_mut(&key) {
            Some(t) => {
                t.asked = true;
                t.input = ask.input.clone();
                t.kind = kind.clone();
            }
            None => self.track(
                key.clone(),
                Tool {
                    turn_id: turn_id.clone(),
                    kind: kind.clone(),
                    input: ask.input.clone(),
                    started_at: None,
                    asked: true,
                    begun: false,
                },
            ),
        }
        let reason = ask.decision_reason.clone().or(ask.description.clone());
        let cwd = self.config.cwd.clone();
        let (approval, grant) = match kind {
            ToolKind::Exec { argv, cwd } => (
                Approval::Exec(ExecApprovalParams {
                    call_id: key.clone(),
                    approval_id: None,
                    turn_id: turn_id.clone(),
                    command: argv.clone(),
                    cwd,
                    reason,
                    unsandboxed: !self.sandboxed,
                }),
                Some(Grant::Exec(argv)),
            ),
            ToolKind::Patch { changes } => {
                let outside_workspace: Vec<PathBuf> =
                    changes.keys().filter_map(|p| outside(&cwd, p)).collect();
                let grant =
                    outside_workspace.is_empty().then(|| Grant::Patch(changes.keys().cloned().collect()));
                (
                    Approval::Patch(PatchApprovalParams {
                        call_id: key.clone(),
                        turn_id: turn_id.clone(),
                        changes: FileChange::cap_all(&changes),
                        reason: reason.or(ask.blocked_path.clone()),
                        grant_root: common_parent(&outside_workspace),
                        outside_workspace,
                    }),
                    grant,
                )
            }
            ToolKind::Other => (
                Approval::Other(OtherApproval {
                    call_id: key.clone(),
                    turn_id: turn_id.clone(),
                    tool: ask.tool_name.clone(),
                    input: ask.input.clone(),
                    reason,
                }),
                None,
            ),
        };
        self.approval_order.push(key.clone());
        self.approvals.insert(
            key.clone(),
            PendingApproval {
                request_id,
                tool_use_id: key.clone(),
                turn_id,
                input: ask.input,
                grant: grant.clone(),
            },
        );
        if grant.is_some_and(|g| self.grants.contains(&g)) {
            return self.answer(&key, ReviewDecision::ApprovedForSession);
        }
        vec![Output::Approve(approval)]
    }

    fn on_assistant(&mut self, line: wire::AssistantLine) -> Vec<Output> {
        let sub = self.sub();
        let turn_id = self.turn_id();
        let mut out = Vec::new();
        for block in line.message.content {
            match block {
                // A sub-agent's texts are not this agent's messages.
                ContentBlock::Text { text } if line.parent_tool_use_id.is_none() => {
                    if let Some(t) = &mut self.turn {
                        t.last_message = Some(text.clone());
                    }
                    out.push(event(&sub, EventMsg::AgentMessage { message: text }));
                }
                ContentBlock::Thinking { thinking }
                    if line.parent_tool_use_id.is_none() && !thinking.is_empty() =>
                {
                    out.push(event(&sub, EventMsg::AgentReasoning { text: thinking }));
                }
                ContentBlock::ToolUse { id, name, input } => {
                    let kind = self.tool_kind(&name, &input);
                    if !self.tools.contains_key(&id) {
                        let tool = Tool {
                            turn_id: turn_id.clone(),
                            kind,
                            input,
                            started_at: line.timestamp.clone(),
                            asked: false,
                            begun: false,
                        };
                        self.track(id, tool);
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn on_user(&mut self, line: UserLine) -> Vec<Output> {
        let sub = self.sub();
        let mut out = Vec::new();
        for block in line.message.tool_results() {
            let ContentBlock::ToolResult { tool_use_id, content, is_error } = block else { continue };
            let meta = line
                .tool_result_meta
                .iter()
                .find(|m| m.get("id").and_then(Value::as_str) == Some(&tool_use_id));
            let non_execution = meta.and_then(|m| m.get("non_execution_kind")).and_then(Value::as_str);
            let Some(tool) = self.tools.get(&tool_use_id) else { continue };
            // Asked and not approved, refused by a rule, or refused by the
            // tool's own checks (`<tool_use_error>…`): it never ran.
            let refused = content_text(&content).starts_with("<tool_use_error>");
            if !tool.begun && (tool.asked || non_execution.is_some() || refused) {
                self.untrack(&tool_use_id);
                continue;
            }
            out.extend(self.begin(&tool_use_id));
            let Some(tool) = self.untrack(&tool_use_id) else { continue };
            let text = content_text(&content);
            let is_error = is_error.unwrap_or(false);
            match tool.kind {
                ToolKind::Exec { .. } => {
                    // "stopped while running": the interrupt killed it.
                    let interrupted = non_execution == Some("user-rejected")
                        || line.tool_use_result.get("interrupted").and_then(Value::as_bool) == Some(true);
                    let output = match (&line.tool_use_result, interrupted) {
                        (_, true) => String::new(),
                        (Value::Object(r), false) if r.contains_key("stdout") => {
                            let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                            match (s("stdout"), s("stderr")) {
                                (o, "") => o.to_owned(),
                                ("", e) => e.to_owned(),
                                (o, e) => format!("{o}\n{e}"),
                            }
                        }
                        _ => text.clone(),
                    };
                    let exit_code = if interrupted {
                        137
                    } else if !is_error {
                        0
                    } else {
                        exit_code_of(&text).unwrap_or(1)
                    };
                    let (output, truncated) = cap_output(&output);
                    out.push(event(
                        &sub,
                        EventMsg::ExecCommandEnd {
                            call_id: tool_use_id,
                            turn_id: tool.turn_id,
                            exit_code,
                            duration_ms: duration_ms(tool.started_at.as_deref(), line.timestamp.as_deref()),
                            output,
                            truncated,
                            timed_out: false,
                            interrupted,
                        },
                    ));
                }
                ToolKind::Patch { .. } => out.push(event(
                    &sub,
                    EventMsg::PatchApplyEnd {
                        call_id: tool_use_id,
                        turn_id: tool.turn_id,
                        success: !is_error,
                        stdout: if is_error { String::new() } else { text.clone() },
                        stderr: if is_error { text } else { String::new() },
                    },
                )),
                ToolKind::Other => {}
            }
        }
        out
    }

    fn on_result(&mut self, r: ResultLine) -> Vec<Output> {
        let Some(turn) = self.turn.clone() else { return Vec::new() };
        let mut out = Vec::new();
        // Calls still open: the turn was cut while they ran.
        for id in self.order.clone() {
            let Some(tool) = self.untrack(&id) else { continue };
            if !tool.begun {
                continue;
            }
            out.push(event(
                &turn.sub,
                match tool.kind {
                    ToolKind::Exec { .. } => interrupted_exec_end(id, tool.turn_id, (String::new(), false)),
                    _ => unreported_patch_end(
                        id,
                        tool.turn_id,
                        "the turn ended before claude reported the edit done",
                    ),
                },
            ));
        }
        for key in std::mem::take(&mut self.approval_order) {
            self.approvals.remove(&key);
            out.push(Output::Withdrawn(key));
        }
        if let Some(u) = r.usage {
            let last = usage(&u);
            self.total = self.total.add(&last);
            let window = match &r.model_usage {
                Value::Object(models) => {
                    models.values().find_map(|m| m.get("contextWindow").and_then(Value::as_u64))
                }
                _ => None,
            };
            let info = TokenUsageInfo {
                total_token_usage: self.total,
                last_token_usage: last,
                model_context_window: window,
            };
            out.push(event(&turn.sub, EventMsg::TokenCount { info: Some(info) }));
        }
        if !r.is_error && r.subtype == "success" {
            let last = r.result.or(turn.last_message);
            out.push(event(&turn.sub, EventMsg::TaskComplete { turn_id: turn.id, last_agent_message: last }));
        } else if turn.aborting || r.terminal_reason.as_deref() == Some("aborted_tools") {
            out.push(event(
                &turn.sub,
                EventMsg::TurnAborted { turn_id: turn.id, reason: self.abort_reason() },
            ));
        } else {
            let message = if !r.errors.is_empty() {
                r.errors.join("; ")
            } else {
                r.result.clone().unwrap_or_else(|| format!("claude ended the turn with `{}`", r.subtype))
            };
            out.push(event(&turn.sub, EventMsg::Error { message }));
            out.push(event(
                &turn.sub,
                EventMsg::TaskComplete { turn_id: turn.id, last_agent_message: turn.last_message },
            ));
        }
        self.turn = None;
        if self.shutdown.is_some() {
            out.push(Output::CloseInput);
        }
        out
    }

    fn on_stream_event(&mut self, ev: Value, parent: Option<String>) -> Vec<Output> {
        if parent.is_some() || ev.get("type").and_then(Value::as_str) != Some("content_block_delta") {
            return Vec::new();
        }
        let delta = &ev["delta"];
        let sub = self.sub();
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => match delta.get("text").and_then(Value::as_str) {
                Some(t) => vec![event(&sub, EventMsg::AgentMessageDelta { delta: t.to_owned() })],
                None => Vec::new(),
            },
            Some("thinking_delta") => match delta.get("thinking").and_then(Value::as_str) {
                Some(t) => vec![event(&sub, EventMsg::AgentReasoningDelta { delta: t.to_owned() })],
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }
}

/// The argv Claude's Bash tool runs the command string with (it adds its
/// shell snapshot; the string itself is passed exactly).
fn bash_argv(command: &str) -> Vec<String> {
    vec!["bash".into(), "-c".into(), command.to_owned()]
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// `Exit code 3\n…`: the Bash tool's way of saying how a command failed.
fn exit_code_of(text: &str) -> Option<i32> {
    let rest = text.strip_prefix("Exit code ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn duration_ms(start: Option<&str>, end: Option<&str>) -> u64 {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let parse = |s: Option<&str>| s.and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
    match (parse(start), parse(end)) {
        (Some(a), Some(b)) if b > a => (b - a).whole_milliseconds() as u64,
        _ => 0,
    }
}

fn usage(u: &Usage) -> TokenUsage {
    let input = u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens;
    TokenUsage {
        input_tokens: input,
        cached_input_tokens: u.cache_read_input_tokens,
        output_tokens: u.output_tokens,
        reasoning_output_tokens: u.output_tokens_details.map(|d| d.thinking_tokens).unwrap_or(0),
        total_tokens: input + u.output_tokens,
    }
}

/// Claude's answer for a Deputy decision (DIALECTS.md, "Approvals").
fn permission(d: ReviewDecision, input: &Value) -> Value {
    const DENIED: &str = "The user denied this tool call (through Deputy).";
    match d {
        ReviewDecision::Approved | ReviewDecision::ApprovedForSession => {
            json!({"behavior": "allow", "updatedInput": input})
        }
        ReviewDecision::Denied => json!({"behavior": "deny", "message": DENIED}),
        ReviewDecision::Abort => json!({"behavior": "deny", "message": DENIED, "interrupt": true}),
    }
}

impl ForeignSession for ClaudeSession {
    fn start(&mut self) -> Vec<Output> {
        let id = self.request_id();
        self.init_request = Some(id.clone());
        vec![Output::Send(wire::initialize(&id))]
    }

    fn submit(&mut self, id: &str, op: &Op) -> Result<Vec<Output>, SubmitError> {
        match gate(&mut self.shutdown, self.ready, self.turn.is_some(), id, op)? {
            // On end of input Claude finishes the running turn first: stop it.
            Gate::Shutdown { interrupt: true } => return Ok(self.interrupt()),
            Gate::Shutdown { interrupt: false } => return Ok(vec![Output::CloseInput]),
            Gate::Go => {}
        }
        match op {
            Op::UserInput { items } => {
                let text =
                    items.iter().map(|InputItem::Text { text }| text.as_str()).collect::<Vec<_>>().join("\n");
                self.turns += 1;
                let turn_id = format!("turn-{}", self.turns);
                self.turn = Some(Turn {
                    sub: id.to_owned(),
                    id: turn_id.clone(),
                    aborting: false,
                    last_message: None,
                });
                Ok(vec![
                    Output::Send(wire::user_message(&text)),
                    event(id, EventMsg::TaskStarted { turn_id, model_context_window: None }),
                ])
            }
            Op::Interrupt => Ok(self.interrupt()),
            Op::Shutdown => unreachable!("handled above"),
        }
    }

    fn receive(&mut self, line: &str) -> Result<Vec<Output>, DecodeError> {
        let incoming = Incoming::parse(line)?;
        // A tool call that was not asked about runs once the CLI shows any
        // sign of it (progress, a task notice, its result).
        let mut out = Vec::new();
        let evidence = match &incoming {
            Incoming::Other { tool_use_id: Some(id), .. } => Some(id.clone()),
            Incoming::System(s) => s.tool_use_id.clone(),
            _ => None,
        };
        if let Some(id) = evidence
            && self.tools.get(&id).is_some_and(|t| !t.asked)
        {
            out.extend(self.begin(&id));
        }
        out.extend(match incoming {
            Incoming::ControlResponse { request_id, result } => self.on_control_response(&request_id, result),
            Incoming::ControlRequest { request_id, request } => self.on_control_request(request_id, request),
            Incoming::ControlCancelRequest { request_id } => {
                let key =
                    self.approvals.iter().find(|(_, a)| a.request_id == request_id).map(|(k, _)| k.clone());
                match key {
                    Some(key) => {
                        self.forget_approval(&key);
                        vec![Output::Withdrawn(key)]
                    }
                    None => Vec::new(),
                }
            }
            Incoming::System(s) => {
                if s.subtype == "init"
                    && let Some(id) = s.session_id
                {
                    self.session_id = id;
                }
                Vec::new()
            }
            Incoming::Assistant(a) => self.on_assistant(*a),
            Incoming::User(u) => self.on_user(*u),
            Incoming::Result(r) => self.on_result(*r),
            Incoming::StreamEvent { event, parent_tool_use_id } => {
                self.on_stream_event(event, parent_tool_use_id)
            }
            Incoming::Other { .. } => Vec::new(),
        });
        Ok(out)
    }

    fn answer(&mut self, key: &str, d: ReviewDecision) -> Vec<Output> {
        let Some(a) = self.forget_approval(key) else { return Vec::new() };
        let mut out = vec![Output::Send(wire::control_success(&a.request_id, permission(d, &a.input)))];
        if d == ReviewDecision::ApprovedForSession
            && let Some(g) = a.grant
        {
            self.grants.insert(g);
        }
        if d == ReviewDecision::Abort
            && let Some(t) = &mut self.turn
            && t.id == a.turn_id
        {
            t.aborting = true;
        }
        if d.is_approved() {
            out.extend(self.begin(&a.tool_use_id));
        }
        out
    }

    fn closed(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.ready && !self.failed {
            out.push(Output::Failed("claude exited before its handshake finished".into()));
        }
        for key in std::mem::take(&mut self.approval_order) {
            self.approvals.remove(&key);
            out.push(Output::Withdrawn(key));
        }
        let sub = self.sub();
        for id in std::mem::take(&mut self.order) {
            let Some(tool) = self.tools.remove(&id) else { continue };
            if !tool.begun {
                continue;
            }
            out.push(event(
                &sub,
                match tool.kind {
                    ToolKind::Exec { .. } => interrupted_exec_end(id, tool.turn_id, (String::new(), false)),
                    _ => unreported_patch_end(
                        id,
                        tool.turn_id,
                        "claude exited before it reported the edit done",
                    ),
                },
            ));
        }
        let turn = self.turn.take().map(|turn| (turn.sub, turn.id));
        out.extend(end_of_output("claude", turn, &self.shutdown));
        out
    }

    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }

    fn turn_running(&self) -> bool {
        self.turn.is_some()
    }
}
