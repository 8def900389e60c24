//! The interactive conversation: spawn, handshake, events, submissions,
//! approvals, and the supervisor that runs the cancel ladder.

use std::future::Future;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use deputy_protocol::{
    Event, EventMsg, InitializeResult, Op, ReviewDecision, SessionStartResult, Submission, TokenUsageInfo,
};
use deputy_rpc::{Connection, ErrorObject, Peer, RpcError};
use tokio::sync::TryAcquireError;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::approver::{ApprovalContext, ApprovalRequest, Approver};
use crate::command::AgentCommand;
use crate::config::ConversationConfig;
use crate::dialect::Dialect;
use crate::error::HostError;
use crate::filter::EventFilter;
use crate::io::ProtocolSignal;
use crate::process::{self, ChildProc};
use crate::stderr::{self, StderrTail};

/// After the agent exited on its own: how long to keep reading its stdout
/// (the events it wrote before exiting) before the reader is aborted.
const EXIT_DRAIN_GRACE: Duration = Duration::from_millis(200);
/// After the tree was killed: how long to wait for stderr's EOF (for a complete tail).
const STDERR_GRACE: Duration = Duration::from_millis(50);

/// Spawn: how long to wait for `session_configured` to be handled after the
/// `session/start` answer (it was sent before it; this only bridges two tasks).
const SESSION_CONFIGURED_WAIT: Duration = Duration::from_millis(250);
/// Ladder: how long the `abort` answers of pending approvals may take to be queued.
const APPROVAL_ABORT_GRACE: Duration = Duration::from_millis(20);

/// Of the ladder's budget, the part kept for the kill: freezing and killing
/// the tree (a read of `/proc` per round, usually two), the agent's exit
/// after SIGKILL (the kernel frees its memory), the reap and stderr's EOF.
/// Measured with `deputy-bench cancel` (200 stubborn agents, each with a
/// grandchild), time from the end of the drain window to the tree reaped:
/// median 5–8 ms, p99 ~21 ms with the machine's two cores busy compiling;
/// median ~17 ms, p99 ~71 ms, worst 216 ms with two more `yes` processes on
/// top (four runnable processes per core). 150 ms covers the p99 of that
/// overload with room. Never more than a third of the budget.
pub const KILL_RESERVE: Duration = Duration::from_millis(150);

/// How long the ladder waits for a graceful exit within `budget`: the rest
/// is [`KILL_RESERVE`], so the tree is dead and reaped by the budget's end.
pub(crate) fn drain_window(budget: Duration) -> Duration {
    drain_window_with(budget, KILL_RESERVE)
}

/// The same with a dialect's own reserve (at most half the budget).
fn drain_window_with(budget: Duration, reserve: Duration) -> Duration {
    let cap = if reserve > KILL_RESERVE { budget / 2 } else { budget / 3 };
    budget.saturating_sub(reserve.min(cap))
}

/// During an ending, the most events kept for the caller beyond the
/// channel (see [`EventSink::flush`]); past it only events that close
/// something (a turn, a command, a patch, the session) are kept.
const ENDING_OVERFLOW: usize = 4096;

/// The most events handed to the caller's channel in one batch.
const MAX_EVENT_BATCH: usize = 256;

static SHUTDOWN_SEQ: AtomicU64 = AtomicU64::new(1);

/// How a conversation's agent process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The agent exited by itself during the ladder, before the deadline.
    /// `elapsed` runs from the start of the ladder to the exit.
    Graceful {
        /// Its exit status.
        status: ExitStatus,
        /// From the start of the ladder to the exit.
        elapsed: Duration,
    },
    /// The agent's process tree was SIGKILLed: at the ladder's deadline, or at
    /// once because it misbehaved (see the conversation's error), or on drop.
    /// `elapsed` runs from the start of the ladder (or of the kill) to the reap.
    Killed {
        /// Its exit status (killed by SIGKILL).
        status: ExitStatus,
        /// From the start of the ladder (or of the kill) to the reap.
        elapsed: Duration,
    },
    /// The agent exited on its own before anyone asked it to (after a
    /// `shutdown` op submitted by the caller, or a crash: see the error).
    Exited {
        /// Its exit status.
        status: ExitStatus,
    },
}

impl Ending {
    /// The agent's exit status.
    pub fn status(&self) -> ExitStatus {
        match self {
            Ending::Graceful { status, .. } | Ending::Killed { status, .. } | Ending::Exited { status } => {
                *status
            }
        }
    }

    /// Time from the start of the ladder to the end (zero for [`Ending::Exited`]).
    pub fn elapsed(&self) -> Duration {
        match self {
            Ending::Graceful { elapsed, .. } | Ending::Killed { elapsed, .. } => *elapsed,
            Ending::Exited { .. } => Duration::ZERO,
        }
    }

    /// Whether the tree had to be killed.
    pub fn was_killed(&self) -> bool {
        matches!(self, Ending::Killed { .. })
    }
}

/// The supervisor's verdict.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub ending: Ending,
    pub error: Option<HostError>,
}

/// Why the supervisor kills at once; turned into a [`HostError`] with the
/// stderr tail once the tree is gone.
#[derive(Debug)]
pub(crate) enum Fault {
    Cancelled,
    HandshakeTimeout(Duration),
    Handshake {
        method: &'static str,
        error: ErrorObject,
    },
    /// The agent's protocol version (host's, agent's).
    Version(u32, u32),
    Unsupported {
        protocol: &'static str,
        what: String,
    },
    Protocol(String),
    /// The agent could not start the session (a foreign agent's own words).
    Failed(String),
    StdoutClosed,
    Rpc(Arc<RpcError>),
}

impl Fault {
    fn into_error(self, stderr_tail: String) -> HostError {
        match self {
            Fault::Cancelled => HostError::Cancelled,
            Fault::HandshakeTimeout(timeout) => HostError::HandshakeTimeout { timeout, stderr_tail },
            Fault::Handshake { method, error } => HostError::Handshake { method, error, stderr_tail },
            Fault::Version(host, agent) => HostError::ProtocolVersion { host, agent },
            Fault::Unsupported { protocol, what } => HostError::Unsupported { protocol, what },
            Fault::Protocol(detail) => HostError::ProtocolViolation { detail, stderr_tail },
            Fault::Failed(detail) => HostError::AgentFailed { detail, stderr_tail },
            Fault::StdoutClosed => HostError::StdoutClosed { stderr_tail },
            Fault::Rpc(e) => HostError::Rpc(e),
        }
    }
}

/// State shared by the conversation handle, the supervisor and the handlers.
pub(crate) struct Shared {
    /// Child of the caller's token: fired by the caller, `cancel()` or drop.
    pub(crate) cancel: CancellationToken,
    /// Child of `cancel`, also fired when any ending starts: the forwarder
    /// stops waiting for room, pending approvals are answered `abort`.
    pub(crate) drain: CancellationToken,
    pub(crate) shutdown_req: CancellationToken,
    kill_req: CancellationToken,
    kill_fault: Mutex<Option<Fault>>,
    established: AtomicBool,
    dropped: AtomicBool,
    shutdown_complete: AtomicBool,
    usage: Mutex<Option<TokenUsageInfo>>,
    /// Fires when the event sink is dropped: every event read was handled
    /// and the caller's channel is closed.
    events_done: CancellationToken,
    /// Events that arrived during an ending while the caller's channel was
    /// full: the ladder cannot wait for a consumer, but the events (the
    /// turn's end, `shutdown_complete`) must not be lost. Read after the
    /// channel, in order; once it holds anything, every later event goes
    /// here too.
    overflow: Mutex<std::collections::VecDeque<Event>>,
    /// `session_configured` was handled (it carries the restored token usage).
    configured: AtomicBool,
    configured_seen: Notify,
    /// Approval calls in flight, and a wakeup when the count drops to zero.
    approvals: AtomicUsize,
    approvals_idle: Notify,
    outcome: watch::Sender<Option<Outcome>>,
    deadline: Duration,
}

impl Shared {
    fn new(parent: &CancellationToken, deadline: Duration) -> Self {
        let cancel = parent.child_token();
        let drain = cancel.child_token();
        Shared {
            cancel,
            drain,
            shutdown_req: CancellationToken::new(),
            kill_req: CancellationToken::new(),
            kill_fault: Mutex::new(None),
            established: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            shutdown_complete: AtomicBool::new(false),
            usage: Mutex::new(None),
            events_done: CancellationToken::new(),
            overflow: Mutex::new(std::collections::VecDeque::new()),
            configured: AtomicBool::new(false),
            configured_seen: Notify::new(),
            approvals: AtomicUsize::new(0),
            approvals_idle: Notify::new(),
            outcome: watch::channel(None).0,
            deadline,
        }
    }

    fn overflow_is_empty(&self) -> bool {
        self.overflow.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    /// Keeps events of an ending for the caller (see `overflow`), bounded.
    fn keep_for_ending(&self, events: Vec<Event>) {
        let mut overflow = self.overflow.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dropped = 0usize;
        for event in events {
            let closes = event.msg.ends_turn()
                || matches!(
                    event.msg,
                    EventMsg::ShutdownComplete
                        | EventMsg::ExecCommandEnd { .. }
                        | EventMsg::PatchApplyEnd { .. }
                        | EventMsg::Error { .. }
                );
            if overflow.len() < ENDING_OVERFLOW || closes {
                overflow.push_back(event);
            } else {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::warn!(dropped, "the conversation is ending and nobody reads its events: dropping some");
        }
    }

    fn pop_overflow(&self) -> Option<Event> {
        self.overflow.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
    }

    fn set_usage(&self, info: TokenUsageInfo) {
        *self.usage.lock().unwrap_or_else(PoisonError::into_inner) = Some(info);
    }

    /// Waits until `session_configured` was handled.
    async fn session_configured(&self) {
        loop {
            let seen = self.configured_seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            if self.configured.load(Ordering::Acquire) {
                return;
            }
            seen.await;
        }
    }

    /// Waits until no approval call is in flight.
    async fn approvals_answered(&self) {
        loop {
            let idle = self.approvals_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.approvals.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    pub(crate) fn request_kill(&self, fault: Fault) {
        let mut slot = self.kill_fault.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() && !self.kill_req.is_cancelled() {
            *slot = Some(fault);
        }
        drop(slot);
        self.kill_req.cancel();
    }

    /// The fault a kill was requested for (cancellation if none was named).
    fn take_kill_fault(&self) -> Fault {
        self.kill_fault.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or(Fault::Cancelled)
    }

    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    async fn wait_outcome(&self) -> Outcome {
        let mut rx = self.outcome.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail.
        let outcome = rx.wait_for(Option::is_some).await.ok().and_then(|o| o.clone());
        outcome.expect("the outcome sender outlives its receivers")
    }

    /// The error to give a caller whose request failed because the conversation
    /// is ending or has ended: the terminal error once known.
    pub(crate) async fn ended_error(&self) -> HostError {
        // The supervisor settles within the deadline plus a few graces.
        let limit = self.deadline + EXIT_DRAIN_GRACE + Duration::from_secs(1);
        match tokio::time::timeout(limit, self.wait_outcome()).await {
            Ok(Outcome { error: Some(e), .. }) => e,
            _ if self.cancel.is_cancelled() => HostError::Cancelled,
            _ => HostError::Closed,
        }
    }
}

// ---------------------------------------------------------------------------
// Event path.

/// Room in the caller's event channel, counted in events (not batches: a
/// batch holds one event or hundreds), so that at most `event_capacity`
/// events wait for the caller whatever the batches, and a caller that
/// reads slowly slows the agent down only once that many wait.
pub(crate) struct EventRoom {
    permits: tokio::sync::Semaphore,
    capacity: usize,
}

impl EventRoom {
    fn new(capacity: usize) -> Self {
        EventRoom { permits: tokio::sync::Semaphore::new(capacity), capacity }
    }

    /// The permits a batch of `len` events takes (a batch larger than the
    /// whole room takes all of it).
    fn needed(&self, len: usize) -> u32 {
        len.min(self.capacity) as u32
    }
}

/// The caller's end of the event channel: gives the room back as batches
/// are taken, and closes it when dropped (a flush waiting for room stops).
struct EventReceiver {
    rx: mpsc::UnboundedReceiver<Vec<Event>>,
    room: Arc<EventRoom>,
}

impl EventReceiver {
    fn taken(&self, batch: Vec<Event>) -> Vec<Event> {
        self.room.permits.add_permits(self.room.needed(batch.len()) as usize);
        batch
    }

    async fn recv(&mut self) -> Option<Vec<Event>> {
        let batch = self.rx.recv().await?;
        Some(self.taken(batch))
    }

    fn try_recv(&mut self) -> Option<Vec<Event>> {
        let batch = self.rx.try_recv().ok()?;
        Some(self.taken(batch))
    }

    fn close(&mut self) {
        self.rx.close();
        self.room.permits.close();
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.room.permits.close();
    }
}

/// Owned by the router only, so the caller's channel closes when the
/// connection's tasks end.
pub(crate) struct EventSink {
    /// Batches of events, so the consumer is woken once per batch; bounded
    /// by `room`, in events.
    tx: mpsc::UnboundedSender<Vec<Event>>,
    room: Arc<EventRoom>,
    /// The most events one batch holds.
    batch_max: usize,
    filter: EventFilter,
    shared: Arc<Shared>,
    one_shot: bool,
    /// One-shot: the turn ended, nothing more is forwarded.
    done: AtomicBool,
    /// One-shot: the turn's end was taken; the next flush hands it over,
    /// then asks for the shutdown.
    one_shot_ended: AtomicBool,
    /// Events of the current rpc batch (one read from the agent), handed to
    /// the caller's channel together at the batch's end: a consumer faster
    /// than the decoder is then woken once per batch, not once per event
    /// (on a multi-thread runtime each wake-up is a futex round trip).
    pending: std::sync::Mutex<Vec<Event>>,
    /// Held by a flush from taking the buffer to handing it over, so two
    /// flushes (the dispatcher's, a dialect's own task's) never reorder.
    flushing: tokio::sync::Mutex<()>,
}

impl Drop for EventSink {
    fn drop(&mut self) {
        self.shared.events_done.cancel();
    }
}

impl EventSink {
    pub(crate) async fn deliver(&self, event: Event) {
        if self.push(event) {
            self.flush().await;
        }
    }

    /// Takes `event` into the batch being built, without handing it over;
    /// true when the batch should be flushed now (it is full, or it ends a
    /// one-shot turn). For callers that must order events while holding a
    /// lock (a foreign dialect's session), and flush after.
    pub(crate) fn push(&self, event: Event) -> bool {
        match &event.msg {
            EventMsg::TokenCount { info: Some(info) } => self.shared.set_usage(*info),
            EventMsg::SessionConfigured { token_usage, .. } => {
                if let Some(info) = token_usage {
                    self.shared.set_usage(*info);
                }
                self.shared.configured.store(true, Ordering::Release);
                self.shared.configured_seen.notify_waiters();
            }
            EventMsg::ShutdownComplete => self.shared.shutdown_complete.store(true, Ordering::Release),
            _ => {}
        }
        if self.done.load(Ordering::Relaxed) {
            return false;
        }
        let ends_one_shot = self.one_shot && event.msg.ends_turn();
        let mut flush = false;
        if self.filter.passes(&event.msg) {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.push(event);
            flush = ends_one_shot || pending.len() >= self.batch_max;
        }
        if ends_one_shot {
            // Nothing after the turn's end is forwarded; the shutdown is
            // asked once the end was handed over (see `flush`).
            self.done.store(true, Ordering::Relaxed);
            self.one_shot_ended.store(true, Ordering::Release);
            flush = true;
        }
        flush
    }

    /// Flushes in the background (for callers that cannot wait for room:
    /// the caller may read only after they return).
    pub(crate) fn flush_soon(self: &Arc<Self>) {
        let sink = Arc::clone(self);
        tokio::spawn(async move { sink.flush().await });
    }

    /// Takes `event` now, in order with everything delivered before and
    /// after it, without waiting for room in the caller's channel: it is
    /// handed over by a flush started in the background (for events a
    /// dialect makes up on the caller's task, e.g. ACP's `task_started`,
    /// which must not wait for a caller that is not reading yet).
    pub(crate) fn deliver_now(self: &Arc<Self>, event: Event) {
        self.push(event);
        self.flush_soon();
    }

    /// Hands the buffered events to the caller's channel, in order, as one batch.
    pub(crate) async fn flush(&self) {
        let _order = self.flushing.lock().await;
        self.hand_over().await;
        if self.one_shot_ended.swap(false, Ordering::AcqRel) {
            self.shared.shutdown_req.cancel();
        }
    }

    async fn hand_over(&self) {
        let events = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if events.is_empty() {
            return;
        }
        if !self.shared.overflow_is_empty() {
            // Later events never overtake the ones kept in the overflow.
            self.shared.keep_for_ending(events);
            return;
        }
        let room = self.room.needed(events.len());
        match self.room.permits.try_acquire_many(room) {
            Ok(permits) => {
                permits.forget();
                // Fails only if the caller dropped its end: nobody to tell.
                let _ = self.tx.send(events);
            }
            Err(TryAcquireError::Closed) => {}
            Err(TryAcquireError::NoPermits) => {
                // Wait for room (backpressure), but never past the start of
                // an ending: a consumer that stopped reading must not wedge
                // us. Then the events are kept aside instead of lost.
                let drain = &self.shared.drain;
                if drain.is_cancelled() {
                    self.shared.keep_for_ending(events);
                    return;
                }
                tokio::select! {
                    biased;
                    permits = self.room.permits.acquire_many(room) => if let Ok(permits) = permits {
                        permits.forget();
                        let _ = self.tx.send(events);
                    },
                    () = drain.cancelled() => self.shared.keep_for_ending(events),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Approvals.

pub(crate) struct ApprovalHub {
    approver: Arc<dyn Approver>,
    pub(crate) shared: Arc<Shared>,
}

/// Tells the approver when its call is abandoned (future dropped or raced
/// out), and keeps the count of approvals in flight.
struct Withdrawn<'a> {
    approver: &'a dyn Approver,
    shared: &'a Shared,
    key: &'a str,
    token: &'a CancellationToken,
    armed: bool,
}

impl Drop for Withdrawn<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.token.cancel();
            debug!(key = self.key, "approval withdrawn");
            self.approver.cancelled(self.key);
        }
        if self.shared.approvals.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.approvals_idle.notify_waiters();
        }
    }
}

impl ApprovalHub {
    /// Asks the approver. `within` is the conversation's drain token, or a
    /// child of it (a dialect's turn): when it fires the answer is `abort`
    /// and the approver is told.
    pub(crate) async fn ask(&self, request: ApprovalRequest, within: &CancellationToken) -> ReviewDecision {
        let key = request.key().to_owned();
        let token = within.child_token();
        let cx = ApprovalContext::new(key.clone(), token.clone());
        let call = match request {
            ApprovalRequest::Exec(params) => self.approver.approve_exec(params, cx),
            ApprovalRequest::Patch(params) => self.approver.approve_patch(params, cx),
            ApprovalRequest::Tool(params) => self.approver.approve_tool(params, cx),
        };
        self.race(&key, &token, call).await
    }

    /// Runs the approver's call raced against the conversation ending (then
    /// the answer is `abort`). If the rpc drops this future (the agent sent
    /// `$/cancelRequest`), the guard tells the approver.
    async fn race(
        &self,
        key: &str,
        token: &CancellationToken,
        call: impl Future<Output = ReviewDecision>,
    ) -> ReviewDecision {
        self.shared.approvals.fetch_add(1, Ordering::AcqRel);
        let mut guard =
            Withdrawn { approver: &*self.approver, shared: &self.shared, key, token, armed: true };
        let decision = tokio::select! {
            biased;
            () = token.cancelled() => None,
            d = call => Some(d),
        };
        match decision {
            Some(d) => {
                guard.armed = false;
                debug!(key, decision = ?d, "approval answered");
                d
            }
            None => {
                debug!(key, "conversation ending: answering the approval `abort`");
                ReviewDecision::Abort
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Supervisor: owns the process-level state machine.

struct Supervisor {
    child: Arc<ChildProc>,
    peer: Peer,
    dialect: Arc<dyn Dialect>,
    conn: Arc<Connection>,
    stderr_tail: Arc<StderrTail>,
    stderr_task: Option<JoinHandle<()>>,
    protocol: ProtocolSignal,
    shared: Arc<Shared>,
}

impl Supervisor {
    async fn run(mut self) {
        let outcome = self.supervise().await;
        if let Some(e) = &outcome.error {
            debug!(pid = self.child.pid(), error = %e, "conversation ended with an error");
        }
        debug!(pid = self.child.pid(), ending = ?outcome.ending, "conversation ended");
        self.shared.outcome.send_replace(Some(outcome));
    }

    async fn supervise(&mut self) -> Outcome {
        let shared = Arc::clone(&self.shared);
        tokio::select! {
            biased;
            () = shared.kill_req.cancelled() => self.kill_now(shared.take_kill_fault()).await,
            () = shared.cancel.cancelled() => {
                if shared.dropped.load(Ordering::Acquire) || !shared.established.load(Ordering::Acquire) {
                    self.kill_now(Fault::Cancelled).await
                } else {
                    self.ladder(true).await
                }
            }
            () = shared.shutdown_req.cancelled() => self.ladder(false).await,
            () = self.protocol.fired() => {
                let detail = self.protocol.detail().unwrap_or("invalid output").to_owned();
                self.kill_now(Fault::Protocol(detail)).await
            }
            () = self.child.exited() => self.exited_on_its_own().await,
            () = self.peer.read_closed() => self.stdout_closed().await,
        }
    }

    /// The agent exited before anyone asked: read what it wrote, then clean up.
    async fn exited_on_its_own(&mut self) -> Outcome {
        // Read to EOF, and let the events read be handled (one of them may be
        // `shutdown_complete`, which makes this exit a normal one).
        if tokio::time::timeout(EXIT_DRAIN_GRACE, self.peer.read_closed()).await.is_ok() {
            let done = &self.shared.events_done;
            if tokio::time::timeout(EXIT_DRAIN_GRACE, done.cancelled()).await.is_err() {
                // The consumer is not reading: stop waiting for room.
                self.shared.drain.cancel();
                let _ = tokio::time::timeout(STDERR_GRACE, done.cancelled()).await;
            }
        }
        let status = self.finalize().await;
        let asked = self.shared.shutdown_complete.load(Ordering::Acquire);
        let error =
            (!asked).then(|| HostError::AgentExited { status, stderr_tail: self.stderr_tail.snapshot() });
        Outcome { ending: Ending::Exited { status }, error }
    }

    /// Stdout ended first (the read side of the connection), while the agent
    /// still runs: it gets the deadline to exit; if it is still running then,
    /// it is killed ([`HostError::StdoutClosed`]).
    async fn stdout_closed(&mut self) -> Outcome {
        let shared = Arc::clone(&self.shared);
        tokio::select! {
            biased;
            () = shared.kill_req.cancelled() => self.kill_now(shared.take_kill_fault()).await,
            () = self.child.exited() => self.exited_on_its_own().await,
            () = shared.cancel.cancelled() => self.kill_now(Fault::Cancelled).await,
            () = shared.shutdown_req.cancelled() => self.ladder(false).await,
            () = tokio::time::sleep(drain_window(shared.deadline)) => {
                let reason = self.peer.close_reason().unwrap_or_default();
                debug!(pid = self.child.pid(), %reason, "the agent's stdout closed while it runs");
                self.kill_now(Fault::StdoutClosed).await
            }
        }
    }

    /// The cancel ladder (`interrupt` true) or a graceful shutdown (false).
    async fn ladder(&mut self, interrupt: bool) -> Outcome {
        let start = Instant::now();
        let window = drain_window_with(self.shared.deadline, self.dialect.kill_reserve());
        let deadline = tokio::time::Instant::from_std(start + window);
        // 1. Pending approvals are answered `abort`; the forwarder stops waiting.
        self.shared.drain.cancel();
        if self.shared.approvals.load(Ordering::Acquire) > 0 {
            // Let the `abort` answers be queued before `shutdown` (and the EOF after it).
            let _ = tokio::time::timeout(APPROVAL_ABORT_GRACE, self.shared.approvals_answered()).await;
            tokio::task::yield_now().await;
        }
        if !self.child.has_exited() {
            // Interrupt and shutdown back to back, flushed, then EOF (a
            // half-close: stdout is still read): no waiting on answers. If
            // stdout already ended, no answer can come and the requests fail
            // at once; the EOF alone asks the agent to shut down.
            let id = format!(
                "deputy-host-shutdown-{}-{}",
                self.child.pid(),
                SHUTDOWN_SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let answers = self.dialect.ending(&self.peer, interrupt, id);
            let peer = self.peer.clone();
            let eof_now = !self.dialect.closes_input_itself();
            let requests = async move {
                // Polled after the requests (`join!` polls in order), so the
                // flush covers both lines; then the agent's stdin is closed.
                let eof = async move {
                    if !eof_now {
                        return;
                    }
                    if let Err(e) = peer.flush().await {
                        debug!(error = %e, "the agent's stdin is gone");
                    }
                    peer.close_write();
                };
                futures::join!(answers, eof);
                std::future::pending::<()>().await
            };
            // 2. Keep reading (the peer does) until the agent exits, or the deadline.
            let exited = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    () = self.child.exited() => {}
                    () = requests => {}
                }
            })
            .await
            .is_ok();
            if !exited {
                // 3. The deadline: kill the tree, reap, abort the reader.
                self.dialect.killed();
                self.conn.abort();
                let status = self.finalize().await;
                return Outcome { ending: Ending::Killed { status, elapsed: start.elapsed() }, error: None };
            }
        }
        let elapsed = start.elapsed();
        // The agent exited: read its last events (turn_aborted, shutdown_complete)
        // until EOF, within what is left of the deadline.
        let _ = tokio::time::timeout_at(deadline, self.peer.read_closed()).await;
        // 4. Always end with a tree kill (grandchildren).
        let status = self.finalize().await;
        Outcome { ending: Ending::Graceful { status, elapsed }, error: None }
    }

    /// Kills the tree at once (misbehaviour, cancel during the handshake).
    async fn kill_now(&mut self, fault: Fault) -> Outcome {
        let start = Instant::now();
        self.shared.drain.cancel();
        self.child.kill_tree();
        self.dialect.killed();
        self.conn.abort();
        let status = self.finalize().await;
        let error = fault.into_error(self.stderr_tail.snapshot());
        Outcome { ending: Ending::Killed { status, elapsed: start.elapsed() }, error: Some(error) }
    }

    /// Kills what is left of the tree, reaps the agent, stops the reader if
    /// stdout is still open (a process outside the session holds it), and
    /// collects the rest of stderr.
    async fn finalize(&mut self) -> ExitStatus {
        // Close the agent's stdin, if the ladder did not (what is queued is
        // written first, or fails harmlessly).
        self.peer.close_write();
        let swept = self.child.kill_tree();
        if swept > 0 {
            debug!(pid = self.child.pid(), swept, "killed processes left in the agent's session");
        }
        let status = self.child.reap().await;
        if !self.peer.is_read_closed() {
            self.conn.abort();
        }
        if let Some(mut task) = self.stderr_task.take()
            && tokio::time::timeout(STDERR_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
        status
    }
}

// ---------------------------------------------------------------------------
// Drop guard.

/// Kills the tree synchronously when the conversation is dropped unfinished.
struct ProcessGuard {
    child: Arc<ChildProc>,
    conn: Arc<Connection>,
    stderr: AbortHandle,
    shared: Arc<Shared>,
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.shared.dropped.store(true, Ordering::Release);
        self.shared.cancel.cancel();
        if self.child.status().is_none() {
            // Raw syscalls, here and now: a spawned task could be lost by a
            // runtime that is shutting down.
            self.child.kill_tree();
            if self.child.reap_blocking(Duration::from_millis(100)).is_none() {
                debug!(pid = self.child.pid(), "agent not reaped yet on drop: the supervisor will");
            }
        }
        self.conn.abort();
        self.stderr.abort();
    }
}

// ---------------------------------------------------------------------------
// Public handle.

/// Submits ops to a conversation. Cheap to clone; usable while another task
/// reads the events.
#[derive(Clone)]
pub struct Submitter {
    peer: Peer,
    shared: Arc<Shared>,
    dialect: Arc<dyn Dialect>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter").finish_non_exhaustive()
    }
}

impl Submitter {
    /// Submits `op` with no id: the agent makes one up and it is returned.
    pub async fn submit(&self, op: Op) -> Result<String, HostError> {
        self.send(Submission { id: None, op }).await
    }

    /// Submits `op` under the caller's submission id `id` (events it causes carry it).
    pub async fn submit_with_id(&self, id: impl Into<String>, op: Op) -> Result<String, HostError> {
        self.send(Submission { id: Some(id.into()), op }).await
    }

    async fn send(&self, submission: Submission) -> Result<String, HostError> {
        if self.shared.drain.is_cancelled() || self.shared.outcome().is_some() {
            return Err(self.shared.ended_error().await);
        }
        self.dialect.submit(&self.peer, &self.shared, submission).await
    }
}

/// The error for a submission that failed with `e`.
pub(crate) async fn submit_error(shared: &Shared, method: &'static str, e: RpcError) -> HostError {
    match e {
        RpcError::Remote(error) => HostError::Rejected { method, error },
        RpcError::MessageTooLarge { method, bytes, limit } => {
            HostError::MessageTooLarge { method, bytes, limit }
        }
        RpcError::Cancelled | RpcError::ConnectionClosed { .. } => shared.ended_error().await,
        e => e.into(),
    }
}

/// A live conversation with an agent process.
///
/// Events arrive through [`next_event`](Self::next_event) (a bounded channel;
/// `None` once the agent is gone and every event was read). Ops go through
/// [`submit`](Self::submit) / [`submit_with_id`](Self::submit_with_id) or a
/// cloned [`Submitter`]. Approvals are answered by the [`Approver`] given at
/// spawn and never appear as events.
///
/// The conversation ends by [`cancel`](Self::cancel) (or the caller's token),
/// [`shutdown`](Self::shutdown), the agent exiting or misbehaving, or drop
/// (which SIGKILLs the agent's tree synchronously).
pub struct Conversation {
    events: EventReceiver,
    /// The rest of the batch last received, in order.
    ready: std::collections::VecDeque<Event>,
    submitter: Submitter,
    init: InitializeResult,
    session: SessionStartResult,
    pid: u32,
    // Last: dropped after the rest.
    _guard: ProcessGuard,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("pid", &self.pid)
            .field("session_id", &self.session.session_id)
            .finish_non_exhaustive()
    }
}

impl Conversation {
    /// Spawns `command`, runs the handshake (`initialize`, `session/start`) and
    /// returns the live conversation.
    ///
    /// `cancel` cancels it at any time, the spawn and handshake included: the
    /// conversation's tasks use child tokens of it. Errors: the program cannot
    /// start ([`HostError::Spawn`]), the handshake times out, is rejected, or
    /// the agent dies or misbehaves during it (the child is killed and reaped
    /// before this returns), or [`HostError::Cancelled`].
    pub async fn spawn(
        command: AgentCommand,
        config: ConversationConfig,
        approver: Arc<dyn Approver>,
        cancel: CancellationToken,
    ) -> Result<Conversation, HostError> {
        Self::spawn_inner(&command, config, approver, cancel, false).await
    }

    pub(crate) async fn spawn_inner(
        command: &AgentCommand,
        config: ConversationConfig,
        approver: Arc<dyn Approver>,
        cancel: CancellationToken,
        one_shot: bool,
    ) -> Result<Conversation, HostError> {
        if cancel.is_cancelled() {
            return Err(HostError::Cancelled);
        }
        let dialect = config.protocol.dialect(&config);
        let extra = dialect.launch_args();
        let launched;
        let command = if extra.is_empty() {
            command
        } else {
            let mut with = command.clone();
            with.args(extra);
            launched = with;
            &launched
        };
        let agent = process::spawn(command)?;
        let child = Arc::new(agent.child);
        let pid = child.pid();
        let shared = Arc::new(Shared::new(&cancel, config.shutdown_deadline));
        let tail = Arc::new(StderrTail::default());
        let stderr_task = stderr::spawn_drain(agent.stderr, Arc::clone(&tail), pid);
        let capacity = config.event_capacity.max(1);
        let batch_max = capacity.min(MAX_EVENT_BATCH);
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(EventRoom::new(capacity));
        let events = EventReceiver { rx, room: Arc::clone(&room) };
        let sink = Arc::new(EventSink {
            tx,
            room,
            batch_max,
            filter: config.event_filter.clone(),
            shared: Arc::clone(&shared),
            one_shot,
            done: AtomicBool::new(false),
            one_shot_ended: AtomicBool::new(false),
            pending: std::sync::Mutex::new(Vec::new()),
            flushing: tokio::sync::Mutex::new(()),
        });
        let hub = Arc::new(ApprovalHub { approver, shared: Arc::clone(&shared) });
        // Any invalid input on the agent's stdout is a protocol violation.
        let protocol = ProtocolSignal::default();
        let violation = protocol.clone();
        let (peer, conn) = Peer::serve(
            agent.stdout,
            agent.stdin,
            dialect.router(sink, hub),
            protocol.hook_into(dialect.peer_config(config.rpc.clone())),
        );
        let conn = Arc::new(conn);
        let guard = ProcessGuard {
            child: Arc::clone(&child),
            conn: Arc::clone(&conn),
            stderr: stderr_task.abort_handle(),
            shared: Arc::clone(&shared),
        };
        tokio::spawn(
            Supervisor {
                child,
                peer: peer.clone(),
                dialect: Arc::clone(&dialect),
                conn,
                stderr_tail: tail,
                stderr_task: Some(stderr_task),
                protocol,
                shared: Arc::clone(&shared),
            }
            .run(),
        );

        let handshake = async {
            tokio::select! {
                biased;
                () = shared.cancel.cancelled() => Err(Some(Fault::Cancelled)),
                r = tokio::time::timeout(config.handshake_timeout, dialect.handshake(&peer, &config)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(Some(Fault::HandshakeTimeout(config.handshake_timeout))),
                },
                // The supervisor finished first (the agent died or misbehaved).
                _ = shared.wait_outcome() => Err(None),
            }
        };
        // The reader reports an invalid line to `violation` before it reads
        // the next one, so a violation written before the `session/start`
        // answer is always seen here: the order on the pipe decides, not which
        // task the scheduler runs first.
        let handshake = async {
            let result = handshake.await;
            match (&result, violation.detail()) {
                (Ok(_), Some(detail)) => Err(Some(Fault::Protocol(detail.to_owned()))),
                _ => result,
            }
        };
        match handshake.await {
            Ok((init, session)) => {
                // `session_configured` is written before the `session/start`
                // answer, but events are handled on another task than
                // answers: let it be handled, so the restored token usage is
                // there when this returns (bounded, for agents that skip it).
                if tokio::time::timeout(SESSION_CONFIGURED_WAIT, shared.session_configured()).await.is_err() {
                    debug!(pid, "no session_configured event before the session/start answer");
                }
                shared.established.store(true, Ordering::Release);
                debug!(pid, session_id = %session.session_id, agent = %init.agent_info.name, "conversation established");
                Ok(Conversation {
                    events,
                    ready: std::collections::VecDeque::new(),
                    submitter: Submitter { peer, shared, dialect },
                    init,
                    session,
                    pid,
                    _guard: guard,
                })
            }
            Err(fault) => {
                if let Some(fault) = fault {
                    shared.request_kill(fault);
                }
                let outcome = shared.wait_outcome().await;
                drop(guard);
                Err(outcome.error.unwrap_or(HostError::Closed))
            }
        }
    }

    /// The session id (from `session/start`).
    pub fn session_id(&self) -> &str {
        &self.session.session_id
    }

    /// Where the agent writes the session's rollout, if it persists one.
    pub fn rollout_path(&self) -> Option<&Path> {
        self.session.rollout_path.as_deref()
    }

    /// The agent's answer to `initialize` (name, version, capabilities).
    pub fn agent_info(&self) -> &InitializeResult {
        &self.init
    }

    /// The latest token usage: from the last `token_count` event (whatever
    /// the filter), initially from `session_configured` (restored on resume).
    pub fn token_usage(&self) -> Option<TokenUsageInfo> {
        *self.submitter.shared.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The agent's pid (also its process group and session id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Submits `op`; the agent picks the submission id, which is returned.
    pub async fn submit(&self, op: Op) -> Result<String, HostError> {
        self.submitter.submit(op).await
    }

    /// Submits `op` under the caller's submission id.
    pub async fn submit_with_id(&self, id: impl Into<String>, op: Op) -> Result<String, HostError> {
        self.submitter.submit_with_id(id, op).await
    }

    /// A cloneable handle for submitting from elsewhere.
    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// The next event, or `None` once the agent is gone and all events were read.
    pub async fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.try_next_event() {
            return Some(event);
        }
        // The channel is empty and so is the overflow; while the channel has
        // room the sink never adds to the overflow, so waiting on it is enough.
        match self.events.recv().await {
            Some(batch) => {
                self.ready.extend(batch);
                self.ready.pop_front()
            }
            None => self.submitter.shared.pop_overflow(),
        }
    }

    /// An event if one is ready.
    pub fn try_next_event(&mut self) -> Option<Event> {
        if self.ready.is_empty()
            && let Some(batch) = self.events.try_recv()
        {
            self.ready.extend(batch);
        }
        // The channel's events first, then those kept during the ending.
        self.ready.pop_front().or_else(|| self.submitter.shared.pop_overflow())
    }

    /// Runs the cancel ladder (see the crate docs) and returns how the agent
    /// ended. Idempotent; events already queued can still be read afterwards.
    pub async fn cancel(&mut self) -> Ending {
        self.submitter.shared.cancel.cancel();
        self.submitter.shared.wait_outcome().await.ending
    }

    /// Asks the agent to shut down (the `shutdown` op, then EOF), waits for it
    /// to exit within the deadline, kills its tree if it does not. Errors if
    /// the conversation had already failed (e.g. the agent crashed).
    pub async fn shutdown(&mut self) -> Result<Ending, HostError> {
        self.submitter.shared.shutdown_req.cancel();
        let outcome = self.submitter.shared.wait_outcome().await;
        outcome.error.map_or(Ok(outcome.ending), Err)
    }

    /// Waits until the conversation ends by itself (the agent exits, fails, or
    /// a cancel/shutdown started elsewhere completes).
    pub async fn wait(&mut self) -> Result<Ending, HostError> {
        let outcome = self.submitter.shared.wait_outcome().await;
        outcome.error.map_or(Ok(outcome.ending), Err)
    }

    /// The terminal error, once the conversation has ended with one.
    pub fn error(&self) -> Option<HostError> {
        self.submitter.shared.outcome().and_then(|o| o.error)
    }

    /// Whether the conversation has ended (the agent is gone and reaped).
    pub fn is_finished(&self) -> bool {
        self.submitter.shared.outcome().is_some()
    }

    /// Closes the event channel from the receiving side (further events are
    /// dropped without waiting); buffered ones can still be read.
    pub(crate) fn close_events(&mut self) {
        self.events.close();
    }
}

/// `None`: the connection is gone; the supervisor knows why.
pub(crate) fn handshake_fault(method: &'static str, e: RpcError) -> Option<Fault> {
    match e {
        RpcError::Remote(error) => Some(Fault::Handshake { method, error }),
        RpcError::ConnectionClosed { .. } => None,
        RpcError::MessageTooLarge { method, bytes, limit } => Some(Fault::Protocol(format!(
            "`{method}` ({bytes} bytes) is over the agent's line limit ({limit} bytes)"
        ))),
        RpcError::Decode { source, .. } => {
            Some(Fault::Protocol(format!("the answer to `{method}` does not decode: {source}")))
        }
        RpcError::Cancelled => Some(Fault::Cancelled),
        e => Some(Fault::Rpc(Arc::new(e))),
    }
}
