//! Foreign agents that do not speak JSON-RPC 2.0 proper: OpenAI's **Codex
//! app-server** (v2; its messages leave out `jsonrpc`) and **Claude Code**
//! (`-p` with stream-json on both sides). The mapping is pure code in
//! `deputy_foreign` (a [`ForeignSession`] per agent; the tables are in
//! DIALECTS.md); this is the I/O around it, over `deputy-rpc`'s line mode
//! ([`Router::lines`]): the same framing, line limit, bounded queues and
//! half-close as every other dialect.
//!
//! - Every line the agent writes goes to the session, in order, on the
//!   dispatcher; the session's outputs are carried out **under its lock**,
//!   so their order is the session's: events are taken into the event
//!   batch, lines queued for the agent (written in order by one task),
//!   approvals started, withdrawals told to the approver. Events are handed
//!   to the caller after the lock is released (backpressure as usual).
//! - The handshake is the session's (`initialize` … `thread/start`, or
//!   Claude's `control_request{initialize}`); it is done once the session
//!   maps a `session_configured`, which the caller also gets as an event.
//! - Approvals run through the conversation's hub like every other
//!   dialect's; a withdrawal from the agent (Codex `serverRequest/resolved`,
//!   Claude `control_cancel_request`) fires the approval's token, so the
//!   approver is told and its late answer dropped.
//! - The ladder: the session's interrupt and shutdown (Codex: `turn/interrupt`,
//!   the background-terminal clean after the turn's end; Claude: the
//!   `interrupt` control request), and **the session closes stdin**, once
//!   no turn runs any more: Claude on EOF would first finish its turn.
//!   Then the shared kill of the whole tree, which also takes the
//!   commands these agents start in sessions of their own.
//! - When the agent's output ends (EOF, or the tree is killed with lines
//!   unread) the session closes what the agent left open: every begun
//!   command and patch gets its end, a running turn its `turn_aborted`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use deputy_foreign::claude::{ClaudeConfig, ClaudeSession, FileReader};
use deputy_foreign::codex::{self, CodexConfig, CodexSession};
use deputy_foreign::{Approval, ForeignSession, Output, SubmitError};
use deputy_protocol::{
    ApprovalPolicy, EventMsg, HistorySource, InitialHistory, Op, PeerInfo, ReviewDecision,
    SessionStartParams, SessionStartResult, Submission, error_codes,
};
use deputy_rpc::{ErrorObject, Peer, Router};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{BoxFuture, Dialect, Established};
use crate::approver::{ApprovalRequest, ToolApprovalParams};
use crate::config::ConversationConfig;
use crate::conversation::{ApprovalHub, EventSink, Fault, Shared};
use crate::error::HostError;

/// Lines queued for the agent beyond which reading its output waits (a
/// peer that does not read its stdin cannot make this side buffer more).
const MAX_QUEUED_LINES: usize = 256;

/// Of the ladder's budget, the part kept for killing Claude Code. Its
/// process (a large runtime) takes 35–135 ms from SIGKILL to reaped on a
/// loaded 2-core machine (`tests/host_foreign.rs`, cancel during a command,
/// 20 runs), against a few ms for Deputy's agent, and after an interrupt it
/// does not exit on EOF within the default drain window anyway (300 ms
/// were not enough in any run): so its drain window is 250 ms of the 500.
const CLAUDE_KILL_RESERVE: Duration = Duration::from_millis(250);

/// The largest file read for the diff of a Claude edit's approval.
const MAX_DIFF_FILE_BYTES: u64 = 8 << 20;

/// Which foreign agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Codex,
    Claude,
}

impl Kind {
    /// The agent's name in errors and logs.
    fn name(self) -> &'static str {
        match self {
            Kind::Codex => "Codex",
            Kind::Claude => "Claude Code",
        }
    }
}

enum Outbound {
    Line(String),
    /// Close the agent's stdin (after what is queued).
    Close,
}

struct State {
    session: Box<dyn ForeignSession>,
    /// The agent's output ended (or it is being killed): the session was
    /// told, and nothing more is read into it.
    closed: bool,
    /// Pending approvals by key (with a number, so a late answer never
    /// removes a newer approval under the same key): fired when the agent
    /// withdraws one.
    approvals: HashMap<String, (u64, CancellationToken)>,
    asked: u64,
}

/// A foreign dialect of one conversation.
pub(crate) struct Foreign {
    me: Weak<Foreign>,
    kind: Kind,
    /// Added to the agent's command (Claude's protocol flags and session).
    launch_args: Vec<String>,
    state: Mutex<State>,
    /// The sink, weakly: the router owns it (see the ACP dialect).
    sink: OnceLock<Weak<EventSink>>,
    hub: OnceLock<Arc<ApprovalHub>>,
    outbound: mpsc::UnboundedSender<Outbound>,
    outbound_rx: Mutex<Option<mpsc::UnboundedReceiver<Outbound>>>,
    /// Lines queued and not yet written, and a wake-up when one is.
    queued: AtomicUsize,
    written: Notify,
    /// The handshake's end: the session id, or why it failed.
    established: watch::Sender<Option<Result<String, String>>>,
    submissions: AtomicU64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn resumed_id(session: &SessionStartParams) -> Option<String> {
    match &session.initial_history {
        InitialHistory::Resumed { from: HistorySource::SessionId(id) } => Some(id.clone()),
        _ => None,
    }
}

/// Reads a file for an edit's diff: its text, if it is a small enough
/// UTF-8 file (else the approval shows the edit's snippets).
fn read_for_diff(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_DIFF_FILE_BYTES {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

impl Foreign {
    pub(crate) fn new(kind: Kind, config: &ConversationConfig) -> Arc<Foreign> {
        let cwd = config.session.cwd.clone();
        let resume = resumed_id(&config.session);
        let (session, launch_args): (Box<dyn ForeignSession>, Vec<String>) = match kind {
            Kind::Codex => {
                let mut c = CodexConfig::new(cwd);
                c.client_name = config.client_info.name.clone();
                c.client_version = config.client_info.version.clone().unwrap_or_default();
                c.resume = resume;
                // The default policy leaves it to the user's Codex config.
                if config.session.approval_policy != ApprovalPolicy::default() {
                    c.approval_policy =
                        Some(codex::approval_policy_name(config.session.approval_policy).into());
                }
                c.sandbox = config.session.sandbox.map(|mode| codex::sandbox_name(mode).to_owned());
                (Box::new(CodexSession::new(c)), Vec::new())
            }
            Kind::Claude => {
                let id = resume.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let mut c = ClaudeConfig::new(cwd, id);
                c.resume = resume.is_some();
                c.read_file = Some(FileReader(Arc::new(read_for_diff)));
                let args = c.launch_args();
                (Box::new(ClaudeSession::new(c)), args)
            }
        };
        let (outbound, outbound_rx) = mpsc::unbounded_channel();
        Arc::new_cyclic(|me| Foreign {
            me: me.clone(),
            kind,
            launch_args,
            state: Mutex::new(State { session, closed: false, approvals: HashMap::new(), asked: 0 }),
            sink: OnceLock::new(),
            hub: OnceLock::new(),
            outbound,
            outbound_rx: Mutex::new(Some(outbound_rx)),
            queued: AtomicUsize::new(0),
            written: Notify::new(),
            established: watch::channel(None).0,
            submissions: AtomicU64::new(1),
        })
    }

    fn sink(&self) -> Option<Arc<EventSink>> {
        self.sink.get().and_then(Weak::upgrade)
    }

    /// Carries out `outputs` in order; call with the session's lock held,
    /// so that the order is the session's. True when the event batch should
    /// be flushed now.
    fn carry_out(&self, state: &mut State, outputs: Vec<Output>) -> bool {
        let sink = self.sink();
        let mut flush = false;
        for output in outputs {
            match output {
                Output::Event(event) => {
                    if let EventMsg::SessionConfigured { session_id, .. } = &event.msg {
                        self.settle(Ok(session_id.clone()));
                    }
                    if let Some(sink) = &sink {
                        flush |= sink.push(event);
                    }
                }
                Output::Send(line) => self.queue(Outbound::Line(line)),
                Output::CloseInput => self.queue(Outbound::Close),
                Output::Approve(approval) => self.ask(state, approval),
                Output::Withdrawn(key) => {
                    if let Some((_, token)) = state.approvals.remove(&key) {
                        debug!(key, "the agent withdrew an approval");
                        token.cancel();
                    }
                }
                Output::Failed(message) => {
                    if !self.settle(Err(message.clone()))
                        && let Some(hub) = self.hub.get()
                    {
                        hub.shared.request_kill(Fault::Failed(message));
                    }
                }
            }
        }
        flush
    }

    /// Ends the handshake with `outcome`, if it has not ended yet; false if it had.
    fn settle(&self, outcome: Result<String, String>) -> bool {
        self.established.send_if_modified(|slot| {
            slot.is_none() && {
                *slot = Some(outcome);
                true
            }
        })
    }

    fn queue(&self, out: Outbound) {
        if matches!(out, Outbound::Line(_)) {
            self.queued.fetch_add(1, Ordering::AcqRel);
        }
        // The writer task lives as long as the connection.
        let _ = self.outbound.send(out);
    }

    /// Waits while too many lines are queued for the agent.
    async fn room_to_write(&self) {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if self.queued.load(Ordering::Acquire) < MAX_QUEUED_LINES {
                return;
            }
            written.await;
        }
    }

    /// Starts asking the approver (in a task of its own: answers never wait
    /// on each other, nor on the agent's output).
    fn ask(&self, state: &mut State, approval: Approval) {
        let Some(hub) = self.hub.get().cloned() else { return };
        let key = approval.key().to_owned();
        let token = hub.shared.drain.child_token();
        state.asked += 1;
        let seq = state.asked;
        if let Some((_, old)) = state.approvals.insert(key.clone(), (seq, token.clone())) {
            old.cancel();
        }
        let request = match approval {
            Approval::Exec(params) => ApprovalRequest::Exec(params),
            Approval::Patch(params) => ApprovalRequest::Patch(params),
            Approval::Other(other) => ApprovalRequest::Tool(ToolApprovalParams {
                title: format!("{} wants to use the tool `{}`", self.kind.name(), other.tool),
                call_id: other.call_id,
                turn_id: other.turn_id,
                tool: other.tool,
                input: Some(other.input),
                detail: other.reason,
            }),
        };
        let me = self.me.clone();
        tokio::spawn(async move {
            let decision = hub.ask(request, &token).await;
            if let Some(me) = me.upgrade() {
                me.answered(&key, seq, decision);
            }
        });
    }

    fn answered(&self, key: &str, seq: u64, decision: ReviewDecision) {
        {
            let mut state = lock(&self.state);
            // Still this approval's (not a later one under the same key).
            if state.approvals.get(key).is_some_and(|(s, _)| *s == seq) {
                state.approvals.remove(key);
            }
            let outputs = state.session.answer(key, decision);
            self.carry_out(&mut state, outputs);
        }
        self.flush_soon();
    }

    /// Hands the events taken so far over in the background (for callers
    /// that must not wait for the caller's channel).
    fn flush_soon(&self) {
        if let Some(sink) = self.sink() {
            sink.flush_soon();
        }
    }

    /// One line of the agent's output (`None`: the output ended).
    async fn on_line(&self, sink: &EventSink, line: Option<String>) {
        self.room_to_write().await;
        let flush = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            let outputs = match line {
                Some(line) => match state.session.receive(&line) {
                    Ok(outputs) => outputs,
                    Err(e) => {
                        warn!(agent = self.kind.name(), error = %e, "skipping a line that is not a message");
                        return;
                    }
                },
                None => {
                    state.closed = true;
                    state.session.closed()
                }
            };
            self.carry_out(&mut state, outputs)
        };
        if flush {
            sink.flush().await;
        }
    }

    /// Starts the task that writes the queued lines, in order.
    fn start_writer(&self, peer: &Peer) {
        let Some(mut rx) = self.outbound_rx.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        let peer = peer.clone();
        let me = self.me.clone();
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                match out {
                    Outbound::Line(line) => {
                        if let Err(e) = peer.send_line(line).await {
                            debug!(error = %e, "a line for the agent was not written");
                        }
                        if let Some(me) = me.upgrade() {
                            me.queued.fetch_sub(1, Ordering::AcqRel);
                            me.written.notify_waiters();
                        }
                    }
                    Outbound::Close => {
                        debug!("closing the agent's stdin");
                        if let Err(e) = peer.flush().await {
                            debug!(error = %e, "the agent's stdin is gone");
                        }
                        peer.close_write();
                    }
                }
            }
        });
    }

    fn submit_error(&self, method: &'static str, e: SubmitError) -> HostError {
        let rejected =
            |code, message: String| HostError::Rejected { method, error: ErrorObject::new(code, message) };
        match e {
            SubmitError::TurnInProgress => rejected(
                error_codes::TURN_IN_PROGRESS,
                format!(
                    "a turn is running: {} takes one at a time (interrupt it, or wait for its end)",
                    self.kind.name()
                ),
            ),
            SubmitError::ShuttingDown => {
                rejected(error_codes::SHUTTING_DOWN, "the session is shutting down".into())
            }
            SubmitError::NotReady => rejected(error_codes::NO_SESSION, e.to_string()),
            SubmitError::Unsupported(what) => HostError::Unsupported { protocol: self.kind.name(), what },
        }
    }
}

impl Dialect for Foreign {
    fn launch_args(&self) -> Vec<String> {
        self.launch_args.clone()
    }

    fn router(&self, sink: Arc<EventSink>, hub: Arc<ApprovalHub>) -> Router {
        let _ = self.sink.set(Arc::downgrade(&sink));
        let _ = self.hub.set(hub);
        let me = self.me.clone();
        let mut router = Router::new();
        super::flush_each_batch(&mut router, &sink);
        router.lines(move |line| {
            let sink = Arc::clone(&sink);
            let dialect = me.upgrade();
            async move {
                if let Some(dialect) = dialect {
                    dialect.on_line(&sink, line).await;
                }
            }
        });
        router
    }

    fn handshake<'a>(
        &'a self,
        peer: &'a Peer,
        config: &'a ConversationConfig,
    ) -> BoxFuture<'a, Result<Established, Option<Fault>>> {
        Box::pin(async move {
            // Codex's thread takes an approval policy and a sandbox; Claude
            // Code's own permission settings and sandbox decide.
            let codex = self.kind == Kind::Codex;
            let carried = super::Carried { approval_policy: codex, sandbox: codex };
            if let Some(what) = super::uncarried(&config.session, carried) {
                return Err(Some(Fault::Unsupported { protocol: self.kind.name(), what }));
            }
            self.start_writer(peer);
            let mut established = self.established.subscribe();
            {
                let mut state = lock(&self.state);
                let outputs = state.session.start();
                self.carry_out(&mut state, outputs);
            }
            self.flush_soon();
            let outcome = established.wait_for(Option::is_some).await.ok().and_then(|slot| slot.clone());
            let session_id = match outcome {
                Some(Ok(id)) => id,
                Some(Err(message)) => return Err(Some(Fault::Failed(message))),
                None => return Err(None),
            };
            let name = match self.kind {
                Kind::Codex => "codex-app-server",
                Kind::Claude => "claude-code",
            };
            let result = super::foreign_initialize(PeerInfo { name: name.to_owned(), version: None }, None);
            Ok((result, SessionStartResult { session_id, rollout_path: None }))
        })
    }

    fn submit<'a>(
        &'a self,
        _peer: &'a Peer,
        shared: &'a Arc<Shared>,
        submission: Submission,
    ) -> BoxFuture<'a, Result<String, HostError>> {
        Box::pin(async move {
            let Submission { id, op } = submission;
            if let Op::Shutdown = op {
                // The ladder, gracefully: the session's shutdown, then its EOF.
                shared.shutdown_req.cancel();
                return Ok(id.unwrap_or_else(|| "shutdown".to_owned()));
            }
            let id =
                id.unwrap_or_else(|| format!("sub-{}", self.submissions.fetch_add(1, Ordering::Relaxed)));
            let method = match op {
                Op::UserInput { .. } => "user_input",
                _ => "interrupt",
            };
            {
                let mut state = lock(&self.state);
                let outputs = state.session.submit(&id, &op).map_err(|e| self.submit_error(method, e))?;
                self.carry_out(&mut state, outputs);
            }
            // Not waiting for room: the caller may read only after this returns.
            self.flush_soon();
            Ok(id)
        })
    }

    fn ending(&self, _peer: &Peer, interrupt: bool, tag: String) -> BoxFuture<'static, ()> {
        {
            let mut state = lock(&self.state);
            let mut outputs = Vec::new();
            if interrupt && let Ok(out) = state.session.submit(&tag, &Op::Interrupt) {
                outputs.extend(out);
            }
            match state.session.submit(&tag, &Op::Shutdown) {
                Ok(out) => outputs.extend(out),
                // Already shutting down (the caller's shutdown op came first).
                Err(e) => debug!(error = %e, "the ladder's shutdown"),
            }
            self.carry_out(&mut state, outputs);
        }
        self.flush_soon();
        Box::pin(std::future::pending())
    }

    fn closes_input_itself(&self) -> bool {
        true
    }

    fn kill_reserve(&self) -> Duration {
        match self.kind {
            Kind::Codex => crate::KILL_RESERVE,
            Kind::Claude => CLAUDE_KILL_RESERVE,
        }
    }

    fn killed(&self) {
        {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            state.closed = true;
            let outputs = state.session.closed();
            self.carry_out(&mut state, outputs);
        }
        self.flush_soon();
    }
}
