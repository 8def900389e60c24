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
