//! Which events reach the caller.

use std::fmt;
use std::sync::Arc;

use deputy_protocol::EventMsg;

/// Which events are forwarded to the caller's channel. Filtered-out events are
/// still seen by the host (token usage is tracked from `token_count` and
/// `session_configured` whatever the filter).
#[derive(Clone, Default)]
pub enum EventFilter {
    /// Like the seed: drops `agent_message_delta`, `agent_reasoning_delta`,
    /// `token_count` and `session_configured`.
    #[default]
    Default,
    /// Everything (editors want deltas).
    All,
    /// Forward the events for which the function returns true.
    Custom(Arc<dyn Fn(&EventMsg) -> bool + Send + Sync>),
}

impl EventFilter {
    /// A [`EventFilter::Custom`] from a closure.
    pub fn custom(f: impl Fn(&EventMsg) -> bool + Send + Sync + 'static) -> Self {
        EventFilter::Custom(Arc::new(f))
    }

    /// Whether `msg` is forwarded.
    #[inline]
    pub fn passes(&self, msg: &EventMsg) -> bool {
        match self {
            EventFilter::Default => !matches!(
                msg,
                EventMsg::AgentMessageDelta { .. }
                    | EventMsg::AgentReasoningDelta { .. }
                    | EventMsg::TokenCount { .. }
                    | EventMsg::SessionConfigured { .. }
            ),
            EventFilter::All => true,
            EventFilter::Custom(f) => f(msg),
        }
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventFilter::Default => f.write_str("Default"),
            EventFilter::All => f.write_str("All"),
            EventFilter::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_drops_deltas_token_counts_and_session_configured() {
        let f = EventFilter::default();
        assert!(!f.passes(&EventMsg::AgentMessageDelta { delta: "x".into() }));
        assert!(!f.passes(&EventMsg::AgentReasoningDelta { delta: "x".into() }));
        assert!(!f.passes(&EventMsg::TokenCount { info: None }));
        let sc: EventMsg = serde_json::from_str(
            r#"{"type":"session_configured","session_id":"s","model":"m","history_len":0,"cwd":"/","approval_policy":"ask_always"}"#,
        )
        .unwrap();
        assert!(!f.passes(&sc));
        assert!(f.passes(&EventMsg::AgentMessage { message: "x".into() }));
        assert!(f.passes(&EventMsg::TaskComplete { turn_id: "t".into(), last_agent_message: None }));
        assert!(f.passes(&EventMsg::Unknown));
        assert!(EventFilter::All.passes(&sc));
        let only_errors = EventFilter::custom(|m| matches!(m, EventMsg::Error { .. }));
        assert!(only_errors.passes(&EventMsg::Error { message: "x".into() }));
        assert!(!only_errors.passes(&EventMsg::AgentMessage { message: "x".into() }));
        assert_eq!(format!("{only_errors:?}"), "Custom(..)");
    }
}
