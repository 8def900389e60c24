//! The Agent Client Protocol face (`deputy agent --protocol acp`): the same
//! engine — sessions, turns, tools, approvals, rollouts — behind ACP v1.
//!
//! The seam is the session's [`Face`]: the turn engine emits Deputy events
//! and asks approvals as always; the native face writes them as `event`
//! notifications and `approval/*` requests, this one as `session/update`
//! notifications and `session/request_permission` requests (the mapping is
//! in `deputy-acp`, the tables in PROTOCOL.md). The router below replaces
//! the native one: `initialize`, `session/new|load|prompt|close`, the
//! `session/cancel` notification; anything else is `-32601`.
//!
//! Differences from the native face, on purpose:
//! - Several sessions per process (editors open one per thread), each its
//!   own actor.
//! - `session/prompt` is answered when the turn ends, with its stop reason
//!   (`end_turn`, `max_turn_requests`, or `cancelled` — never an error).
//! - The client's `fs`/`terminal` capabilities are ignored: the agent runs
//!   its own tools, in its own sandbox rules.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use deputy_acp::map::{Permission, patch_tool_call, permission, permission_options};
use deputy_acp::wire::{
    self, AgentCapabilities, Empty, Implementation, InitializeRequest, InitializeResponse,
    LoadSessionRequest, McpCapabilities, NewSessionRequest, PromptCapabilities, PromptRequest,
    PromptResponse, RequestPermissionRequest, RequestPermissionResponse, SessionCapabilities,
    SessionIdParams, SessionNotification, SessionUpdate, StopReason, ToolCallContent, ToolCallStatus,
    ToolCallUpdate, methods,
};
use deputy_acp::{FileDiff, TurnMapper, prompt_text, replay, stop_reason};
use deputy_protocol::error_codes as codes;
use deputy_protocol::{
    EventMsg, ExecApprovalParams, HistorySource, InitialHistory, Op, PatchApprovalParams, ReviewDecision,
    SessionStartParams,
};
use deputy_rpc::{ErrorObject, Peer, RawValue, RequestOptions, Router, RpcError};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::Protocol;
use crate::patch::{FileOp, PreparedPatch};
use crate::server::{Agent, hang_if_hung};
use crate::session::{self, Actor, ActorCmd};
use crate::util::uuid_v7;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a session talks to its client.
pub(crate) enum Face {
    /// Deputy's protocol: `event` notifications, `approval/*` requests.
    Native,
    /// ACP: `session/update` notifications, `session/request_permission`.
    Acp(Arc<AcpFace>),
}

/// An approval the turn engine needs.
pub(crate) enum ApprovalRequest {
    Exec(ExecApprovalParams),
    Patch(PatchApprovalParams),
}

/// A live ACP session: its actor and its face.
pub(crate) struct AcpSession {
    pub actor: mpsc::UnboundedSender<ActorCmd>,
    pub face: Arc<AcpFace>,
}

/// One session's ACP side: maps its events, asks its permissions, answers
/// its prompts when their turns end.
pub(crate) struct AcpFace {
    session_id: String,
    cwd: PathBuf,
    peer: Peer,
    mapper: Mutex<TurnMapper>,
    /// The `session/prompt` waiting for each running turn, by turn id.
    prompts: Mutex<HashMap<String, oneshot::Sender<StopReason>>>,
    /// Turns that reached the cap of model calls.
    capped: Mutex<HashSet<String>>,
    /// Requests answered `reject_always`: denied without asking from then on.
    denied_for_session: Mutex<HashSet<String>>,
}

impl AcpFace {
    pub fn new(session_id: String, cwd: PathBuf, peer: Peer) -> Self {
        AcpFace {
            mapper: Mutex::new(TurnMapper::new(cwd.clone())),
            session_id,
            cwd,
            peer,
            prompts: Mutex::new(HashMap::new()),
            capped: Mutex::new(HashSet::new()),
            denied_for_session: Mutex::new(HashSet::new()),
        }
    }

    /// Sends one update; false when the connection is closed. An update
    /// over the client's line limit is dropped with a warning on stderr
    /// (ACP has no way to tell the client of the gap).
    async fn send(&self, update: &SessionUpdate) -> bool {
        let params = SessionNotification { session_id: &self.session_id, update };
        match self.peer.notify(methods::SESSION_UPDATE, params).await {
            Ok(()) => true,
            Err(e @ RpcError::MessageTooLarge { .. }) => {
                warn!(error = %e, kind = update.kind(), "a session/update was not sent");
                true
            }
            Err(_) => false,
        }
    }

    async fn send_all(&self, updates: &[SessionUpdate]) -> bool {
        let mut ok = true;
        for u in updates {
            ok &= self.send(u).await;
        }
        ok
    }

    /// The session's events, mapped; a turn's end also answers its prompt.
    pub async fn emit(&self, warnings: Vec<String>, msg: &EventMsg) -> bool {
        for message in warnings {
            let updates = lock(&self.mapper).event(&EventMsg::Warning { message });
            self.send_all(&updates).await;
        }
        let updates = lock(&self.mapper).event(msg);
        let ok = self.send_all(&updates).await;
        if let EventMsg::TaskComplete { turn_id, .. } | EventMsg::TurnAborted { turn_id, .. } = msg {
            let capped = lock(&self.capped).remove(turn_id);
            // Queued after every update of the turn (FIFO writer), so the
            // answer comes last.
            if let (Some(reason), Some(tx)) = (stop_reason(msg, capped), lock(&self.prompts).remove(turn_id))
            {
                let _ = tx.send(reason);
            }
        }
        ok
    }

    pub fn note_capped(&self, turn_id: &str) {
        lock(&self.capped).insert(turn_id.to_owned());
    }

    /// Keeps the full before/after texts of a patch's files, for its diff.
    /// Skipped (the tool call then shows Deputy's unified diffs) past
    /// [`deputy_acp::map::MAX_DIFF_BYTES`].
    pub fn note_patch(&self, call_id: &str, prepared: &PreparedPatch) {
        let mut diffs = Vec::new();
        let mut bytes = 0usize;
        for op in &prepared.ops {
            let (path, new_text) = match op {
                FileOp::Write { path, content } => (path, content.clone()),
                FileOp::Delete { path } => (path, String::new()),
            };
            let too_big =
                std::fs::metadata(path).is_ok_and(|m| m.len() as usize > deputy_acp::map::MAX_DIFF_BYTES);
            let old_text = if too_big { None } else { std::fs::read_to_string(path).ok() };
            bytes += old_text.as_ref().map_or(0, String::len) + new_text.len();
            if too_big || bytes > deputy_acp::map::MAX_DIFF_BYTES {
                return;
            }
            diffs.push(FileDiff { path: path.clone(), old_text, new_text });
        }
        lock(&self.mapper).note_patch(call_id, diffs);
    }

    fn register_prompt(&self, turn_id: &str) -> oneshot::Receiver<StopReason> {
        let (tx, rx) = oneshot::channel();
        lock(&self.prompts).insert(turn_id.to_owned(), tx);
        rx
    }

    /// Announces the tool call (`tool_call`, status `pending`), then asks
    /// `session/request_permission` naming it. A rejection ends the tool
    /// call `failed` here (the engine sends nothing for a call it does not
    /// run); a withdrawn request leaves it to the turn's end.
    pub async fn ask(
        self: Arc<Self>,
        request: ApprovalRequest,
        options: RequestOptions,
    ) -> Result<ReviewDecision, RpcError> {
        let (mut call, key) = match &request {
            ApprovalRequest::Exec(p) => {
                let mut call =
                    deputy_acp::map::exec_tool_call(&p.call_id, &p.command, &p.cwd, ToolCallStatus::Pending);
                if let Some(reason) = &p.reason {
                    call.content.push(ToolCallContent::text(reason.clone()));
                }
                (call, format!("exec {}", serde_json::to_string(&p.command).unwrap_or_default()))
            }
            ApprovalRequest::Patch(p) => {
                let diffs = lock(&self.mapper).diffs(&p.call_id).map(<[FileDiff]>::to_vec);
                let call = patch_tool_call(
                    &p.call_id,
                    &p.changes,
                    diffs.as_deref(),
                    &self.cwd,
                    ToolCallStatus::Pending,
                );
                let files: Vec<&String> = p.changes.keys().collect();
                (call, format!("patch {}", serde_json::to_string(&files).unwrap_or_default()))
            }
        };
        if let ApprovalRequest::Patch(p) = &request
            && !p.outside_workspace.is_empty()
        {
            // Leaving the workspace is its own decision: say so in the question.
            let paths: Vec<String> = p.outside_workspace.iter().map(|o| o.display().to_string()).collect();
            let mut text = format!("This patch writes OUTSIDE the workspace: {}", paths.join(", "));
            if let Some(root) = &p.grant_root {
                text.push_str(&format!(
                    "\n\"Allow for this session\" adds {} to the workspace for the rest of the session.",
                    root.display()
                ));
            }
            call.content.insert(0, ToolCallContent::text(text));
        }
        let call_id = call.tool_call_id.clone();
        let params = RequestPermissionRequest {
            session_id: self.session_id.clone(),
            tool_call: ToolCallUpdate::from(&call),
            options: permission_options(),
        };
        let announce = lock(&self.mapper).announce(call);
        self.send(&announce).await;
        if lock(&self.denied_for_session).contains(&key) {
            let failed = lock(&self.mapper).fail(&call_id, "rejected: denied for this session");
            if let Some(u) = failed {
                self.send(&u).await;
            }
            return Ok(ReviewDecision::Denied);
        }
        let answer = self
            .peer
            .request_with::<_, RequestPermissionResponse>(
                methods::SESSION_REQUEST_PERMISSION,
                params,
                options,
            )
            .await;
        let (result, why) = match answer {
            Ok(r) => {
                let p = permission(&r.outcome);
                if p == Permission::DeniedForSession {
                    lock(&self.denied_for_session).insert(key);
                }
                let d = p.decision();
                let why = match d {
                    ReviewDecision::Abort => Some("cancelled: the turn ends".to_owned()),
                    ReviewDecision::Denied => Some("rejected".to_owned()),
                    _ => None,
                };
                (Ok(d), why)
            }
            // Withdrawn (cancel) or unanswerable (EOF): the turn is ending,
            // and its end closes the tool call.
            Err(e @ (RpcError::Cancelled | RpcError::ConnectionClosed { .. })) => (Err(e), None),
            Err(e) => {
                let why = format!("not run: the permission request failed ({e})");
                (Err(e), Some(why))
            }
        };
        if let Some(why) = why {
            let failed = lock(&self.mapper).fail(&call_id, &why);
            if let Some(u) = failed {
                self.send(&u).await;
            }
        }
        result
    }
}

// ---------------------------------------------------------------------------
// The router.

fn decode<T: DeserializeOwned>(raw: &RawValue) -> Result<T, ErrorObject> {
    serde_json::from_str(raw.get())
        .map_err(|e| ErrorObject::new(codes::INVALID_PARAMS, "Invalid params").with_data(e.to_string()))
}

fn not_initialized() -> ErrorObject {
    // ACP has no code of its own for this; -32002 is its `resource_not_found`.
    ErrorObject::new(codes::INVALID_REQUEST, "not initialized: send `initialize` first")
}

fn unknown_session(id: &str) -> ErrorObject {
    ErrorObject::new(wire::error_codes::RESOURCE_NOT_FOUND, format!("no session `{id}` in this agent"))
        .with_data(serde_json::json!({ "sessionId": id }))
}

fn shutting_down() -> ErrorObject {
    ErrorObject::new(codes::SHUTTING_DOWN, "the agent is shutting down")
}

impl Agent {
    fn require_init(&self) -> Result<(), ErrorObject> {
        if self.initialized.load(Ordering::Acquire) { Ok(()) } else { Err(not_initialized()) }
    }

    fn acp_session(&self, id: &str) -> Result<(mpsc::UnboundedSender<ActorCmd>, Arc<AcpFace>), ErrorObject> {
        let sessions = lock(&self.acp_sessions);
        let s = sessions.get(id).ok_or_else(|| unknown_session(id))?;
        Ok((s.actor.clone(), Arc::clone(&s.face)))
    }

    fn acp_initialize(&self, raw: &RawValue) -> Result<InitializeResponse, ErrorObject> {
        let params: InitializeRequest = decode(raw)?;
        if self.initialized.swap(true, Ordering::AcqRel) {
            return Err(ErrorObject::new(codes::INVALID_REQUEST, "already initialized"));
        }
        // Negotiation per the spec: the requested version if supported, else
        // the latest this agent speaks (the client then decides).
        info!(client = ?params.client_info.as_ref().map(|c| &c.name), requested = params.protocol_version, "ACP initialized");
        Ok(InitializeResponse {
            protocol_version: wire::PROTOCOL_VERSION,
            agent_capabilities: AgentCapabilities {
                load_session: true,
                prompt_capabilities: PromptCapabilities {
                    image: false,
                    audio: false,
                    embedded_context: true,
                },
                mcp_capabilities: McpCapabilities { http: false, sse: false },
                session_capabilities: SessionCapabilities { close: Some(Empty {}) },
            },
            auth_methods: Vec::new(),
            agent_info: Implementation {
                name: "deputy".into(),
                title: Some("Deputy".into()),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        })
    }

    /// Starts a session (new or loaded) and registers it; returns it.
    fn acp_start(
        &self,
        params: SessionStartParams,
        peer: Peer,
        mcp_servers: usize,
    ) -> Result<(Arc<crate::session::Session>, Arc<AcpFace>), ErrorObject> {
        if mcp_servers > 0 {
            warn!(count = mcp_servers, "ignoring the client's MCP servers: Deputy's tools are its own");
        }
        let started = session::start(params, &self.config, peer, self.exit_tx.clone(), Protocol::Acp)?;
        let crate::acp::Face::Acp(face) = &started.session.face else {
            unreachable!("an ACP session has the ACP face")
        };
        Ok((Arc::clone(&started.session), Arc::clone(face)))
    }

    fn acp_register(&self, session: Arc<crate::session::Session>, face: Arc<AcpFace>) {
        let id = session.id.clone();
        let actor = Actor::spawn(session);
        lock(&self.acp_sessions).insert(id, AcpSession { actor, face });
    }

    async fn acp_prompt(self: Arc<Self>, raw: Box<RawValue>) -> Result<PromptResponse, ErrorObject> {
        self.require_init()?;
        let p: PromptRequest = decode(&raw)?;
        let (actor, face) = self.acp_session(&p.session_id)?;
        let items = prompt_text(&p.prompt).map_err(|e| ErrorObject::invalid_params(e.0))?;
        let turn_id = uuid_v7();
        let done = face.register_prompt(&turn_id);
        let (reply, answer) = oneshot::channel();
        if actor.send(ActorCmd::Submit { id: turn_id.clone(), op: Op::UserInput { items }, reply }).is_err() {
            return Err(shutting_down());
        }
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                lock(&face.prompts).remove(&turn_id);
                return Err(e);
            }
            Err(_) => return Err(shutting_down()),
        }
        // A session closed or ended under the prompt ends it `cancelled`.
        let stop_reason = done.await.unwrap_or(StopReason::Cancelled);
        debug!(turn = %turn_id, ?stop_reason, "prompt answered");
        Ok(PromptResponse { stop_reason })
    }
}

/// The ACP router.
pub(crate) fn router(agent: &Arc<Agent>) -> Router {
    let mut router = Router::new();
    let a = Arc::clone(agent);
    router.request(methods::INITIALIZE, move |raw: Box<RawValue>, _ctx| {
        let guard = a.enter();
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            let r = a.acp_initialize(&raw);
            drop(guard);
            r
        }
    });
    let a = Arc::clone(agent);
    router.request(methods::SESSION_NEW, move |raw: Box<RawValue>, ctx| {
        let guard = a.enter();
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            let r = (|| {
                a.require_init()?;
                let p: NewSessionRequest = decode(&raw)?;
                let (session, face) =
                    a.acp_start(SessionStartParams::new(p.cwd), ctx.peer.clone(), p.mcp_servers.len())?;
                let session_id = session.id.clone();
                a.acp_register(session, face);
                info!(session = %session_id, "ACP session started");
                Ok(wire::NewSessionResponse { session_id })
            })();
            drop(guard);
            r
        }
    });
    let a = Arc::clone(agent);
    router.request(methods::SESSION_LOAD, move |raw: Box<RawValue>, ctx| {
        let guard = a.enter();
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            let r = async {
                a.require_init()?;
                let p: LoadSessionRequest = decode(&raw)?;
                if lock(&a.acp_sessions).contains_key(&p.session_id) {
                    return Err(ErrorObject::new(
                        codes::INVALID_REQUEST,
                        format!("session `{}` is already loaded in this agent", p.session_id),
                    ));
                }
                let mut params = SessionStartParams::new(p.cwd);
                params.initial_history =
                    InitialHistory::Resumed { from: HistorySource::SessionId(p.session_id.clone()) };
                let (session, face) =
                    a.acp_start(params, ctx.peer.clone(), p.mcp_servers.len()).map_err(|e| {
                        if e.code == codes::HISTORY_UNAVAILABLE {
                            unknown_session(&p.session_id).with_data(e.message)
                        } else {
                            e
                        }
                    })?;
                // The whole conversation goes out before the answer, and
                // nothing of it after: the actor (and so any new event)
                // starts only once the replay is queued.
                let updates = replay(&session.history(), &session.cwd);
                face.send_all(&updates).await;
                a.acp_register(session, face);
                info!(session = %p.session_id, replayed = updates.len(), "ACP session loaded");
                Ok(Empty {})
            }
            .await;
            drop(guard);
            r
        }
    });
    let a = Arc::clone(agent);
    router.request(methods::SESSION_PROMPT, move |raw: Box<RawValue>, _ctx| {
        // Not counted in flight: a prompt lasts a whole turn, and end of
        // input must not wait for it (the turn is aborted, which answers it).
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            a.acp_prompt(raw).await
        }
    });
    let a = Arc::clone(agent);
    router.request(methods::SESSION_CLOSE, move |raw: Box<RawValue>, _ctx| {
        let guard = a.enter();
        let a = Arc::clone(&a);
        async move {
            hang_if_hung().await;
            let r = async {
                a.require_init()?;
                let p: SessionIdParams = decode(&raw)?;
                let removed = lock(&a.acp_sessions).remove(&p.session_id);
                let s = removed.ok_or_else(|| unknown_session(&p.session_id))?;
                // Like end of input for this one session: the turn is
                // aborted (its prompt answered `cancelled`), tools killed,
                // the rollout synced; then the actor is gone.
                let _ = s.actor.send(ActorCmd::ConnectionClosed);
                s.actor.closed().await;
                info!(session = %p.session_id, "ACP session closed");
                Ok(Empty {})
            }
            .await;
            drop(guard);
            r
        }
    });
    let a = Arc::clone(agent);
    router.notification(methods::SESSION_CANCEL, move |p: serde_json::Value| {
        let a = Arc::clone(&a);
        async move {
            let Some(id) = p.get("sessionId").and_then(|v| v.as_str()) else {
                debug!("session/cancel without a sessionId: ignored");
                return;
            };
            let Ok((actor, _)) = a.acp_session(id) else {
                debug!(session = id, "session/cancel for an unknown session: ignored");
                return;
            };
            // Exactly the native `interrupt`: the turn body is dropped,
            // commands killed, pending permissions withdrawn.
            let (reply, _) = oneshot::channel();
            let _ = actor.send(ActorCmd::Submit { id: uuid_v7(), op: Op::Interrupt, reply });
        }
    });
    router.fallback(move |method, _params, _ctx| async move {
        hang_if_hung().await;
        // Unknown methods, `_`-prefixed extensions included.
        Err::<(), _>(ErrorObject::method_not_found(&method))
    });
    router
}
