//! Helpers of the mappings' unit tests.

use deputy_protocol::EventMsg;
use serde_json::Value;

use crate::{ForeignSession, Output};

/// Feeds one line (as JSON) to a session.
pub(crate) fn recv(s: &mut impl ForeignSession, v: Value) -> Vec<Output> {
    s.receive(&v.to_string()).unwrap()
}

/// The lines among the outputs, parsed.
pub(crate) fn sends(out: &[Output]) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(l) => Some(serde_json::from_str(l).unwrap()),
            _ => None,
        })
        .collect()
}

/// The events among the outputs.
pub(crate) fn msgs(out: &[Output]) -> Vec<EventMsg> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.msg.clone()),
            _ => None,
        })
        .collect()
}
