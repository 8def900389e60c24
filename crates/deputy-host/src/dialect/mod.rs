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

use deputy_protocol::{InitializeResult, SessionStartResult, Submission};
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
