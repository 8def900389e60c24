//! OpenAI Codex's `app-server` (protocol v2), as a Deputy sub-agent.
//!
//! [`wire`] holds the messages; [`CodexSession`] maps them to and from
//! Deputy's protocol. Launch (from PEERS.md, verified with Codex 0.171.0):
//! the native binary with the argument `app-server` (stdio is the default
//! transport), the user's environment (`CODEX_HOME` selects the config).

mod map;
pub mod wire;

pub use map::{CodexConfig, CodexSession, approval_policy_name, sandbox_name};

#[cfg(test)]
mod tests;
