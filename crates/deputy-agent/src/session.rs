//! The session: its settings and state, how it starts (`session/start`), and
//! the actor task that serializes submissions and turn ends.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deputy_protocol::error_codes as codes;
use deputy_protocol::{ApprovalResult, ReviewDecision};
use deputy_protocol::{
    EventMsg, HistorySource, InitialHistory, InputItem, OnBusy, Op, RolloutItem, SessionMeta,
    SessionStartParams, SessionStartResult, TokenUsage, TokenUsageInfo, TurnAbortReason, methods,
};
use deputy_rpc::{CancellationToken, ErrorObject, Peer, RequestOptions, RpcError};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::acp::{AcpFace, ApprovalRequest, Face};
use crate::approval::Approvals;
use crate::config::AgentConfig;
use crate::config::Protocol;
use crate::model::openai::{OpenAiModel, OpenAiSettings, PREFIX as OPENAI_PREFIX};
use crate::model::script::{Scenario, ScriptBrain};
use crate::model::shell::ShellBrain;
use crate::model::{Model, Prompt};
use crate::patch::{WritableRoots, resolve_path};
use crate::rollout::{self, LoadedRollout, RolloutWriter};
use crate::turn::{Turn, TurnOutcome};
use crate::util::{now_rfc3339, uuid_v7};

/// Set once a scenario played `hang`: from then on nothing is answered and the
/// process never exits on its own.
pub(crate) static HUNG: AtomicBool = AtomicBool::new(false);

pub(crate) fn is_hung() -> bool {
    HUNG.load(Ordering::Acquire)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the serve loop is asked to do by the session.
#[derive(Debug)]
pub(crate) enum ExitRequest {
    /// `shutdown_complete` was queued: flush and exit 0.
    Shutdown,
    /// A scenario's `exit` step: flush (best effort) and exit with this code.
    Crash(i32),
}

/// The `event` notification's params, borrowed (serialized once, no clone).
#[derive(Serialize)]
struct EventRef<'a> {
    id: &'a str,
    msg: &'a EventMsg,
}

/// One session: settings, conversation, rollout, grants.
pub(crate) struct Session {
    pub id: String,
    pub cwd: PathBuf,
    pub model: Box<dyn Model>,
    pub exec_timeout: Duration,
    pub keep_secret_env: bool,
    /// The most model calls one turn may make.
    pub max_model_calls: u32,
    pub approvals: Mutex<Approvals>,
    /// Where patches may write, and (with the scratch dirs) where sandboxed
    /// commands may: one rule set. Empty under `read_only`.
    pub roots: Mutex<WritableRoots>,
    /// How commands are confined.
    pub sandbox: crate::sandbox::SandboxPolicy,
    pub peer: Peer,
    /// Which protocol the session's events and approvals are written in.
    pub face: Face,
    pub exit_tx: mpsc::UnboundedSender<ExitRequest>,
    /// What a `user_input` does while a turn runs.
    pub on_busy: OnBusy,
    rollout: Mutex<Option<RolloutWriter>>,
    history: Mutex<Vec<RolloutItem>>,
    token_usage: Mutex<Option<TokenUsageInfo>>,
    /// Rollout failures already reported, by operation and error kind: each
    /// kind is told to the host once, not once per item.
    rollout_failures: Mutex<HashSet<(&'static str, std::io::ErrorKind)>>,
    /// `warning` messages waiting to be sent before the next event.
    pending_warnings: Mutex<Vec<String>>,
    has_pending_warnings: AtomicBool,
}

impl Session {
    /// Sends one event. Fails only when the connection is closed.
    /// The event is serialized once, borrowed; the call waits for room in
    /// the writer's queue (backpressure). An event over the host's line
    /// limit is not sent: a `warning` naming it is sent in its place, so the
    /// host learns of the gap instead of killing the agent for a line it
    /// cannot read.
    pub async fn emit(&self, id: &str, msg: &EventMsg) -> bool {
        if let Face::Acp(acp) = &self.face {
            return acp.emit(self.take_warnings(), msg).await;
        }
        if self.has_pending_warnings.load(Ordering::Acquire) {
            self.has_pending_warnings.store(false, Ordering::Release);
            let warnings = std::mem::take(&mut *lock(&self.pending_warnings));
            for message in warnings {
                let warning = EventMsg::Warning { message };
                let _ = self.peer.notify(methods::EVENT, EventRef { id, msg: &warning }).await;
            }
        }
        match self.peer.notify(methods::EVENT, EventRef { id, msg }).await {
            Ok(()) => true,
            Err(RpcError::MessageTooLarge { bytes, limit, .. }) => {
                let message = format!(
                    "a `{}` event of {bytes} bytes was not sent: it is over the host's line limit of {limit} bytes",
                    msg.kind()
                );
                let warning = EventMsg::Warning { message };
                self.peer.notify(methods::EVENT, EventRef { id, msg: &warning }).await.is_ok()
            }
            Err(_) => false,
        }
    }

    /// The `warning`s waiting to be sent, taken.
    fn take_warnings(&self) -> Vec<String> {
        if !self.has_pending_warnings.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *lock(&self.pending_warnings))
    }

    /// Asks the client whether a command may run or a patch be applied, in
    /// the session's protocol: an `approval/*` request (native) or a
    /// `tool_call` then `session/request_permission` (ACP). Withdrawn when
    /// `cancel` fires or the future is dropped.
    pub fn ask_approval(
        &self,
        request: ApprovalRequest,
        cancel: CancellationToken,
    ) -> futures::future::BoxFuture<'static, Result<ReviewDecision, RpcError>> {
        let options = RequestOptions::default().cancel(cancel);
        match &self.face {
            Face::Native => {
                let fut: futures::future::BoxFuture<'static, _> = match request {
                    ApprovalRequest::Exec(p) => Box::pin(self.peer.request_with::<_, ApprovalResult>(
                        methods::APPROVAL_EXEC,
                        p,
                        options,
                    )),
                    ApprovalRequest::Patch(p) => Box::pin(self.peer.request_with::<_, ApprovalResult>(
                        methods::APPROVAL_PATCH,
                        p,
                        options,
                    )),
                };
                Box::pin(async move { fut.await.map(|r| r.decision) })
            }
            Face::Acp(acp) => Box::pin(Arc::clone(acp).ask(request, options)),
        }
    }

    /// A patch about to be asked for or applied: the ACP face keeps its
    /// files' full texts for the `diff` it shows.
    pub fn note_patch(&self, call_id: &str, prepared: &crate::patch::PreparedPatch) {
        if let Face::Acp(acp) = &self.face {
            acp.note_patch(call_id, prepared);
        }
    }

    /// The turn reached its cap of model calls (ACP: `max_turn_requests`).
    pub fn note_capped(&self, turn_id: &str) {
        if let Face::Acp(acp) = &self.face {
            acp.note_capped(turn_id);
        }
    }

    /// The conversation so far (for a `session/load` replay).
    pub fn history(&self) -> Vec<RolloutItem> {
        lock(&self.history).clone()
    }

    /// Appends `item` to the rollout and the conversation history.
    pub fn record(&self, item: RolloutItem) {
        self.persist(&item);
        lock(&self.history).push(item);
    }

    /// Appends `item` to the rollout only. A failure is logged and, once per
    /// kind of failure, queued as a `warning` event (sent before the next
    /// event): a disk that fills up must not go unnoticed.
    pub fn persist(&self, item: &RolloutItem) {
        let failed = match lock(&self.rollout).as_mut() {
            Some(w) => w.write(item).err().map(|e| (e, w.path().to_path_buf())),
            None => None,
        };
        if let Some((e, path)) = failed {
            self.rollout_failed("write", &e, &path);
        }
    }

    fn rollout_failed(&self, op: &'static str, e: &std::io::Error, path: &Path) {
        if !lock(&self.rollout_failures).insert((op, e.kind())) {
            return;
        }
        warn!(error = %e, path = %path.display(), "cannot {op} the rollout");
        lock(&self.pending_warnings).push(format!(
            "cannot {op} the rollout {}: {e}; this session may not be fully saved (resume may miss the latest items)",
            path.display()
        ));
        self.has_pending_warnings.store(true, Ordering::Release);
    }

    /// `fsync`s the rollout (on a blocking thread).
    pub async fn sync_rollout(&self) {
        let handle = lock(&self.rollout).as_ref().map(|w| (w.sync_handle(), w.path().to_path_buf()));
        if let Some((Ok(file), path)) = handle {
            let r = tokio::task::spawn_blocking(move || file.sync_data()).await;
            if let Ok(Err(e)) = r {
                self.rollout_failed("sync", &e, &path);
            }
        }
    }

    pub fn prompt(&self, turn_id: &str, turn_index: u64) -> Prompt {
        Prompt { turn_id: turn_id.to_owned(), turn_index, history: lock(&self.history).clone() }
    }

    /// Adds a model call's usage; returns the session's usage info.
    pub fn add_usage(&self, last: TokenUsage) -> TokenUsageInfo {
        let mut u = lock(&self.token_usage);
        let total = u.map(|i| i.total_token_usage).unwrap_or_default().add(&last);
        let info = TokenUsageInfo {
            total_token_usage: total,
            last_token_usage: last,
            model_context_window: self.model.context_window(),
        };
        *u = Some(info);
        info
    }
}

fn err(code: i64, message: impl Into<String>) -> ErrorObject {
    ErrorObject::new(code, message)
}

/// Builds the brain named by the params (or the agent's default).
fn make_model(params: &SessionStartParams, config: &AgentConfig) -> Result<Box<dyn Model>, ErrorObject> {
    let name = params.model.as_ref().map(|m| m.name.as_str()).unwrap_or(&config.default_model);
    match name {
        "shell" => Ok(Box::new(ShellBrain)),
        "script" => {
            let scenario = params
                .model
                .as_ref()
                .and_then(|m| m.scenario.clone())
                .or_else(|| config.default_scenario.clone())
                .ok_or_else(|| {
                    err(
                        codes::MODEL_UNAVAILABLE,
                        "the script model needs a scenario file (model.scenario or --scenario)",
                    )
                })?;
            let scenario = if scenario.is_absolute() { scenario } else { params.cwd.join(scenario) };
            let s = Scenario::load(&scenario)
                .map_err(|e| err(codes::MODEL_UNAVAILABLE, format!("bad scenario: {e}")))?;
            Ok(Box::new(ScriptBrain::new(s)))
        }
        other if other.starts_with(OPENAI_PREFIX) => {
            let selection = params.model.as_ref();
            let settings = OpenAiSettings {
                base_url: selection
                    .and_then(|m| m.base_url.clone())
                    .or_else(|| config.openai.base_url.clone()),
                api_key_env: selection
                    .and_then(|m| m.api_key_env.clone())
                    .or_else(|| config.openai.api_key_env.clone()),
                ..config.openai.clone()
            };
            let model = OpenAiModel::new(other, params.cwd.clone(), settings)
                .map_err(|e| err(codes::MODEL_UNAVAILABLE, e))?;
            Ok(Box::new(model))
        }
        other => Err(err(
            codes::MODEL_UNAVAILABLE,
            format!("unknown model `{other}`; this agent has: {}", crate::MODELS.join(", ")),
        )),
    }
}

fn load_history(source: &HistorySource, home: &Path, resumed: bool) -> Result<LoadedRollout, ErrorObject> {
    let unavailable = |m: String| err(codes::HISTORY_UNAVAILABLE, m);
    match source {
        HistorySource::RolloutPath(p) => {
            rollout::load(p).map_err(|e| unavailable(format!("cannot read the rollout {}: {e}", p.display())))
        }
        HistorySource::SessionId(id) => {
            let path = rollout::find_by_id(home, id)
                .map_err(|e| unavailable(format!("cannot search {}: {e}", home.display())))?
                .ok_or_else(|| unavailable(format!("no session `{id}` under {}", home.display())))?;
            rollout::load(&path)
                .map_err(|e| unavailable(format!("cannot read the rollout {}: {e}", path.display())))
        }
        HistorySource::Items(items) if !resumed => Ok(LoadedRollout::from_items(items.clone())),
        HistorySource::Items(_) => Err(unavailable(
            "a resumed history needs a session_id or a rollout_path (items only fork)".into(),
        )),
    }
}

/// Everything `session/start` produces.
pub(crate) struct Started {
    pub session: Arc<Session>,
    pub configured: EventMsg,
    pub result: SessionStartResult,
}

/// Validates the params, builds the brain, loads the history, opens the
/// rollout. Blocking file I/O, all of it short.
pub(crate) fn start(
    params: SessionStartParams,
    config: &AgentConfig,
    peer: Peer,
    exit_tx: mpsc::UnboundedSender<ExitRequest>,
    protocol: Protocol,
) -> Result<Started, ErrorObject> {
    if !params.cwd.is_absolute() {
        return Err(ErrorObject::invalid_params(format!(
            "cwd must be absolute, got {}",
            params.cwd.display()
        )));
    }
    if !params.cwd.is_dir() {
        return Err(ErrorObject::invalid_params(format!("cwd {} is not a directory", params.cwd.display())));
    }
    let cwd = resolve_path(Path::new("/"), &params.cwd.to_string_lossy());
    let (sandbox, sandbox_warning) = crate::sandbox::SandboxPolicy::resolve(
        params.sandbox.unwrap_or_default(),
        params.network,
        params.sandbox_best_effort.unwrap_or(params.sandbox.is_none()),
    )
    .map_err(|m| {
        err(codes::SANDBOX_UNAVAILABLE, m)
            .with_data(serde_json::to_value(crate::sandbox::support()).unwrap_or(serde_json::Value::Null))
    })?;
    let model = make_model(&params, config)?;
    let model_name = model.name().to_owned();

    let (loaded, resumed) = match &params.initial_history {
        InitialHistory::New => (None, false),
        InitialHistory::Resumed { from } => (Some(load_history(from, &config.home, true)?), true),
        InitialHistory::Forked { from } => (Some(load_history(from, &config.home, false)?), false),
    };
    let cannot_write = |e: std::io::Error| {
        err(codes::INTERNAL_ERROR, format!("cannot write the rollout under {}: {e}", config.home.display()))
    };

    let (session_id, writer, forked_from, items) = match (loaded, resumed) {
        (None, _) => {
            let id = uuid_v7();
            let w = RolloutWriter::create(&config.home, &id).map_err(cannot_write)?;
            (id, w, None, Vec::new())
        }
        (Some(loaded), true) => {
            let Some(meta) = loaded.meta.as_ref() else {
                return Err(err(codes::HISTORY_UNAVAILABLE, "the rollout has no session_meta line"));
            };
            let id = meta.session_id.clone();
            let w = RolloutWriter::append_to(&loaded)
                .map_err(|e| err(codes::HISTORY_UNAVAILABLE, format!("cannot append to the rollout: {e}")))?;
            (id, w, None, loaded.items)
        }
        (Some(loaded), false) => {
            let id = uuid_v7();
            let w = RolloutWriter::create(&config.home, &id).map_err(cannot_write)?;
            (id, w, loaded.meta.map(|m| m.session_id), loaded.items)
        }
    };
    let mut writer = writer;
    if !resumed {
        let meta = RolloutItem::SessionMeta(SessionMeta {
            session_id: session_id.clone(),
            created_at: now_rfc3339(),
            cwd: cwd.clone(),
            source: params.source.clone(),
            model: model_name.clone(),
            approval_policy: params.approval_policy,
            forked_from: forked_from.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        writer.write(&meta).map_err(cannot_write)?;
        for item in &items {
            writer.write(item).map_err(cannot_write)?;
        }
    }
    let token_usage = rollout::last_token_usage(&items);
    let rollout_path = writer.path().to_path_buf();
    let history_len = items.len() as u64;

    // One boundary for patches and commands: under `read_only` the
    // workspace has no writable root at all (every patch is "outside").
    let mut roots = WritableRoots::default();
    if !(sandbox.mode == deputy_protocol::SandboxMode::ReadOnly) {
        roots.add(cwd.clone());
        for r in &params.writable_roots {
            roots.add(resolve_path(&cwd, &r.to_string_lossy()));
        }
    }
    let has_warning = sandbox_warning.is_some();
    if let Some(w) = &sandbox_warning {
        warn!("{w}");
    }
    let face = match protocol {
        Protocol::Native => Face::Native,
        Protocol::Acp => Face::Acp(Arc::new(AcpFace::new(session_id.clone(), cwd.clone(), peer.clone()))),
    };
    let session = Arc::new(Session {
        face,
        id: session_id.clone(),
        cwd: cwd.clone(),
        model,
        exec_timeout: params
            .exec
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(crate::exec::DEFAULT_TIMEOUT),
        keep_secret_env: params.exec.keep_secret_env,
        max_model_calls: config.max_model_calls.max(1),
        approvals: Mutex::new(Approvals::new(params.approval_policy).sandboxed(sandbox.is_enforced())),
        roots: Mutex::new(roots),
        sandbox,
        peer,
        exit_tx,
        on_busy: params.on_busy,
        rollout: Mutex::new(Some(writer)),
        history: Mutex::new(items),
        token_usage: Mutex::new(token_usage),
        rollout_failures: Mutex::new(HashSet::new()),
        pending_warnings: Mutex::new(sandbox_warning.into_iter().collect()),
        has_pending_warnings: AtomicBool::new(has_warning),
    });
    let configured = EventMsg::SessionConfigured {
        session_id: session_id.clone(),
        model: model_name,
        rollout_path: Some(rollout_path.clone()),
        history_len,
        token_usage,
        cwd,
        approval_policy: params.approval_policy,
        forked_from,
    };
    let result = SessionStartResult { session_id, rollout_path: Some(rollout_path) };
    Ok(Started { session, configured, result })
}

// ---------------------------------------------------------------------------
// The actor.

/// A message to the session actor.
pub(crate) enum ActorCmd {
    Submit {
        id: String,
        op: Op,
        reply: oneshot::Sender<Result<(), ErrorObject>>,
    },
    /// End of input (every request read before it was handled): end like
    /// `shutdown` — abort the turn, sync the rollout, write
    /// `shutdown_complete` (id `""`) — then stop.
    ConnectionClosed,
}

struct RunningTurn {
    id: String,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<TurnAbortReason>>>,
    join: JoinHandle<TurnOutcome>,
}

impl RunningTurn {
    fn abort(&self, reason: TurnAbortReason) {
        lock(&self.reason).get_or_insert(reason);
        self.cancel.cancel();
    }

    /// Whether the turn was already told to stop (it ends soon).
    fn stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A `user_input` accepted while a turn ran, waiting for its turn.
struct Queued {
    id: String,
    items: Vec<InputItem>,
    /// Cancelled before it started (interrupt, replace, shutdown): it ends
    /// with `turn_aborted` and this reason, without `task_started`.
    cancelled: Option<TurnAbortReason>,
}

/// Owns the turn state; handles submissions one at a time, and ends turns.
pub(crate) struct Actor {
    session: Arc<Session>,
    rx: mpsc::UnboundedReceiver<ActorCmd>,
    turn: Option<RunningTurn>,
    /// Inputs waiting for the running turn to end, in the order received.
    /// Empty whenever no turn runs.
    queued: VecDeque<Queued>,
    turns_started: u64,
    /// Replies never sent (after `hang`), kept so their requests stay unanswered.
    parked: Vec<oneshot::Sender<Result<(), ErrorObject>>>,
}

impl Actor {
    pub fn spawn(session: Arc<Session>) -> mpsc::UnboundedSender<ActorCmd> {
        let (tx, rx) = mpsc::unbounded_channel();
        let actor =
            Actor { session, rx, turn: None, queued: VecDeque::new(), turns_started: 0, parked: Vec::new() };
        tokio::spawn(actor.run());
        tx
    }

    fn start_turn(&mut self, id: String, items: Vec<InputItem>) {
        self.session.record(RolloutItem::UserInput { turn_id: id.clone(), items });
        let cancel = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let turn = Turn {
            session: Arc::clone(&self.session),
            id: id.clone(),
            index: self.turns_started,
            cancel: cancel.clone(),
            last_message: Mutex::new(None),
            open: Mutex::new(Vec::new()),
        };
        self.turns_started += 1;
        let join = tokio::spawn(turn.run_until_cancelled(Arc::clone(&reason)));
        self.turn = Some(RunningTurn { id, cancel, reason, join });
    }

    /// Cancels every queued input (they end with `turn_aborted` once the
    /// running turn has ended).
    fn cancel_queued(&mut self, reason: TurnAbortReason) {
        for q in &mut self.queued {
            q.cancelled.get_or_insert(reason);
        }
    }

    /// After a turn ended: ends the cancelled inputs at the head of the
    /// queue, then starts the next one (unless the session is stopping).
    async fn next_queued(&mut self, stopping: bool) {
        while let Some(q) = self.queued.pop_front() {
            let reason = match (q.cancelled, stopping) {
                (Some(r), _) => r,
                (None, true) => TurnAbortReason::Shutdown,
                (None, false) => {
                    self.start_turn(q.id, q.items);
                    return;
                }
            };
            self.session.emit(&q.id, &EventMsg::TurnAborted { turn_id: q.id.clone(), reason }).await;
        }
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                biased;
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if !self.handle(cmd).await {
                        break;
                    }
                }
                outcome = join_turn(&mut self.turn) => self.finish_turn(outcome).await,
            }
        }
        debug!("session actor stopped");
    }

    /// Returns false when the actor should stop.
    async fn handle(&mut self, cmd: ActorCmd) -> bool {
        if is_hung() {
            if let ActorCmd::Submit { reply, .. } = cmd {
                self.parked.push(reply);
            }
            return true;
        }
        match cmd {
            ActorCmd::Submit { id, op, reply } => match op {
                Op::UserInput { items } => {
                    // A turn whose task already returned is over: end it
                    // first, so this input is not taken for a busy one.
                    if self.turn.as_ref().is_some_and(|t| t.join.is_finished()) {
                        let outcome = join_turn(&mut self.turn).await;
                        self.finish_turn(outcome).await;
                    }
                    let Some(t) = &self.turn else {
                        self.start_turn(id, items);
                        let _ = reply.send(Ok(()));
                        return true;
                    };
                    // Submissions are handled in order: an input after an
                    // interrupt waits for the aborted turn's `turn_aborted`.
                    match (t.stopping(), self.session.on_busy) {
                        (false, OnBusy::Reject) => {
                            let _ = reply.send(Err(err(
                                codes::TURN_IN_PROGRESS,
                                format!("turn `{}` is in progress: interrupt it or wait for it to end", t.id),
                            )));
                            return true;
                        }
                        (false, OnBusy::Replace) => {
                            debug!(turn = %t.id, replaced_by = %id, "replace");
                            t.abort(TurnAbortReason::Replaced);
                            self.cancel_queued(TurnAbortReason::Replaced);
                        }
                        _ => {}
                    }
                    self.queued.push_back(Queued { id, items, cancelled: None });
                    let _ = reply.send(Ok(()));
                    true
                }
                Op::Interrupt => {
                    if let Some(t) = &self.turn {
                        debug!(turn = %t.id, "interrupt");
                        t.abort(TurnAbortReason::Interrupted);
                    }
                    // Inputs queued before the interrupt are stopped too.
                    self.cancel_queued(TurnAbortReason::Interrupted);
                    let _ = reply.send(Ok(()));
                    true
                }
                Op::Shutdown => {
                    let _ = reply.send(Ok(()));
                    self.stop(TurnAbortReason::Shutdown).await;
                    self.session.emit(&id, &EventMsg::ShutdownComplete).await;
                    let _ = self.session.exit_tx.send(ExitRequest::Shutdown);
                    // Later submissions find the actor gone: -32015.
                    false
                }
            },
            ActorCmd::ConnectionClosed => {
                // An interrupt read before the end already set its reason.
                self.stop(TurnAbortReason::Shutdown).await;
                self.session.emit("", &EventMsg::ShutdownComplete).await;
                false
            }
        }
    }

    /// Aborts the running turn (if any) and every queued input, waits for
    /// it, flushes the rollout.
    async fn stop(&mut self, reason: TurnAbortReason) {
        self.cancel_queued(reason);
        if let Some(t) = &self.turn {
            t.abort(reason);
            let outcome = join_turn(&mut self.turn).await;
            self.end_turn(outcome).await;
        }
        self.next_queued(true).await;
        self.session.sync_rollout().await;
    }

    /// Ends the turn whose task returned, then starts the next queued input.
    async fn finish_turn(&mut self, outcome: Result<TurnOutcome, tokio::task::JoinError>) {
        self.end_turn(outcome).await;
        self.next_queued(false).await;
    }

    async fn end_turn(&mut self, outcome: Result<TurnOutcome, tokio::task::JoinError>) {
        let Some(turn) = self.turn.take() else { return };
        let session = &self.session;
        let msg = match outcome {
            Ok(TurnOutcome::Completed { last_agent_message }) => {
                session.persist(&RolloutItem::TurnComplete { turn_id: turn.id.clone() });
                EventMsg::TaskComplete { turn_id: turn.id.clone(), last_agent_message }
            }
            Ok(TurnOutcome::Aborted(reason)) => {
                session.persist(&RolloutItem::TurnAborted { turn_id: turn.id.clone(), reason });
                EventMsg::TurnAborted { turn_id: turn.id.clone(), reason }
            }
            Err(e) => {
                warn!(error = %e, "the turn task failed");
                session
                    .emit(
                        &turn.id,
                        &EventMsg::Error { message: format!("internal error: the turn failed: {e}") },
                    )
                    .await;
                session.persist(&RolloutItem::TurnComplete { turn_id: turn.id.clone() });
                EventMsg::TaskComplete { turn_id: turn.id.clone(), last_agent_message: None }
            }
        };
        session.emit(&turn.id, &msg).await;
        session.sync_rollout().await;
    }
}

async fn join_turn(turn: &mut Option<RunningTurn>) -> Result<TurnOutcome, tokio::task::JoinError> {
    match turn {
        Some(t) => (&mut t.join).await,
        None => std::future::pending().await,
    }
}
