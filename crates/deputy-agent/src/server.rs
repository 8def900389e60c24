//! The protocol front: routes `initialize`, `session/start` and `submit`, and
//! runs the connection until shutdown, end of input, or a simulated crash.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deputy_protocol::error_codes as codes;
use deputy_protocol::{
    AgentCapabilities, InitializeParams, InitializeResult, PROTOCOL_VERSION, PeerInfo, SessionStartParams,
    Submission, SubmitResult, methods,
};
use deputy_rpc::{ErrorObject, Peer, RawValue, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::config::{AgentConfig, Protocol};
use crate::session::{self, Actor, ActorCmd, ExitRequest, is_hung};
use crate::util::uuid_v7;

/// After end of input, how long the agent may take to answer what it read,
/// end the session and write its last messages (a host that stopped reading
/// cannot hold it longer).
const EOF_BUDGET: Duration = Duration::from_millis(900);
/// After `shutdown` (or a scenario's `exit`), how long the agent waits for its
/// answers to be sent and its last messages to be written.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

enum Slot {
    None,
    Starting,
    Started(mpsc::UnboundedSender<ActorCmd>),
}

/// Requests being handled, so that the exit waits for their answers.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

pub(crate) struct InFlightGuard(Arc<Agent>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.in_flight.idle.notify_waiters();
        }
    }
}

pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    pub(crate) initialized: AtomicBool,
    /// The native protocol's one session.
    slot: Mutex<Slot>,
    /// The ACP face's sessions (several per process), by id.
    pub(crate) acp_sessions: Mutex<std::collections::HashMap<String, crate::acp::AcpSession>>,
    pub(crate) exit_tx: mpsc::UnboundedSender<ExitRequest>,
    in_flight: InFlight,
}

fn decode<T: DeserializeOwned>(raw: &RawValue) -> Result<T, ErrorObject> {
    serde_json::from_str(raw.get())
        .map_err(|e| ErrorObject::new(codes::INVALID_PARAMS, "Invalid params").with_data(e.to_string()))
}

fn not_initialized() -> ErrorObject {
    ErrorObject::new(codes::NOT_INITIALIZED, "not initialized: send `initialize` first")
}

impl Agent {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.in_flight.idle.notified();
            if self.in_flight.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn initialize(&self, raw: &RawValue, peer: &Peer) -> Result<InitializeResult, ErrorObject> {
        if self.initialized.load(Ordering::Acquire) {
            return Err(ErrorObject::new(codes::ALREADY_INITIALIZED, "already initialized"));
        }
        let params: InitializeParams = decode(raw)?;
        if params.protocol_version != PROTOCOL_VERSION {
            return Err(ErrorObject::new(
                codes::UNSUPPORTED_PROTOCOL_VERSION,
                format!("unsupported protocol version {}", params.protocol_version),
            )
            .with_data(json!({ "supported": [PROTOCOL_VERSION] })));
        }
        if self.initialized.swap(true, Ordering::AcqRel) {
            return Err(ErrorObject::new(codes::ALREADY_INITIALIZED, "already initialized"));
        }
        info!(client = %params.client_info.name, version = ?params.client_info.version, "initialized");
        // Never write a line the host announced it would reject: an event or
        // approval request over it fails at the sender (see `turn`).
        if let Some(limit) = params.capabilities.max_line_bytes {
            peer.set_max_outgoing_bytes(Some(usize::try_from(limit).unwrap_or(usize::MAX)));
        }
        Ok(InitializeResult {
            protocol_version: PROTOCOL_VERSION,
            agent_info: PeerInfo { name: "deputy".into(), version: Some(env!("CARGO_PKG_VERSION").into()) },
            capabilities: AgentCapabilities {
                ops: vec!["user_input".into(), "interrupt".into(), "shutdown".into()],
                models: crate::MODELS.iter().map(|m| (*m).to_owned()).collect(),
                initial_history: vec!["new".into(), "resumed".into(), "forked".into()],
                max_line_bytes: Some(self.config.peer.max_line_bytes as u64),
                sandbox: Some(crate::sandbox::support().clone()),
            },
            meta: None,
        })
    }

    async fn session_start(
        self: Arc<Self>,
        raw: Box<RawValue>,
        peer: Peer,
    ) -> Result<deputy_protocol::SessionStartResult, ErrorObject> {
        if !self.initialized.load(Ordering::Acquire) {
            return Err(not_initialized());
        }
        {
            let mut slot = self.slot();
            if !matches!(*slot, Slot::None) {
                return Err(ErrorObject::new(
                    codes::SESSION_ALREADY_STARTED,
                    "a session was already started (one session per process)",
                ));
            }
            *slot = Slot::Starting;
        }
        let started = decode::<SessionStartParams>(&raw).and_then(|params| {
            session::start(params, &self.config, peer, self.exit_tx.clone(), Protocol::Native)
        });
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                *self.slot() = Slot::None;
                return Err(e);
            }
        };
        info!(session = %started.session.id, "session started");
        let session = Arc::clone(&started.session);
        *self.slot() = Slot::Started(Actor::spawn(started.session));
        // `session_configured` goes out before the response (FIFO writer queue).
        session.emit("", &started.configured).await;
        Ok(started.result)
    }

    async fn submit(self: Arc<Self>, raw: Box<RawValue>) -> Result<SubmitResult, ErrorObject> {
        if !self.initialized.load(Ordering::Acquire) {
            return Err(not_initialized());
        }
        let tx = match &*self.slot() {
            Slot::Started(tx) => tx.clone(),
            _ => return Err(ErrorObject::new(codes::NO_SESSION, "no session: send `session/start` first")),
        };
        let sub: Submission = decode(&raw)?;
        let id = sub.id.unwrap_or_else(uuid_v7);
        let shutting_down = || ErrorObject::new(codes::SHUTTING_DOWN, "the agent is shutting down");
        let (reply, answer) = oneshot::channel();
        debug!(id = %id, op = sub.op.kind(), "submit");
        if tx.send(ActorCmd::Submit { id: id.clone(), op: sub.op, reply }).is_err() {
            return Err(shutting_down());
        }
        match answer.await {
            Ok(Ok(())) => Ok(SubmitResult { id }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(shutting_down()),
        }
    }

    /// Every session actor: the native one, or the ACP face's.
    fn actors(&self) -> Vec<mpsc::UnboundedSender<ActorCmd>> {
        let mut actors: Vec<_> = match &*self.slot() {
            Slot::Started(tx) => vec![tx.clone()],
            _ => Vec::new(),
        };
        let acp = self.acp_sessions.lock().unwrap_or_else(|e| e.into_inner());
        actors.extend(acp.values().map(|s| s.actor.clone()));
        actors
    }
}

pub(crate) async fn hang_if_hung() {
    if is_hung() {
        std::future::pending::<()>().await;
    }
}

fn router(agent: &Arc<Agent>) -> Router {
    let mut router = Router::new();
    let a = Arc::clone(agent);
    router.request(methods::INITIALIZE, move |raw: Box<RawValue>, ctx| {
        let guard = a.enter();
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            let r = a.initialize(&raw, &ctx.peer);
            drop(guard);
            r
        }
    });
    let a = Arc::clone(agent);
    router.request(methods::SESSION_START, move |raw: Box<RawValue>, ctx| {
        let guard = a.enter();
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            let r = a.session_start(raw, ctx.peer.clone()).await;
            drop(guard);
            r
        }
    });
    let a = Arc::clone(agent);
    router.request(methods::SUBMIT, move |raw: Box<RawValue>, _ctx| {
        let guard = a.enter();
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            let r = a.submit(raw).await;
            drop(guard);
            r
        }
    });
    let a = Arc::clone(agent);
    router.fallback(move |method, _params, _ctx| {
        let initialized = a.initialized.load(Ordering::Acquire);
        async move {
            hang_if_hung().await;
            if initialized {
                Err::<(), _>(ErrorObject::method_not_found(&method))
            } else {
                Err(not_initialized())
            }
        }
    });
    router
}

/// Serves the protocol on `reader`/`writer` until `shutdown`, end of input,
/// or a scenario's `exit` step; returns the process exit code (0, or the
/// `exit` step's code). Must run inside a tokio runtime; `deputy agent` uses
/// a current-thread one ([`run_stdio`]).
///
/// End of input (or a failed write) is a shutdown: every request read before
/// it is handled and answered first (the transport half-closes: it keeps
/// writing after EOF), then the running turn is aborted (`turn_aborted`,
/// reason `shutdown` unless an interrupt already aborted it), the rollout is
/// synced and `shutdown_complete` (id `""`) is written — unless a `shutdown`
/// read before the end already did all of that. In every case the output is
/// flushed and the write side closed before this returns.
pub async fn serve<R, W>(reader: R, writer: W, config: AgentConfig) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve_until(reader, writer, config, std::future::pending()).await
}

/// [`serve`], and also end like end of input when `stop` resolves (how
/// `deputy agent` handles SIGTERM and SIGHUP): the running turn is aborted
/// (`turn_aborted`, reason `shutdown`), its tools are killed, the rollout is
/// synced and `shutdown_complete` (id `""`) is written; then the agent
/// returns 0. Requests still unanswered are not waited for.
pub async fn serve_until<R, W, S>(reader: R, writer: W, config: AgentConfig, stop: S) -> i32
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: std::future::Future<Output = ()> + Send,
{
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let mut peer_config = config.peer.clone();
    let protocol = config.protocol;
    if protocol == Protocol::Acp {
        // ACP withdraws a request with `$/cancel_request {"requestId"}`.
        peer_config.cancel_style = deputy_rpc::CancelStyle::Acp;
    }
    let agent = Arc::new(Agent {
        config,
        initialized: AtomicBool::new(false),
        slot: Mutex::new(Slot::None),
        acp_sessions: Mutex::new(std::collections::HashMap::new()),
        exit_tx,
        in_flight: InFlight::default(),
    });
    let router = match protocol {
        Protocol::Native => router(&agent),
        Protocol::Acp => crate::acp::router(&agent),
    };
    let (peer, conn) = Peer::serve(reader, writer, router, peer_config);
    let input_ended = async {
        // End of input, or stdout is broken (nothing can be delivered any
        // more), or a signal: `true` when requests read so far are waited for.
        tokio::select! {
            () = peer.read_closed() => true,
            () = peer.write_closed() => true,
            () = stop => false,
        }
    };
    let (code, deadline) = tokio::select! {
        req = exit_rx.recv() => {
            let deadline = Instant::now() + FLUSH_GRACE;
            match req {
                Some(ExitRequest::Crash(code)) => (code, deadline),
                _ => {
                    // Let the `shutdown` submit (and any other) be answered first.
                    let _ = tokio::time::timeout_at(deadline, agent.wait_idle()).await;
                    (0, deadline)
                }
            }
        },
        wait_for_requests = input_ended => {
            debug!(reason = ?peer.close_reason(), wait_for_requests, "end of input or signal: shutting down");
            if is_hung() {
                std::future::pending::<()>().await;
            }
            let deadline = Instant::now() + EOF_BUDGET;
            // The transport half-closes: requests read before the end are still
            // being handled and their answers can still be written. Let every one
            // be answered (an `interrupt` and a `shutdown` read just before EOF
            // both take effect, in order), then end like `shutdown`.
            if wait_for_requests {
                let _ = tokio::time::timeout_at(deadline, agent.wait_idle()).await;
            }
            let actors = agent.actors();
            for tx in &actors {
                // Ignored if a `shutdown` already stopped the actor; either way the
                // actor is done (turn ended, rollout synced, `shutdown_complete`
                // queued) when its channel closes.
                let _ = tx.send(ActorCmd::ConnectionClosed);
            }
            for tx in &actors {
                let _ = tokio::time::timeout_at(deadline, tx.closed()).await;
            }
            match exit_rx.try_recv() {
                Ok(ExitRequest::Crash(code)) => (code, deadline),
                _ => (0, deadline),
            }
        }
    };
    // Answers are queued in the same poll in which their handler finishes (and
    // `wait_idle` wakes after that), so this flush covers them too.
    tokio::task::yield_now().await;
    if tokio::time::timeout_at(deadline, peer.flush()).await.is_err() {
        debug!("the output could not be flushed in time");
    }
    peer.close();
    let _ = tokio::time::timeout_at(deadline, conn.wait()).await;
    code
}

/// Runs [`serve`] on this process's stdin and stdout on a current-thread
/// runtime (light start-up; tools' `PR_SET_PDEATHSIG` is tied to the thread
/// that spawned them, which is then always the main thread). Returns the exit
/// code.
pub fn run_stdio(config: AgentConfig) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("deputy agent: cannot start the runtime: {e}");
            return 1;
        }
    };
    // This process is the agent and nothing else: it adopts the orphans of
    // its commands, so none outlives its command (see `exec`).
    if let Err(e) = crate::exec::adopt_orphans() {
        tracing::warn!(error = %e, "cannot become a child subreaper: a command's daemonised leftovers may survive it");
    }
    let code = rt.block_on(async {
        // SIGTERM and SIGHUP (a host's polite kill, a closed terminal) end the
        // session gracefully: the rollout is synced and the host told.
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
                (Ok(mut term), Ok(mut hup)) => {
                    let which = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = hup.recv() => "SIGHUP",
                    };
                    info!(signal = which, "signal: shutting down");
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "cannot handle SIGTERM/SIGHUP; they will kill the agent at once");
                    std::future::pending::<()>().await;
                }
            }
        };
        let (input, output) = crate::stdio::stdio();
        serve_until(input, output, config, stop).await
    });
    crate::exec::kill_leftovers();
    // Where stdin is not a pipe, its reader may be parked in a blocking read
    // on the pool: do not wait for it.
    rt.shutdown_background();
    code
}
