#![warn(missing_docs)]
//! The Agent Client Protocol (ACP) v1, as Deputy speaks it: wire types
//! ([`wire`]) and the mapping between them and Deputy's own protocol
//! ([`map`], for an agent speaking ACP; [`client`], for a host driving an
//! ACP agent). Plain data and pure functions: no tokio, no I/O. The agent's
//! ACP face (`deputy agent --protocol acp`) and `deputy-host`'s ACP dialect
//! are built on it.
//!
//! # Why hand-written types
//!
//! The published `agent-client-protocol-schema` crate (1.20.0, the types the
//! official SDKs are generated from) was the first choice: it is plain serde
//! types with no transport, so it fits the bounded, streaming design. It
//! does not fit the workspace, though: it enables `serde_json`'s
//! `preserve_order` feature, and Cargo unifies features, so adding it would
//! flip every `serde_json::Map` in the `deputy` build from sorted to
//! insertion order — the checked-in JSON Schema (`deputy schema --check`)
//! and every `Value` the host and agent print would change under them. It
//! also brings ~23 k lines of types (and `derive_more`, `strum`,
//! `serde_with`, `indexmap`) for the dozen messages Deputy uses.
//!
//! So the few types are written here, field for field after the official
//! v1 schema (`schema/v1/schema.json` of `@agentclientprotocol/sdk`), with
//! only the fields Deputy sends — never a custom field at the root of an
//! ACP type (extensions would go in `_meta`), never an unstable one. The
//! end-to-end test (`tests/acp_agent.rs`) validates every line the agent
//! writes against that official schema, and drives the agent with the
//! official TypeScript SDK.
//!
//! Incoming messages are decoded leniently (unknown fields ignored, as the
//! spec asks of receivers); outgoing ones strictly follow the schema.

pub mod client;
pub mod map;
pub mod wire;

pub use map::{FileDiff, PromptError, TurnMapper, prompt_text, replay, stop_reason};
