//! Anthropic's Claude Code CLI in `-p` stream-json mode, as a Deputy
//! sub-agent.
//!
//! [`wire`] holds the messages; [`ClaudeSession`] maps them to and from
//! Deputy's protocol. Launch (from PEERS.md, verified with Claude Code
//! 2.1.332): the native binary with [`ClaudeConfig::launch_args`] added to
//! the user's command, the user's environment (`ANTHROPIC_BASE_URL`,
//! `CLAUDE_CONFIG_DIR`, …).

mod map;
pub mod wire;

pub use map::{ClaudeConfig, ClaudeSession, FileReader, ReadFile};

#[cfg(test)]
mod tests;
