//! Deputy's wire data model.
//!
//! Deputy runs an AI sub-agent as a child process that speaks newline-delimited
//! JSON-RPC 2.0 over stdio. This crate holds the plain data that crosses that
//! pipe — params and results of every method, the [`Op`]s a host submits and
//! the [`Event`]s an agent emits, approvals, histories and rollout items — as
//! serde types with no runtime attached, so that any transport or test can use
//! them. `PROTOCOL.md` at the repository root is the prose contract; the JSON
//! Schema and TypeScript types in `schema/` are generated from these types
//! (see [`schema`]).
//!
//! Conventions: every enum on the wire is tagged with `"type"` and spelled in
//! `snake_case`; optional fields may be omitted or `null`; unknown fields are
//! ignored so newer peers can add fields without breaking older ones.
//!
//! # The JSON shape
//!
//! What goes in the `params` of a `submit` request and comes in the `params`
//! of an `event` notification (a JSON-RPC envelope around each, one per line):
//!
//! ```
//! use deputy_protocol::{Event, EventMsg, Op, Submission};
//!
//! let submission = Submission { id: Some("s1".into()), op: Op::text("list the files") };
//! assert_eq!(
//!     serde_json::to_string(&submission).unwrap(),
//!     r#"{"id":"s1","op":{"type":"user_input","items":[{"type":"text","text":"list the files"}]}}"#
//! );
//!
//! let event = Event { id: "s1".into(), msg: EventMsg::AgentMessageDelta { delta: "Sure".into() } };
//! assert_eq!(
//!     serde_json::to_string(&event).unwrap(),
//!     r#"{"id":"s1","msg":{"type":"agent_message_delta","delta":"Sure"}}"#
//! );
//!
//! // Reading: optional fields may be absent, unknown fields are ignored...
//! let line = r#"{"id":"s1","msg":{"type":"task_complete","turn_id":"t1","since":"v2"}}"#;
//! let event: Event = serde_json::from_str(line).unwrap();
//! assert_eq!(event.msg, EventMsg::TaskComplete { turn_id: "t1".into(), last_agent_message: None });
//! assert!(event.msg.ends_turn());
//!
//! // ...and an event type this version does not know decodes as `Unknown`,
//! // for the host to skip.
//! let line = r#"{"id":"s1","msg":{"type":"plan_updated","steps":[]}}"#;
//! let event: Event = serde_json::from_str(line).unwrap();
//! assert_eq!(event.msg, EventMsg::Unknown);
//! ```

#![warn(missing_docs)]

pub mod error_codes;
mod events;
mod handshake;
mod history;
mod id;
pub mod methods;
mod ops;
pub mod schema;

pub use events::*;
pub use handshake::*;
pub use history::*;
pub use id::RequestId;
pub use ops::*;

/// The protocol version this crate describes. Sent in `initialize`.
pub const PROTOCOL_VERSION: u32 = 1;
