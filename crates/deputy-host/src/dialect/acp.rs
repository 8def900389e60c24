//! The Agent Client Protocol (v1): driving an ACP agent as a Deputy
//! conversation. The mapping itself (updates to events, permission
//! requests to approvals, decisions to options) is pure code in
//! [`deputy_acp::client`]; this is the I/O around it.
//!
//! - Handshake: `initialize` (no `fs`, no `terminal`: the agent runs its
//!   own tools), then `session/new`, or `session/load` to resume a session
//!   by id (its replay is not shown again). Nothing is sent before the
//!   `initialize` answer: the official SDK's agents reject pipelined
//!   requests. The conversation reports a `session_configured` event
//!   made from them.
//! - A user input is a `session/prompt`. The turn is the prompt: its
//!   `session/update`s are its events, its answer ends it. One turn at a
//!   time: a user input while one runs is rejected (-32014), as ACP asks
//!   clients to wait.
//! - `interrupt` is `session/cancel`, after which every pending permission
//!   request is answered `cancelled`; the prompt's answer (`cancelled`) ends
//!   the turn as `turn_aborted`.
//! - The ladder: `session/cancel` (if a turn runs) and `session/close` (if
//!   the agent offers it), then EOF, then the shared kill.
//!
//! The transport hands responses and requests over in order with the
//! notifications ([`PeerConfig::in_order`]): a prompt's answer ends its
//! turn only after every update before it was turned into events, and a
//! permission request is read after the `tool_call` it names.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use deputy_acp::client::{
    self, AgentInitialize, Ask, EventMapper, PermissionRequest, SessionCreated, SessionNotification, TurnEnd,
};
use deputy_acp::wire::{self, methods as acp};
use deputy_protocol::{
    Event, EventMsg, HistorySource, InitialHistory, InputItem, Op, PeerInfo, ReviewDecision,
    SessionStartResult, Submission, error_codes,
};
use deputy_rpc::{
    CancelStyle, ErrorObject, Peer, PeerConfig, RequestContext, RequestOptions, Router, RpcError,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{BoxFuture, Dialect, Established};
use crate::approver::{ApprovalRequest, ToolApprovalParams};
use crate::config::ConversationConfig;
use crate::conversation::{ApprovalHub, EventSink, Fault, Shared, handshake_fault, submit_error};
use crate::error::HostError;

const NAME: &str = "ACP";

/// The ACP dialect of one conversation.
pub(crate) struct Acp {
    /// Itself, for the tasks and handlers it starts (they must not keep it alive).
    me: Weak<Acp>,
    state: Mutex<State>,
    /// The sink, weakly: the router owns it, so the caller's channel closes
    /// when the connection's tasks end.
    sink: OnceLock<Weak<EventSink>>,
    session_id: OnceLock<String>,
    /// The agent offers `session/close`.
    can_close: AtomicBool,
    turns: AtomicU64,
}

struct State {
    mapper: EventMapper,
    turn: Option<Turn>,
}

/// The prompt turn running.
struct Turn {
    id: String,
    /// Fires on interrupt: pending permission requests are answered
    /// `cancelled`. A child of the conversation's drain token.
    approvals: CancellationToken,
    /// `session/cancel` was sent for it.
    cancelled: bool,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Acp {
    pub(crate) fn new(config: &ConversationConfig) -> Arc<Acp> {
        Arc::new_cyclic(|me| Acp {
            me: me.clone(),
            state: Mutex::new(State { mapper: EventMapper::new(&config.session.cwd), turn: None }),
            sink: OnceLock::new(),
            session_id: OnceLock::new(),
            can_close: AtomicBool::new(false),
            turns: AtomicU64::new(1),
        })
    }

    fn self_ref(&self) -> Weak<Acp> {
        self.me.clone()
    }

    fn session_id(&self) -> &str {
        self.session_id.get().map_or("", String::as_str)
    }

    fn sink(&self) -> Option<Arc<EventSink>> {
        self.sink.get().and_then(Weak::upgrade)
    }

    /// Sends `session/cancel` for the running turn (once), then withdraws
    /// its pending permission requests, which are answered `cancelled`
    /// after it (the spec's order).
    async fn interrupt(&self, peer: &Peer) {
        let (send, approvals) = {
            let mut state = lock(&self.state);
            let Some(turn) = state.turn.as_mut() else { return };
            (!std::mem::replace(&mut turn.cancelled, true), turn.approvals.clone())
        };
        if send
            && let Err(e) = peer.notify(acp::SESSION_CANCEL, client::session_params(self.session_id())).await
        {
            debug!(error = %e, "could not send session/cancel");
        }
        approvals.cancel();
    }

    /// Ends the running turn `turn_id` (if it still is) with `end`.
    async fn end_turn(&self, turn_id: &str, end: TurnEnd) {
        let events = {
            let mut state = lock(&self.state);
            if state.turn.as_ref().is_none_or(|t| t.id != turn_id) {
                return;
            }
            let cancelled = state.turn.take().is_some_and(|t| t.cancelled);
            let end = match end {
                // An agent that answers a cancelled prompt with an error.
                TurnEnd::Failed(_) if cancelled => TurnEnd::Stopped(Some(wire::StopReason::Cancelled)),
                end => end,
            };
            state.mapper.end_turn(turn_id, &end)
        };
        if let Some(sink) = self.sink() {
            deliver(&sink, turn_id, events).await;
        }
    }

    async fn on_update(&self, sink: &EventSink, note: SessionNotification) {
        if note.session_id != self.session_id() {
            debug!(session_id = %note.session_id, "ignoring an update of another session");
            return;
        }
        let (turn_id, events) = {
            let mut state = lock(&self.state);
            let State { mapper, turn } = &mut *state;
            let Some(turn) = turn.as_ref() else {
                debug!("ignoring an update outside a prompt turn");
                return;
            };
            (turn.id.clone(), mapper.update(&turn.id, &note.update))
        };
        for msg in events {
            sink.deliver(Event { id: turn_id.clone(), msg }).await;
        }
    }

    async fn on_permission(
        &self,
        peer: &Peer,
        hub: &ApprovalHub,
        request: PermissionRequest,
    ) -> Result<Value, ErrorObject> {
        if request.session_id != self.session_id() {
            return Err(ErrorObject::invalid_params(format!("unknown session `{}`", request.session_id)));
        }
        let (ask, within) = {
            let mut state = lock(&self.state);
            let State { mapper, turn } = &mut *state;
            match turn.as_ref() {
                // Outside a turn nothing can be allowed.
                None => return Ok(client::permission_answer(&wire::RequestPermissionOutcome::Cancelled)),
                Some(turn) => (mapper.permission(&turn.id, &request), turn.approvals.clone()),
            }
        };
        let Some(ask) = ask else {
            return Err(ErrorObject::invalid_params("`toolCall.toolCallId` is missing"));
        };
        let (call_id, approval) = match ask {
            Ask::Exec(params) => (params.call_id.clone(), ApprovalRequest::Exec(params)),
            Ask::Patch(params) => (params.call_id.clone(), ApprovalRequest::Patch(params)),
            Ask::Tool(t) => (
                t.call_id.clone(),
                ApprovalRequest::Tool(ToolApprovalParams {
                    call_id: t.call_id,
                    turn_id: t.turn_id,
                    tool: t.kind,
                    title: t.title,
                    input: t.input,
                    detail: t.detail,
                }),
            ),
        };
        let decision = hub.ask(approval, &within).await;
        if decision == ReviewDecision::Abort {
            // `abort` ends the turn: cancel it, then answer `cancelled`.
            self.interrupt(peer).await;
        }
        let outcome = client::choose(decision, &request.options);
        lock(&self.state).mapper.answered(&call_id, &outcome, &request.options);
        debug!(call_id, ?decision, ?outcome, "permission answered");
        Ok(client::permission_answer(&outcome))
    }

    async fn prompt(
        &self,
        peer: &Peer,
        shared: &Arc<Shared>,
        id: Option<String>,
        items: Vec<InputItem>,
    ) -> Result<String, HostError> {
        let text = items.iter().map(|InputItem::Text { text }| text.as_str()).collect::<Vec<_>>().join("\n");
        let turn_id = id.unwrap_or_else(|| format!("turn-{}", self.turns.fetch_add(1, Ordering::Relaxed)));
        {
            let mut state = lock(&self.state);
            if state.turn.is_some() {
                return Err(HostError::Rejected {
                    method: acp::SESSION_PROMPT,
                    error: ErrorObject::new(
                        error_codes::TURN_IN_PROGRESS,
                        "a prompt turn is running: an ACP agent takes one at a time (interrupt it, or wait for its end)",
                    ),
                });
            }
            state.turn =
                Some(Turn { id: turn_id.clone(), approvals: shared.drain.child_token(), cancelled: false });
        }
        if let Some(sink) = self.sink() {
            // Before the prompt is sent, so before any of its updates; not
            // waiting for room: the caller may read only after this returns.
            let started = EventMsg::TaskStarted { turn_id: turn_id.clone(), model_context_window: None };
            sink.deliver_now(Event { id: turn_id.clone(), msg: started });
        }
        let opts = RequestOptions::default().send_cancel_on_drop(false);
        let mut answer = Box::pin(peer.request_with::<_, Value>(
            acp::SESSION_PROMPT,
            client::prompt_params(self.session_id(), &text),
            opts,
        ));
        // The first poll queues the line: a prompt that cannot be sent
        // (too large, the agent gone) is the caller's error.
        // A future must not be polled again once it is ready: keep the
        // first poll's answer, if it came at once.
        let early = match futures::poll!(&mut answer) {
            std::task::Poll::Ready(Err(e)) => {
                lock(&self.state).turn = None;
                return Err(submit_error(shared, acp::SESSION_PROMPT, e).await);
            }
            std::task::Poll::Ready(Ok(result)) => Some(result),
            std::task::Poll::Pending => None,
        };
        let dialect = self.self_ref();
        let id = turn_id.clone();
        tokio::spawn(async move {
            let answered = match early {
                Some(result) => Ok(result),
                None => answer.await,
            };
            let end = match answered {
                Ok(result) => TurnEnd::Stopped(client::stop_reason_of(&result)),
                Err(RpcError::Remote(error)) => {
                    TurnEnd::Failed(format!("the agent failed the prompt: {error}"))
                }
                Err(RpcError::Decode { source, .. }) => {
                    TurnEnd::Failed(format!("the agent's answer to the prompt does not decode: {source}"))
                }
                Err(_) => TurnEnd::Cut,
            };
            if let Some(dialect) = dialect.upgrade() {
                dialect.end_turn(&id, end).await;
            }
        });
        Ok(turn_id)
    }
}

/// Hands events of `turn_id` to the caller, as one batch.
async fn deliver(sink: &EventSink, turn_id: &str, events: Vec<EventMsg>) {
    for msg in events {
        sink.deliver(Event { id: turn_id.to_owned(), msg }).await;
    }
    sink.flush().await;
}

impl Dialect for Acp {
    fn peer_config(&self, config: PeerConfig) -> PeerConfig {
        PeerConfig { cancel_style: CancelStyle::Acp, in_order: true, ..config }
    }

    fn router(&self, sink: Arc<EventSink>, hub: Arc<ApprovalHub>) -> Router {
        let _ = self.sink.set(Arc::downgrade(&sink));
        let me = self.self_ref();
        let mut router = Router::new();
        super::flush_each_batch(&mut router, &sink);
        let updates = me.clone();
        router.notification(acp::SESSION_UPDATE, move |note: SessionNotification| {
            let sink = Arc::clone(&sink);
            let dialect = updates.upgrade();
            async move {
                if let Some(dialect) = dialect {
                    dialect.on_update(&sink, note).await;
                }
            }
        });
        router.request(
            acp::SESSION_REQUEST_PERMISSION,
            move |request: PermissionRequest, cx: RequestContext| {
                let hub = Arc::clone(&hub);
                let dialect = me.upgrade();
                async move {
                    match dialect {
                        Some(dialect) => dialect.on_permission(&cx.peer, &hub, request).await,
                        None => Ok(client::permission_answer(&wire::RequestPermissionOutcome::Cancelled)),
                    }
                }
            },
        );
        router
    }

    fn handshake<'a>(
        &'a self,
        peer: &'a Peer,
        config: &'a ConversationConfig,
    ) -> BoxFuture<'a, Result<Established, Option<Fault>>> {
        Box::pin(async move {
            if let Some(what) = super::uncarried(&config.session, super::Carried::default()) {
                return Err(Some(Fault::Unsupported { protocol: NAME, what }));
            }
            let params =
                client::initialize_params(&config.client_info.name, config.client_info.version.as_deref());
            let raw: Value = peer
                .request(acp::INITIALIZE, params)
                .await
                .map_err(|e| handshake_fault(acp::INITIALIZE, e))?;
            let init: AgentInitialize = serde_json::from_value(raw.clone()).map_err(|e| {
                Some(Fault::Protocol(format!("the answer to `initialize` does not decode: {e}")))
            })?;
            if init.protocol_version != wire::PROTOCOL_VERSION {
                return Err(Some(Fault::Version(
                    u32::from(wire::PROTOCOL_VERSION),
                    u32::from(init.protocol_version),
                )));
            }
            self.can_close
                .store(init.agent_capabilities.session_capabilities.close.is_some(), Ordering::Relaxed);
            let cwd = &config.session.cwd;
            let session_id = match &config.session.initial_history {
                InitialHistory::Resumed { from: HistorySource::SessionId(id) } => {
                    if !init.agent_capabilities.load_session {
                        return Err(Some(Fault::Unsupported {
                            protocol: NAME,
                            what: "a resumed session (this agent does not offer `session/load`)".into(),
                        }));
                    }
                    // Set first: the replay's updates name it (and are not shown again).
                    let _ = self.session_id.set(id.clone());
                    let _: Value = peer
                        .request(acp::SESSION_LOAD, client::load_session_params(id, cwd))
                        .await
                        .map_err(|e| handshake_fault(acp::SESSION_LOAD, e))?;
                    id.clone()
                }
                _ => {
                    let created: SessionCreated = peer
                        .request(acp::SESSION_NEW, client::new_session_params(cwd))
                        .await
                        .map_err(|e| handshake_fault(acp::SESSION_NEW, e))?;
                    let _ = self.session_id.set(created.session_id.clone());
                    created.session_id
                }
            };
            let info = init.agent_info.clone();
            let agent_info = PeerInfo {
                name: info.as_ref().map_or_else(|| "acp-agent".to_owned(), |i| i.name.clone()),
                version: info.map(|i| i.version).filter(|v| !v.is_empty()),
            };
            // The agent's own answer, for callers that want ACP's details.
            let result = super::foreign_initialize(agent_info, Some(json!({ "acp": { "initialize": raw } })));
            if let Some(sink) = self.sink() {
                let configured = EventMsg::SessionConfigured {
                    session_id: session_id.clone(),
                    model: String::new(),
                    rollout_path: None,
                    history_len: 0,
                    token_usage: None,
                    cwd: cwd.clone(),
                    approval_policy: config.session.approval_policy,
                    forked_from: None,
                };
                deliver(&sink, "", vec![configured]).await;
            }
            Ok((result, SessionStartResult { session_id, rollout_path: None }))
        })
    }

    fn submit<'a>(
        &'a self,
        peer: &'a Peer,
        shared: &'a Arc<Shared>,
        submission: Submission,
    ) -> BoxFuture<'a, Result<String, HostError>> {
        Box::pin(async move {
            let Submission { id, op } = submission;
            match op {
                Op::UserInput { items } => self.prompt(peer, shared, id, items).await,
                Op::Interrupt => {
                    self.interrupt(peer).await;
                    Ok(id.unwrap_or_else(|| "interrupt".to_owned()))
                }
                Op::Shutdown => {
                    // The ladder, gracefully: session/close if offered, then EOF.
                    shared.shutdown_req.cancel();
                    Ok(id.unwrap_or_else(|| "shutdown".to_owned()))
                }
            }
        })
    }

    fn ending(&self, peer: &Peer, interrupt: bool, tag: String) -> BoxFuture<'static, ()> {
        let close = (self.can_close.load(Ordering::Relaxed) && self.session_id.get().is_some()).then(|| {
            let opts = RequestOptions::default().send_cancel_on_drop(false);
            peer.request_with::<_, Value>(acp::SESSION_CLOSE, client::session_params(self.session_id()), opts)
        });
        let dialect = self.self_ref();
        let peer = peer.clone();
        Box::pin(async move {
            if interrupt && let Some(dialect) = dialect.upgrade() {
                dialect.interrupt(&peer).await;
            }
            match close {
                Some(close) => {
                    debug!(tag, "closing the ACP session");
                    let _ = close.await;
                }
                None => std::future::pending().await,
            }
        })
    }
}
