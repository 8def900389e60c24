//! Codex app-server ↔ Deputy. The tables are in DIALECTS.md ("Codex").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use deputy_protocol::{
    ApprovalPolicy, EventMsg, ExecApprovalParams, ExecOutputStream, FileChange, InputItem, Op,
    PatchApprovalParams, RequestId, ReviewDecision, SandboxMode, TokenUsage, TokenUsageInfo, TurnAbortReason,
};
use serde_json::{Value, json};

use super::wire::{
    self, ApprovalResponse, ClientInfo, CommandApprovalParams, DeltaNotification, ErrorNotification,
    FileChangeApprovalParams, FileUpdateChange, Incoming, InitializeCapabilities, InitializeParams,
    ItemNotification, ItemStatus, PatchChangeKind, RpcError, ServerRequestResolved, SummaryNotification,
    ThreadIdParams, ThreadItem, ThreadResponse, ThreadResumeParams, ThreadStartParams, TokenUsageBreakdown,
    TokenUsageNotification, TurnHolder, TurnInterruptParams, TurnStartParams, TurnStatus, UserInput,
    WarningNotification, methods,
};
use crate::{
    Approval, DecodeError, ForeignSession, Gate, OtherApproval, Output, OutputBuf, SubmitError, cap_output,
    common_parent, end_of_output, event, gate, interrupted_exec_end, outside, relative_to,
    unreported_patch_end,
};

/// How to start the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct CodexConfig {
    /// The thread's working directory (absolute).
    pub cwd: PathBuf,
    /// `clientInfo.name`: Codex's `originator` header and user agent.
    pub client_name: String,
    /// `clientInfo.version`.
    pub client_version: String,
    /// Resume this thread (`thread/resume`) instead of starting one.
    pub resume: Option<String>,
    /// `approvalPolicy` for the thread (`untrusted`, `on-request`, `never`);
    /// `None`: the user's Codex config decides. See [`approval_policy_name`].
    pub approval_policy: Option<String>,
    /// `sandbox` for the thread (`read-only`, `workspace-write`,
    /// `danger-full-access`); `None`: the user's config. See [`sandbox_name`].
    pub sandbox: Option<String>,
}

impl CodexConfig {
    /// A new thread in `cwd`, everything else from the user's Codex config.
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        CodexConfig {
            cwd: cwd.into(),
            client_name: "deputy".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            resume: None,
            approval_policy: None,
            sandbox: None,
        }
    }
}

/// The Codex `approvalPolicy` closest to a Deputy policy. Codex has no
/// "ask for everything": `untrusted` runs the commands it knows to be
/// read-only without asking, so `ask_always` becomes `untrusted` too.
pub fn approval_policy_name(policy: ApprovalPolicy) -> &'static str {
    match policy {
        ApprovalPolicy::AskAlways | ApprovalPolicy::AskUnlessReadOnly => "untrusted",
        ApprovalPolicy::AskToEscalate => "on-request",
        ApprovalPolicy::NeverAsk => "never",
    }
}

/// The Codex `sandbox` mode for a Deputy sandbox mode.
pub fn sandbox_name(mode: SandboxMode) -> &'static str {
    match mode {
        SandboxMode::WorkspaceWrite => "workspace-write",
        SandboxMode::ReadOnly => "read-only",
        SandboxMode::Off => "danger-full-access",
    }
}

/// Deputy's policy for the thread's `approvalPolicy`, for `session_configured`.
fn deputy_policy(v: &Value) -> ApprovalPolicy {
    match v.as_str() {
        Some("untrusted") => ApprovalPolicy::AskUnlessReadOnly,
        Some("never") => ApprovalPolicy::NeverAsk,
        // on-request, on-failure, granular: the sandbox decides, escalations are asked.
        _ => ApprovalPolicy::AskToEscalate,
    }
}

/// What one of our requests was.
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    Initialize,
    Thread,
    TurnStart,
    Interrupt,
    Clean,
}

#[derive(Debug, Clone)]
struct Turn {
    /// The submission id of the `user_input`.
    sub: String,
    /// Codex's turn id, once `turn/start` answered.
    id: Option<String>,
    started: bool,
    interrupt_wanted: bool,
    interrupt_sent: bool,
    last_message: Option<String>,
    error_reported: bool,
}

#[derive(Debug, Clone)]
enum ItemKind {
    Exec { argv: Vec<String>, cwd: PathBuf, output: OutputBuf },
    Patch { changes: BTreeMap<String, FileChange> },
}

#[derive(Debug, Clone)]
struct Item {
    turn_id: String,
    kind: ItemKind,
    begun: bool,
}

#[derive(Debug, Clone)]
enum Asked {
    Exec { argv: Vec<String>, available: Option<Vec<Value>> },
    Patch { paths: Vec<String>, inside: bool },
    Other,
}

#[derive(Debug, Clone)]
struct PendingApproval {
    request: RequestId,
    item_id: String,
    turn_id: String,
    asked: Asked,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Grant {
    Exec(Vec<String>),
    Patch(Vec<String>),
}

/// One Codex app-server conversation (one thread), without I/O.
#[derive(Debug)]
pub struct CodexSession {
    config: CodexConfig,
    next_id: i64,
    pending: HashMap<i64, Pending>,
    ready: bool,
    failed: bool,
    thread_id: Option<String>,
    /// The thread runs without a sandbox (`dangerFullAccess`).
    full_access: bool,
    turn: Option<Turn>,
    /// Codex turn id → submission id, for events of a turn that is over.
    subs: HashMap<String, String>,
    /// Open items (announced, not ended), by id, and their order.
    items: HashMap<String, Item>,
    order: Vec<String>,
    /// Items Deputy ended at their turn's end (their late `item/completed`,
    /// after Codex's own clean-up, is dropped).
    ended: HashSet<String>,
    approvals: HashMap<String, PendingApproval>,
    approval_order: Vec<String>,
    grants: HashSet<Grant>,
    shutdown: Option<String>,
}

impl CodexSession {
    /// A session not started yet; `start` gives the handshake lines.
    pub fn new(config: CodexConfig) -> Self {
        CodexSession {
            config,
            next_id: 1,
            pending: HashMap::new(),
            ready: false,
            failed: false,
            thread_id: None,
            full_access: false,
            turn: None,
            subs: HashMap::new(),
            items: HashMap::new(),
            order: Vec::new(),
            ended: HashSet::new(),
            approvals: HashMap::new(),
            approval_order: Vec::new(),
            grants: HashSet::new(),
            shutdown: None,
        }
    }

    fn request(&mut self, pending: Pending, method: &str, params: impl serde::Serialize) -> Output {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, pending);
        Output::Send(wire::request(id, method, params))
    }

    fn thread(&self) -> String {
        self.thread_id.clone().unwrap_or_default()
    }

    /// The submission id of a Codex turn.
    fn sub_of(&self, turn_id: &str) -> String {
        if let Some(t) = &self.turn
            && t.id.as_deref() == Some(turn_id)
        {
            return t.sub.clone();
        }
        self.subs.get(turn_id).cloned().unwrap_or_default()
    }

    fn interrupt(&mut self) -> Vec<Output> {
        let Some(turn) = &mut self.turn else { return Vec::new() };
        match turn.id.clone() {
            Some(turn_id) if !turn.interrupt_sent => {
                turn.interrupt_sent = true;
                let params = TurnInterruptParams { thread_id: self.thread(), turn_id };
                vec![self.request(Pending::Interrupt, methods::TURN_INTERRUPT, params)]
            }
            Some(_) => Vec::new(),
            None => {
                turn.interrupt_wanted = true;
                Vec::new()
            }
        }
    }

    fn on_response(&mut self, pending: Pending, result: Result<Value, RpcError>) -> Vec<Output> {
        match (pending, result) {
            (Pending::Initialize, Ok(_)) => {
                let mut out = vec![Output::Send(wire::notification(methods::INITIALIZED))];
                let c = self.config.clone();
                out.push(match c.resume {
                    Some(thread_id) => self.request(
                        Pending::Thread,
                        methods::THREAD_RESUME,
                        ThreadResumeParams {
                            thread_id,
                            cwd: c.cwd,
                            approval_policy: c.approval_policy,
                            sandbox: c.sandbox,
                        },
                    ),
                    None => self.request(
                        Pending::Thread,
                        methods::THREAD_START,
                        ThreadStartParams {
                            cwd: c.cwd,
                            approval_policy: c.approval_policy,
                            sandbox: c.sandbox,
                        },
                    ),
                });
                out
            }
            (Pending::Initialize, Err(e)) => {
                self.fail(format!("codex app-server refused `initialize`: {}", e.message))
            }
            (Pending::Thread, Ok(v)) => match serde_json::from_value::<ThreadResponse>(v) {
                Ok(r) => {
                    self.ready = true;
                    self.thread_id = Some(r.thread.id.clone());
                    self.full_access =
                        r.sandbox.get("type").and_then(Value::as_str) == Some("dangerFullAccess");
                    let msg = EventMsg::SessionConfigured {
                        session_id: r.thread.id,
                        model: r.model.or(r.thread.model).unwrap_or_else(|| "codex".into()),
                        rollout_path: None,
                        history_len: r.thread.turns.len() as u64,
                        token_usage: None,
                        cwd: r.cwd.or(r.thread.cwd).unwrap_or_else(|| self.config.cwd.clone()),
                        approval_policy: deputy_policy(&r.approval_policy),
                        forked_from: r.thread.forked_from_id,
                    };
                    vec![event("", msg)]
                }
                Err(e) => self.fail(format!("codex app-server's thread has an unexpected shape: {e}")),
            },
            (Pending::Thread, Err(e)) => {
                let what = if self.config.resume.is_some() { "thread/resume" } else { "thread/start" };
                self.fail(format!("codex app-server refused `{what}`: {}", e.message))
            }
            (Pending::TurnStart, Ok(v)) => {
                let Some(turn) = &mut self.turn else { return Vec::new() };
                let Ok(TurnHolder { turn: t }) = serde_json::from_value::<TurnHolder>(v) else {
                    return Vec::new();
                };
                turn.id = Some(t.id.clone());
                self.subs.insert(t.id.clone(), turn.sub.clone());
                let mut out = Vec::new();
                if !turn.started {
                    turn.started = true;
                    out.push(event(
                        &turn.sub,
                        EventMsg::TaskStarted { turn_id: t.id, model_context_window: None },
                    ));
                }
                if turn.interrupt_wanted {
                    out.extend(self.interrupt());
                }
                out
            }
            (Pending::TurnStart, Err(e)) => {
                // The turn never started: Deputy's "turn_aborted without task_started".
                let Some(turn) = self.turn.take() else { return Vec::new() };
                let mut out = vec![
                    event(
                        &turn.sub,
                        EventMsg::Error { message: format!("codex refused the turn: {}", e.message) },
                    ),
                    event(
                        &turn.sub,
                        EventMsg::TurnAborted { turn_id: String::new(), reason: self.abort_reason() },
                    ),
                ];
                if self.shutdown.is_some() {
                    out.push(Output::CloseInput);
                }
                out
            }
            // An interrupt that came too late, or a clean with nothing to clean.
            (Pending::Interrupt | Pending::Clean, _) => Vec::new(),
        }
    }

    fn fail(&mut self, message: String) -> Vec<Output> {
        self.failed = true;
        vec![Output::Failed(message)]
    }

    fn abort_reason(&self) -> TurnAbortReason {
        crate::abort_reason(&self.shutdown)
    }

    fn on_notification(&mut self, method: &str, params: Value) -> Vec<Output> {
        fn decode<T: serde::de::DeserializeOwned>(params: Value) -> Option<T> {
            serde_json::from_value(params).ok()
        }
        match method {
            methods::TURN_STARTED => {
                let Some(TurnHolder { turn: t }) = decode(params) else { return Vec::new() };
                let Some(turn) = &mut self.turn else { return Vec::new() };
                if turn.id.is_none() {
                    turn.id = Some(t.id.clone());
                    self.subs.insert(t.id.clone(), turn.sub.clone());
                }
                if turn.id.as_deref() != Some(&t.id) || turn.started {
                    return Vec::new();
                }
                turn.started = true;
                vec![event(&turn.sub, EventMsg::TaskStarted { turn_id: t.id, model_context_window: None })]
            }
            methods::TURN_COMPLETED => match decode::<TurnHolder>(params) {
                Some(TurnHolder { turn: t }) => self.end_turn(&t.id, t.status, t.error.map(|e| e.message)),
                None => Vec::new(),
            },
            methods::ITEM_STARTED => match decode::<ItemNotification>(params) {
                Some(n) => self.item_started(n),
                None => Vec::new(),
            },
            methods::ITEM_COMPLETED => match decode::<ItemNotification>(params) {
                Some(n) => self.item_completed(n),
                None => Vec::new(),
            },
            methods::AGENT_MESSAGE_DELTA => match decode::<DeltaNotification>(params) {
                Some(d) => {
                    vec![event(&self.sub_of(&d.turn_id), EventMsg::AgentMessageDelta { delta: d.delta })]
                }
                None => Vec::new(),
            },
            methods::REASONING_TEXT_DELTA | methods::REASONING_SUMMARY_DELTA => {
                match decode::<DeltaNotification>(params) {
                    Some(d) => {
                        vec![event(
                            &self.sub_of(&d.turn_id),
                            EventMsg::AgentReasoningDelta { delta: d.delta },
                        )]
                    }
                    None => Vec::new(),
                }
            }
            methods::COMMAND_OUTPUT_DELTA => {
                let Some(d) = decode::<DeltaNotification>(params) else { return Vec::new() };
                let sub = self.sub_of(&d.turn_id);
                match self.items.get_mut(&d.item_id) {
                    Some(Item { kind: ItemKind::Exec { output, .. }, begun: true, .. }) => {
                        output.push(&d.delta);
                        vec![event(
                            &sub,
                            EventMsg::ExecCommandOutputDelta {
                                call_id: d.item_id,
                                // Codex merges the two streams (a pty or one pipe).
                                stream: ExecOutputStream::Stdout,
                                chunk: d.delta,
                            },
                        )]
                    }
                    _ => Vec::new(),
                }
            }
            methods::TOKEN_USAGE_UPDATED => {
                let Some(n) = decode::<TokenUsageNotification>(params) else { return Vec::new() };
                let info = TokenUsageInfo {
                    total_token_usage: usage(&n.token_usage.total),
                    last_token_usage: usage(&n.token_usage.last),
                    model_context_window: n.token_usage.model_context_window,
                };
                vec![event(&self.sub_of(&n.turn_id), EventMsg::TokenCount { info: Some(info) })]
            }
            methods::ERROR => {
                let Some(n) = decode::<ErrorNotification>(params) else { return Vec::new() };
                let sub = n.turn_id.as_deref().map(|t| self.sub_of(t)).unwrap_or_default();
                let mut message = n.error.message;
                if let Some(more) = n.error.additional_details.filter(|d| !d.is_empty()) {
                    message = format!("{message} ({more})");
                }
                if n.will_retry {
                    return vec![event(&sub, EventMsg::StreamError { message })];
                }
                if let Some(turn) = &mut self.turn
                    && turn.id.is_some()
                    && turn.id == n.turn_id
                {
                    turn.error_reported = true;
                }
                vec![event(&sub, EventMsg::Error { message })]
            }
            methods::WARNING => match decode::<WarningNotification>(params) {
                Some(w) => vec![event("", EventMsg::Warning { message: w.message })],
                None => Vec::new(),
            },
            methods::CONFIG_WARNING | methods::DEPRECATION_NOTICE => {
                match decode::<SummaryNotification>(params) {
                    Some(w) => {
                        let message = match w.details.filter(|d| !d.is_empty()) {
                            Some(d) => format!("{}: {d}", w.summary),
                            None => w.summary,
                        };
                        vec![event("", EventMsg::Warning { message })]
                    }
                    None => Vec::new(),
                }
            }
            methods::SERVER_REQUEST_RESOLVED => {
                let Some(r) = decode::<ServerRequestResolved>(params) else { return Vec::new() };
                let key =
                    self.approvals.iter().find(|(_, a)| a.request == r.request_id).map(|(k, _)| k.clone());
                match key {
                    Some(key) => {
                        self.forget_approval(&key);
                        vec![Output::Withdrawn(key)]
                    }
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn forget_approval(&mut self, key: &str) -> Option<PendingApproval> {
        self.approval_order.retain(|k| k != key);
        self.approvals.remove(key)
    }

    fn track(&mut self, id: String, item: Item) {
        if !self.items.contains_key(&id) {
            self.order.push(id.clone());
        }
        self.items.insert(id, item);
    }

    fn untrack(&mut self, id: &str) -> Option<Item> {
        self.order.retain(|i| i != id);
        self.items.remove(id)
    }

    fn item_started(&mut self, n: ItemNotification) -> Vec<Output> {
        match n.item {
            ThreadItem::CommandExecution { id, command, cwd, process_id, .. } => {
                let item = Item {
                    turn_id: n.turn_id,
                    kind: ItemKind::Exec { argv: split_command(&command), cwd, output: OutputBuf::default() },
                    begun: false,
                };
                self.track(id.clone(), item);
                // A process id: it runs already (no approval was needed).
                // None: it waits for the approval that follows.
                if process_id.is_some() { self.begin(&id, !self.full_access, true) } else { Vec::new() }
            }
            ThreadItem::FileChange { id, changes, .. } => {
                let changes = self.file_changes(&changes);
                self.track(id, Item { turn_id: n.turn_id, kind: ItemKind::Patch { changes }, begun: false });
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn file_changes(&self, changes: &[FileUpdateChange]) -> BTreeMap<String, FileChange> {
        changes
            .iter()
            .map(|c| {
                let change = match &c.kind {
                    PatchChangeKind::Add => FileChange::add(c.diff.clone()),
                    PatchChangeKind::Delete => FileChange::delete(c.diff.clone()),
                    PatchChangeKind::Update { move_path } => {
                        FileChange::update(c.diff.clone(), move_path.clone())
                    }
                };
                (relative_to(&self.config.cwd, &c.path), change)
            })
            .collect()
    }

    /// The begin event of an item, once. `sandboxed`: it runs in Codex's
    /// sandbox; `auto`: no approval was asked.
    fn begin(&mut self, id: &str, sandboxed: bool, auto: bool) -> Vec<Output> {
        let Some(item) = self.items.get_mut(id) else { return Vec::new() };
        if item.begun {
            return Vec::new();
        }
        item.begun = true;
        let turn_id = item.turn_id.clone();
        let msg = match &item.kind {
            ItemKind::Exec { argv, cwd, .. } => EventMsg::ExecCommandBegin {
                call_id: id.to_owned(),
                turn_id: turn_id.clone(),
                command: argv.clone(),
                cwd: cwd.clone(),
                unsandboxed: !sandboxed,
            },
            ItemKind::Patch { changes } => EventMsg::PatchApplyBegin {
                call_id: id.to_owned(),
                turn_id: turn_id.clone(),
                auto_approved: auto,
                changes: FileChange::cap_all(changes),
            },
        };
        vec![event(&self.sub_of(&turn_id), msg)]
    }

    fn item_completed(&mut self, n: ItemNotification) -> Vec<Output> {
        let sub = self.sub_of(&n.turn_id);
        match n.item {
            ThreadItem::CommandExecution {
                id,
                command,
                cwd,
                status,
                aggregated_output,
                exit_code,
                duration_ms,
                ..
            } => {
                if self.ended.contains(&id) {
                    return Vec::new(); // Deputy ended it at its turn's end.
                }
                if status == ItemStatus::Declined || status == ItemStatus::InProgress {
                    // Declined: asked and not approved, so it has no events.
                    if status == ItemStatus::Declined && !self.items.get(&id).is_some_and(|i| i.begun) {
                        self.untrack(&id);
                        return Vec::new();
                    }
                    if status == ItemStatus::InProgress {
                        return Vec::new();
                    }
                }
                if !self.items.contains_key(&id) {
                    let kind =
                        ItemKind::Exec { argv: split_command(&command), cwd, output: OutputBuf::default() };
                    self.track(id.clone(), Item { turn_id: n.turn_id.clone(), kind, begun: false });
                }
                let mut out = self.begin(&id, !self.full_access, true);
                let Some(Item { turn_id, kind: ItemKind::Exec { output, .. }, .. }) = self.untrack(&id)
                else {
                    return out;
                };
                let (output, truncated) = match aggregated_output {
                    Some(text) => cap_output(&text),
                    None => output.finish(),
                };
                let exit_code = match (status, exit_code) {
                    (_, Some(code)) => code.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                    (ItemStatus::Completed, None) => 0,
                    _ => -1,
                };
                out.push(event(
                    &sub,
                    EventMsg::ExecCommandEnd {
                        call_id: id,
                        turn_id,
                        exit_code,
                        duration_ms: duration_ms.unwrap_or(0),
                        output,
                        truncated,
                        timed_out: false,
                        interrupted: false,
                    },
                ));
                out
            }
            ThreadItem::FileChange { id, changes, status } => {
                if self.ended.contains(&id) || status == ItemStatus::InProgress {
                    return Vec::new();
                }
                if status == ItemStatus::Declined && !self.items.get(&id).is_some_and(|i| i.begun) {
                    self.untrack(&id);
                    return Vec::new();
                }
                if !self.items.contains_key(&id) {
                    let kind = ItemKind::Patch { changes: self.file_changes(&changes) };
                    self.track(id.clone(), Item { turn_id: n.turn_id.clone(), kind, begun: false });
                }
                let mut out = self.begin(&id, true, true);
                let turn_id = self.untrack(&id).map(|i| i.turn_id).unwrap_or(n.turn_id);
                let success = status == ItemStatus::Completed;
                out.push(event(
                    &sub,
                    EventMsg::PatchApplyEnd {
                        call_id: id,
                        turn_id,
                        success,
                        stdout: String::new(),
                        stderr: if success {
                            String::new()
                        } else {
                            "codex could not apply the patch".into()
                        },
                    },
                ));
                out
            }
            ThreadItem::AgentMessage { text, .. } => {
                if let Some(turn) = &mut self.turn
                    && turn.id.as_deref() == Some(&n.turn_id)
                {
                    turn.last_message = Some(text.clone());
                }
                vec![event(&sub, EventMsg::AgentMessage { message: text })]
            }
            ThreadItem::Reasoning { summary, content, .. } => {
                let parts = if summary.is_empty() { content } else { summary };
                let text = parts.join("\n");
                if text.is_empty() {
                    Vec::new()
                } else {
                    vec![event(&sub, EventMsg::AgentReasoning { text })]
                }
            }
            ThreadItem::Other => Vec::new(),
        }
    }

    /// `turn/completed`: every open item of the turn ends first (Codex
    /// reports an interrupted command only later, or never), every pending
    /// approval of it is withdrawn, then the turn's end event; the commands
    /// Codex left running are cleaned.
    fn end_turn(&mut self, turn_id: &str, status: TurnStatus, error: Option<String>) -> Vec<Output> {
        let current = self.turn.as_ref().is_some_and(|t| t.id.as_deref() == Some(turn_id));
        if !current && !self.subs.contains_key(turn_id) {
            return Vec::new();
        }
        let sub = self.sub_of(turn_id);
        let mut out = Vec::new();
        let mut running_commands = false;
        if self.ended.len() > 4096 {
            self.ended.clear(); // bounded; late completions come within milliseconds
        }
        for id in self.order.clone() {
            let Some(item) = self.items.get(&id) else { continue };
            if item.turn_id != turn_id {
                continue;
            }
            let item = self.untrack(&id).expect("present");
            if !item.begun {
                continue; // announced, never approved: no events
            }
            self.ended.insert(id.clone());
            out.push(event(
                &sub,
                match item.kind {
                    ItemKind::Exec { output, .. } => {
                        running_commands = true;
                        interrupted_exec_end(id, turn_id.to_owned(), output.finish())
                    }
                    ItemKind::Patch { .. } => unreported_patch_end(
                        id,
                        turn_id.to_owned(),
                        "the turn ended before codex reported the patch applied",
                    ),
                },
            ));
        }
        for key in self.approval_order.clone() {
            if self.approvals.get(&key).is_some_and(|a| a.turn_id == turn_id) {
                self.forget_approval(&key);
                out.push(Output::Withdrawn(key));
            }
        }
        let (last_message, error_reported) = match &self.turn {
            Some(t) if current => (t.last_message.clone(), t.error_reported),
            _ => (None, false),
        };
        let turn_id = turn_id.to_owned();
        match status {
            TurnStatus::Interrupted => {
                out.push(event(&sub, EventMsg::TurnAborted { turn_id, reason: self.abort_reason() }));
            }
            TurnStatus::Failed => {
                if !error_reported {
                    let message = error.unwrap_or_else(|| "the turn failed".into());
                    out.push(event(&sub, EventMsg::Error { message }));
                }
                out.push(event(&sub, EventMsg::TaskComplete { turn_id, last_agent_message: last_message }));
            }
            TurnStatus::Completed | TurnStatus::InProgress | TurnStatus::Unknown => {
                out.push(event(&sub, EventMsg::TaskComplete { turn_id, last_agent_message: last_message }));
            }
        }
        if current {
            self.turn = None;
        }
        if running_commands {
            // An interrupt leaves commands running as "background
            // terminals"; no command outlives its turn under Deputy.
            let params = ThreadIdParams { thread_id: self.thread() };
            out.push(self.request(Pending::Clean, methods::BACKGROUND_TERMINALS_CLEAN, params));
        }
        if self.shutdown.is_some() && self.turn.is_none() {
            out.push(Output::CloseInput);
        }
        out
    }

    fn on_request(&mut self, id: RequestId, method: &str, params: Value) -> Vec<Output> {
        match method {
            methods::COMMAND_APPROVAL => {
                match serde_json::from_value::<CommandApprovalParams>(params.clone()) {
                    Ok(p) => self.command_approval(id, p, params),
                    Err(e) => {
                        vec![Output::Send(wire::error_response(&id, -32602, &format!("invalid params: {e}")))]
                    }
                }
            }
            methods::FILE_CHANGE_APPROVAL => match serde_json::from_value::<FileChangeApprovalParams>(params)
            {
                Ok(p) => self.patch_approval(id, p),
                Err(e) => {
                    vec![Output::Send(wire::error_response(&id, -32602, &format!("invalid params: {e}")))]
                }
            },
            other => vec![Output::Send(wire::error_response(
                &id,
                wire::METHOD_NOT_FOUND,
                &format!("Deputy does not answer `{other}`"),
            ))],
        }
    }

    fn command_approval(&mut self, request: RequestId, p: CommandApprovalParams, raw: Value) -> Vec<Output> {
        let key = p.approval_id.clone().unwrap_or_else(|| p.item_id.clone());
        if p.kind.as_deref() == Some("writeStdin") {
            let approval = OtherApproval {
                call_id: p.item_id.clone(),
                turn_id: p.turn_id.clone(),
                tool: "write_stdin".into(),
                input: raw,
                reason: p.reason,
            };
            self.approval_order.push(key.clone());
            self.approvals.insert(
                key,
                PendingApproval { request, item_id: p.item_id, turn_id: p.turn_id, asked: Asked::Other },
            );
            return vec![Output::Approve(Approval::Other(approval))];
        }
        let (item_argv, item_cwd) = match self.items.get(&p.item_id) {
            Some(Item { kind: ItemKind::Exec { argv, cwd, .. }, .. }) => {
                (Some(argv.clone()), Some(cwd.clone()))
            }
            _ => (None, None),
        };
        let argv = p.command.as_deref().map(split_command).or(item_argv).unwrap_or_default();
        let cwd = p.cwd.clone().or(item_cwd).unwrap_or_else(|| self.config.cwd.clone());
        if !self.items.contains_key(&p.item_id) {
            let kind = ItemKind::Exec { argv: argv.clone(), cwd: cwd.clone(), output: OutputBuf::default() };
            self.track(p.item_id.clone(), Item { turn_id: p.turn_id.clone(), kind, begun: false });
        }
        let mut reason = p.reason.clone();
        if let Some(net) = &p.network_approval_context {
            let host = net.get("host").and_then(Value::as_str).unwrap_or("?");
            let proto = net.get("protocol").and_then(Value::as_str).unwrap_or("?");
            let net = format!("network access to {host} ({proto})");
            reason = Some(match reason {
                Some(r) => format!("{net}: {r}"),
                None => net,
            });
        }
        self.approval_order.push(key.clone());
        self.approvals.insert(
            key.clone(),
            PendingApproval {
                request,
                item_id: p.item_id.clone(),
                turn_id: p.turn_id.clone(),
                asked: Asked::Exec { argv: argv.clone(), available: p.available_decisions },
            },
        );
        if self.grants.contains(&Grant::Exec(argv.clone())) {
            return self.answer(&key, ReviewDecision::ApprovedForSession);
        }
        vec![Output::Approve(Approval::Exec(ExecApprovalParams {
            call_id: p.item_id,
            approval_id: p.approval_id,
            turn_id: p.turn_id,
            command: argv,
            cwd,
            reason,
            // Codex runs a command the user approved outside its sandbox.
            unsandboxed: true,
        }))]
    }

    fn patch_approval(&mut self, request: RequestId, p: FileChangeApprovalParams) -> Vec<Output> {
        let changes = match self.items.get(&p.item_id) {
            Some(Item { kind: ItemKind::Patch { changes }, .. }) => changes.clone(),
            _ => BTreeMap::new(),
        };
        if !self.items.contains_key(&p.item_id) {
            let kind = ItemKind::Patch { changes: changes.clone() };
            self.track(p.item_id.clone(), Item { turn_id: p.turn_id.clone(), kind, begun: false });
        }
        let cwd = self.config.cwd.clone();
        let mut outside_workspace: Vec<PathBuf> = Vec::new();
        for (path, change) in &changes {
            outside_workspace.extend(outside(&cwd, path));
            if let FileChange::Update { move_path: Some(to), .. } = change {
                outside_workspace.extend(outside(&cwd, &to.to_string_lossy()));
            }
        }
        let grant_root = p.grant_root.clone().or_else(|| common_parent(&outside_workspace));
        let paths: Vec<String> = changes.keys().cloned().collect();
        let inside = outside_workspace.is_empty();
        let reason = match (&p.reason, changes.is_empty()) {
            (r, false) => r.clone(),
            (Some(r), true) => Some(format!("{r} (codex did not announce the changes)")),
            (None, true) => Some("codex did not announce the changes".into()),
        };
        let key = p.item_id.clone();
        self.approval_order.push(key.clone());
        self.approvals.insert(
            key.clone(),
            PendingApproval {
                request,
                item_id: p.item_id.clone(),
                turn_id: p.turn_id.clone(),
                asked: Asked::Patch { paths: paths.clone(), inside },
            },
        );
        if inside && !paths.is_empty() && self.grants.contains(&Grant::Patch(paths)) {
            return self.answer(&key, ReviewDecision::ApprovedForSession);
        }
        vec![Output::Approve(Approval::Patch(PatchApprovalParams {
            call_id: p.item_id,
            turn_id: p.turn_id,
            changes: FileChange::cap_all(&changes),
            reason,
            outside_workspace,
            grant_root,
        }))]
    }
}

/// Codex's decision for a Deputy decision (DIALECTS.md, "Approvals").
fn decision(asked: &Asked, d: ReviewDecision) -> Value {
    let offered = |name: &str| match asked {
        Asked::Exec { available: Some(list), .. } => list.iter().any(|v| v.as_str() == Some(name)),
        _ => true,
    };
    let name = match d {
        ReviewDecision::Approved => "accept",
        ReviewDecision::ApprovedForSession if matches!(asked, Asked::Other) => "accept",
        ReviewDecision::ApprovedForSession if offered("acceptForSession") => "acceptForSession",
        // Not offered: approve this once; the mapper keeps the grant.
        ReviewDecision::ApprovedForSession => "accept",
        ReviewDecision::Denied => "decline",
        ReviewDecision::Abort => "cancel",
    };
    json!(name)
}

fn usage(b: &TokenUsageBreakdown) -> TokenUsage {
    TokenUsage {
        input_tokens: b.input_tokens,
        cached_input_tokens: b.cached_input_tokens,
        output_tokens: b.output_tokens,
        reasoning_output_tokens: b.reasoning_output_tokens,
        total_tokens: b.total_tokens,
    }
}

/// Codex's command string as the argv it runs: Codex joins the argv with
/// POSIX quoting (`/bin/bash -lc 'echo hi'`), so splitting it back is exact.
/// A string that does not split (unbalanced quotes) is kept whole.
pub(crate) fn split_command(command: &str) -> Vec<String> {
    shlex::split(command).filter(|v| !v.is_empty()).unwrap_or_else(|| vec![command.to_owned()])
}

impl ForeignSession for CodexSession {
    fn start(&mut self) -> Vec<Output> {
        let params = InitializeParams {
            client_info: ClientInfo {
                name: self.config.client_name.clone(),
                title: None,
                version: self.config.client_version.clone(),
            },
            capabilities: InitializeCapabilities { experimental_api: true },
        };
        vec![self.request(Pending::Initialize, methods::INITIALIZE, params)]
    }

    fn submit(&mut self, id: &str, op: &Op) -> Result<Vec<Output>, SubmitError> {
        match gate(&mut self.shutdown, self.ready, self.turn.is_some(), id, op)? {
            Gate::Shutdown { interrupt: true } => return Ok(self.interrupt()),
            Gate::Shutdown { interrupt: false } => return Ok(vec![Output::CloseInput]),
            Gate::Go => {}
        }
        match op {
            Op::UserInput { items } => {
                let input = items
                    .iter()
                    .map(|InputItem::Text { text }| UserInput::Text {
                        text: text.clone(),
                        text_elements: vec![],
                    })
                    .collect();
                self.turn = Some(Turn {
                    sub: id.to_owned(),
                    id: None,
                    started: false,
                    interrupt_wanted: false,
                    interrupt_sent: false,
                    last_message: None,
                    error_reported: false,
                });
                let params = TurnStartParams { thread_id: self.thread(), input };
                Ok(vec![self.request(Pending::TurnStart, methods::TURN_START, params)])
            }
            Op::Interrupt => Ok(self.interrupt()),
            Op::Shutdown => unreachable!("handled above"),
        }
    }

    fn receive(&mut self, line: &str) -> Result<Vec<Output>, DecodeError> {
        Ok(match Incoming::parse(line)? {
            Incoming::Response { id: RequestId::Integer(n), result } => match self.pending.remove(&n) {
                Some(p) => self.on_response(p, result),
                None => Vec::new(),
            },
            Incoming::Response { .. } => Vec::new(),
            Incoming::Request { id, method, params } => self.on_request(id, &method, params),
            Incoming::Notification { method, params } => self.on_notification(&method, params),
        })
    }

    fn answer(&mut self, key: &str, d: ReviewDecision) -> Vec<Output> {
        let Some(a) = self.forget_approval(key) else { return Vec::new() };
        let mut out = vec![Output::Send(wire::response(
            &a.request,
            ApprovalResponse { decision: decision(&a.asked, d) },
        ))];
        if d == ReviewDecision::ApprovedForSession {
            match &a.asked {
                Asked::Exec { argv, .. } => {
                    self.grants.insert(Grant::Exec(argv.clone()));
                }
                Asked::Patch { paths, inside: true } if !paths.is_empty() => {
                    self.grants.insert(Grant::Patch(paths.clone()));
                }
                _ => {}
            }
        }
        if d.is_approved() {
            match a.asked {
                Asked::Exec { .. } => out.extend(self.begin(&a.item_id, false, false)),
                Asked::Patch { .. } => out.extend(self.begin(&a.item_id, true, false)),
                Asked::Other => {}
            }
        }
        out
    }

    fn closed(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if !self.ready && !self.failed {
            out.push(Output::Failed("codex app-server exited before its handshake finished".into()));
        }
        for key in std::mem::take(&mut self.approval_order) {
            self.approvals.remove(&key);
            out.push(Output::Withdrawn(key));
        }
        for id in std::mem::take(&mut self.order) {
            let Some(item) = self.items.remove(&id) else { continue };
            if !item.begun {
                continue;
            }
            let sub = self.sub_of(&item.turn_id);
            out.push(event(
                &sub,
                match item.kind {
                    ItemKind::Exec { output, .. } => interrupted_exec_end(id, item.turn_id, output.finish()),
                    ItemKind::Patch { .. } => unreported_patch_end(
                        id,
                        item.turn_id,
                        "codex app-server exited before it reported the patch applied",
                    ),
                },
            ));
        }
        let turn = self.turn.take().map(|turn| (turn.sub, turn.id.unwrap_or_default()));
        out.extend(end_of_output("codex app-server", turn, &self.shutdown));
        out
    }

    fn session_id(&self) -> Option<&str> {
        self.thread_id.as_deref()
    }

    fn turn_running(&self) -> bool {
        self.turn.is_some()
    }
}
