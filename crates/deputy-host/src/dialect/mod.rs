//! Wire dialects: how a conversation talks to an agent that speaks Deputy's
//! own protocol, or another one.
//!
//! A dialect turns the agent's wire into Deputy's model — the handshake,
//! [`Op`](deputy_protocol::Op)s, [`Event`](deputy_protocol::Event)s and
//! approvals — and nothing else: spawning, the event channel and its
//! filter, the approver, the supervisor and the cancel ladder are the
//! conversation's, the same for every dialect. What a dialect decides:
//!
//! - the transport settings it needs (ACP: its cancel notification, and
//!   responses handed over in order with the notifications);
//! - the handlers of the agent's messages (events into the sink, approval
//!   requests through the hub);
//! - the handshake, and what the conversation reports of it
//!   ([`InitializeResult`], [`SessionStartResult`]);
//! - what a submission sends;
//! - the first step of the ladder: the messages that ask the agent to stop
//!   (sent back to back, answers not awaited).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use deputy_protocol::{
    AgentCapabilities, ApprovalPolicy, HistorySource, InitialHistory, InitializeResult, PROTOCOL_VERSION,
    PeerInfo, SessionStartParams, SessionStartResult, Submission,
};
use deputy_rpc::{Peer, PeerConfig, Router};

use crate::config::ConversationConfig;
use crate::conversation::{ApprovalHub, EventSink, Fault, Shared};
use crate::error::HostError;

pub(crate) mod acp;
pub(crate) mod foreign;
pub(crate) mod native;

/// The protocol the agent speaks on stdio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AgentProtocol {
    /// Deputy's own protocol (PROTOCOL.md): `deputy agent` and its peers.
    #[default]
    Deputy,
    /// The Agent Client Protocol, v1: `deputy agent --protocol acp`, Gemini
    /// CLI `--acp`, the Codex and Claude Code ACP adapters, … (the mapping
    /// is in PROTOCOL.md, "Driving an ACP agent").
    Acp,
    /// OpenAI Codex's app-server (v2): `codex app-server`. The mapping is
    /// in DIALECTS.md.
    Codex,
    /// Claude Code in `-p` stream-json mode: `claude`, to which the host
    /// adds the protocol flags and the session (`--input-format
    /// stream-json --output-format stream-json --verbose
    /// --permission-prompt-tool stdio --session-id ID`, or `--resume ID`,
    /// and `--include-partial-messages`). The mapping is in DIALECTS.md.
    Claude,
}

impl AgentProtocol {
    /// The name used on the command line (`deputy`, `acp`, `codex`, `claude`).
    pub fn name(self) -> &'static str {
        match self {
            AgentProtocol::Deputy => "deputy",
            AgentProtocol::Acp => "acp",
            AgentProtocol::Codex => "codex",
            AgentProtocol::Claude => "claude",
        }
    }

    pub(crate) fn dialect(self, config: &ConversationConfig) -> Arc<dyn Dialect> {
        match self {
            AgentProtocol::Deputy => Arc::new(native::Native),
            AgentProtocol::Acp => acp::Acp::new(config),
            AgentProtocol::Codex => foreign::Foreign::new(foreign::Kind::Codex, config),
            AgentProtocol::Claude => foreign::Foreign::new(foreign::Kind::Claude, config),
        }
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the handshake established.
pub(crate) type Established = (InitializeResult, SessionStartResult);

/// One wire dialect (see the module docs).
pub(crate) trait Dialect: Send + Sync + 'static {
    /// Arguments the dialect adds to the agent's command (its protocol flags).
    fn launch_args(&self) -> Vec<String> {
        Vec::new()
    }

    /// The transport settings, from the caller's.
    fn peer_config(&self, config: PeerConfig) -> PeerConfig {
        config
    }

    /// The handlers of the agent's messages.
    fn router(&self, sink: Arc<EventSink>, hub: Arc<ApprovalHub>) -> Router;

    /// Runs the handshake. `Err(None)`: the connection is gone (the
    /// supervisor knows why).
    fn handshake<'a>(
        &'a self,
        peer: &'a Peer,
        config: &'a ConversationConfig,
    ) -> BoxFuture<'a, Result<Established, Option<Fault>>>;

    /// Sends a submission; the submission id on success.
    fn submit<'a>(
        &'a self,
        peer: &'a Peer,
        shared: &'a Arc<Shared>,
        submission: Submission,
    ) -> BoxFuture<'a, Result<String, HostError>>;

    /// The ladder's messages, queued now in order (`interrupt`: the turn is
    /// to stop too, not only the session); the future resolves when they
    /// were answered, or never. `tag` names the ladder's shutdown for logs
    /// and ids.
    fn ending(&self, peer: &Peer, interrupt: bool, tag: String) -> BoxFuture<'static, ()>;

    /// Whether the dialect closes the agent's stdin itself during the
    /// ladder (once the agent may see EOF: Claude Code finishes a running
    /// turn on EOF), instead of the ladder right after [`ending`](Self::ending).
    fn closes_input_itself(&self) -> bool {
        false
    }

    /// The agent's tree is about to be killed with its output unread: end
    /// what the dialect keeps open (events the caller is owed).
    fn killed(&self) {}

    /// The part of the ladder's budget kept for the kill (see
    /// [`KILL_RESERVE`](crate::KILL_RESERVE)); an agent that is slow to die
    /// and be reaped gets more (at most half the budget).
    fn kill_reserve(&self) -> std::time::Duration {
        crate::KILL_RESERVE
    }
}

/// Flushes the event batch each time the dispatcher has handled one read's
/// worth of the agent's messages (one wake-up of the caller per batch).
pub(crate) fn flush_each_batch(router: &mut Router, sink: &Arc<EventSink>) {
    let sink = Arc::clone(sink);
    router.notification_batch_end(move || {
        let sink = Arc::clone(&sink);
        async move { sink.flush().await }
    });
}

/// The `initialize` result the host reports for an agent of another
/// protocol, which has no such answer of its own: it takes the three ops.
pub(crate) fn foreign_initialize(agent_info: PeerInfo, meta: Option<serde_json::Value>) -> InitializeResult {
    InitializeResult {
        protocol_version: PROTOCOL_VERSION,
        agent_info,
        capabilities: AgentCapabilities {
            ops: ["user_input", "interrupt", "shutdown"].map(str::to_owned).to_vec(),
            ..AgentCapabilities::default()
        },
        meta,
    }
}

/// Which session settings a foreign protocol carries beyond the cwd and a
/// resume by session id.
#[derive(Clone, Copy, Default)]
pub(crate) struct Carried {
    pub approval_policy: bool,
    pub sandbox: bool,
}

/// The first session setting a foreign protocol cannot carry, named for
/// `HostError::Unsupported`; checked before anything is sent.
pub(crate) fn uncarried(session: &SessionStartParams, carried: Carried) -> Option<String> {
    let default = SessionStartParams::new(&session.cwd);
    let named = [
        (session.model.is_some(), "a model selection (the agent uses its own model)"),
        (
            !carried.approval_policy && session.approval_policy != ApprovalPolicy::default(),
            "an approval policy (the agent decides when to ask)",
        ),
        (!session.writable_roots.is_empty(), "writable roots"),
        (session.on_busy != default.on_busy, "an `on_busy` other than `reject` (one turn at a time)"),
        (
            !carried.sandbox && session.sandbox.is_some(),
            "sandbox settings (the agent sandboxes its own tools, or not)",
        ),
        (session.network, "network settings (the agent sandboxes its own tools, or not)"),
        (session.exec != default.exec, "exec settings"),
        (matches!(session.initial_history, InitialHistory::Forked { .. }), "a forked history"),
        (
            matches!(
                session.initial_history,
                InitialHistory::Resumed { from: HistorySource::RolloutPath(_) | HistorySource::Items(_) }
            ),
            "a resume from a rollout file (resume by session id)",
        ),
    ];
    named.iter().find(|(set, _)| *set).map(|(_, what)| (*what).to_owned())
}
