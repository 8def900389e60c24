//! Settings of a conversation.

use std::time::Duration;

use deputy_protocol::{PeerInfo, SessionStartParams};
use deputy_rpc::PeerConfig;

use crate::dialect::AgentProtocol;
use crate::filter::EventFilter;

/// Default capacity of the caller's event channel.
pub const DEFAULT_EVENT_CAPACITY: usize = 512;
/// Default time the agent has to answer `initialize` and `session/start`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of the cancel ladder, after which the agent's tree is killed.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_millis(500);

/// How to start and run a conversation.
#[derive(Debug, Clone)]
pub struct ConversationConfig {
    /// The protocol the agent speaks (default: Deputy's own). Over ACP
    /// only `session.cwd` and a resume by session id reach the agent (for
    /// Codex also the approval policy and sandbox; see DIALECTS.md); the
    /// other session params cannot be carried, and a non-default one fails
    /// the handshake with [`HostError::Unsupported`](crate::HostError::Unsupported).
    pub protocol: AgentProtocol,
    /// Params of `session/start` (cwd, history, approval policy, model, …).
    pub session: SessionStartParams,
    /// Who the host is, sent in `initialize`.
    pub client_info: PeerInfo,
    /// How many events may wait for the caller (default 512, at least 1). They
    /// are handed over in batches of up to 256 (one batch per read from the
    /// agent), so at most about this many events wait in the channel, plus
    /// the batch being decoded. When it is full, the agent is slowed down
    /// (backpressure through the pipe), except while the conversation is ending.
    pub event_capacity: usize,
    /// Which events reach the caller.
    pub event_filter: EventFilter,
    /// Time for `initialize` + `session/start` (default 10 s).
    pub handshake_timeout: Duration,
    /// The cancel ladder's budget (default 500 ms): by its end the agent's
    /// whole process tree is dead and reaped. The agent gets the budget less
    /// [`KILL_RESERVE`](crate::KILL_RESERVE) (150 ms, at most a third of it) to exit
    /// by itself; then its tree is killed, within the reserve.
    pub shutdown_deadline: Duration,
    /// Transport settings.
    pub rpc: PeerConfig,
}

impl ConversationConfig {
    /// Defaults, with these session params.
    pub fn new(session: SessionStartParams) -> Self {
        ConversationConfig {
            protocol: AgentProtocol::Deputy,
            session,
            client_info: PeerInfo {
                name: "deputy-host".to_owned(),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            },
            event_capacity: DEFAULT_EVENT_CAPACITY,
            event_filter: EventFilter::Default,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            rpc: PeerConfig::default(),
        }
    }

    /// Sets the protocol the agent speaks.
    #[must_use]
    pub fn protocol(mut self, protocol: AgentProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets the client info sent in `initialize`.
    #[must_use]
    pub fn client_info(mut self, name: impl Into<String>, version: Option<String>) -> Self {
        self.client_info = PeerInfo { name: name.into(), version };
        self
    }

    /// Sets the event channel's capacity.
    #[must_use]
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Sets the event filter.
    #[must_use]
    pub fn event_filter(mut self, filter: EventFilter) -> Self {
        self.event_filter = filter;
        self
    }

    /// Sets the handshake timeout.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets the cancel ladder's deadline.
    #[must_use]
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Sets the transport settings.
    #[must_use]
    pub fn rpc(mut self, rpc: PeerConfig) -> Self {
        self.rpc = rpc;
        self
    }
}
