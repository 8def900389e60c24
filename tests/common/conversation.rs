//! Reading a `deputy_host::Conversation`'s events in tests.

use std::time::Duration;

use deputy_host::Conversation;
use deputy_protocol::{Event, EventMsg};

/// The next event; fails the test if none comes `within`, or the stream ends.
pub async fn next_within(conv: &mut Conversation, within: Duration) -> Event {
    tokio::time::timeout(within, conv.next_event())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .expect("the event stream ended")
}

/// Events until the turn `turn` ends (that event included), each within `within`.
pub async fn turn_events_within(conv: &mut Conversation, turn: &str, within: Duration) -> Vec<EventMsg> {
    let mut seen = Vec::new();
    loop {
        let event = next_within(conv, within).await;
        let ends = event.id == turn && event.msg.ends_turn();
        seen.push(event.msg);
        if ends {
            return seen;
        }
    }
}
