#![warn(missing_docs)]
//! deputy-host: run a Deputy sub-agent as a child process.
//!
//! The parent side of the Deputy protocol (`PROTOCOL.md`): spawn any program
//! that speaks it (normally [`AgentCommand::deputy_agent`]), run the handshake,
//! and drive it as an interactive [`Conversation`] or a [`OneShot`]. Approval
//! requests go to an [`Approver`]; events come through a bounded channel,
//! filtered by an [`EventFilter`]. Cancellation is a `CancellationToken`;
//! the agent is gone — its whole process tree — within the 500 ms deadline.
//!
//! ```no_run
//! use std::sync::Arc;
//! use deputy_host::{AgentCommand, ApproveAll, ConversationConfig, Conversation};
//! use deputy_protocol::{Op, SessionStartParams};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), deputy_host::HostError> {
//! let config = ConversationConfig::new(SessionStartParams::new("/path/to/project"));
//! let cancel = CancellationToken::new(); // cancel it to stop everything
//! let mut conversation =
//!     Conversation::spawn(AgentCommand::deputy_agent(), config, Arc::new(ApproveAll), cancel).await?;
//! println!("session {}", conversation.session_id());
//!
//! let turn = conversation.submit_with_id("turn-1", Op::text("$ echo hello")).await?;
//! while let Some(event) = conversation.next_event().await {
//!     println!("{}: {:?}", event.id, event.msg);
//!     if event.id == turn && event.msg.ends_turn() {
//!         break;
//!     }
//! }
//! println!("tokens: {:?}", conversation.token_usage());
//! let ending = conversation.shutdown().await?;
//! println!("agent ended: {ending:?}");
//! # Ok(()) }
//! ```
//!
//! The same, runnable: `examples/conversation.rs` in the repository
//! (`cargo build && cargo run --example conversation`; `tests/readme.rs`
//! runs it).
//!
//! # Agents of other protocols
//!
//! [`ConversationConfig::protocol`] picks the agent's wire: Deputy's own
//! (the default), ACP ([`AgentProtocol::Acp`]: Gemini CLI `--acp`,
//! codex-acp, …), OpenAI Codex's app-server ([`AgentProtocol::Codex`]) or
//! Claude Code's stream-json mode ([`AgentProtocol::Claude`]). The caller
//! sees the same events, approvals and cancel ladder whatever the agent
//! speaks; settings a protocol cannot carry fail the spawn with
//! [`HostError::Unsupported`]. Mapping tables: PROTOCOL.md §9 (ACP) and
//! DIALECTS.md (Codex, Claude Code).
//!
//! # Process hygiene
//!
//! - The agent is spawned with `posix_spawn` and `POSIX_SPAWN_SETSID`: it leads
//!   a new session and process group (pgid = sid = its pid), with all three
//!   stdio pipes. No `fork()`: its cost would grow with the host's memory.
//! - stderr is drained concurrently (an undrained pipe blocks the child) into
//!   `tracing` (target `deputy_host::agent_stderr`, debug) and a bounded tail
//!   of the last 64 KiB, attached to errors ([`HostError::stderr_tail`]).
//! - The agent dying at any moment (crash, `exit`, killed) ends the
//!   conversation promptly: pending submissions fail with
//!   [`HostError::AgentExited`] (exit status + stderr tail), the event stream
//!   ends, nothing hangs. Writing anything but JSON-RPC messages to stdout
//!   ([`HostError::ProtocolViolation`]: whatever `deputy-rpc` reports through
//!   its invalid-input hook — not JSON, not UTF-8, JSON that is not a JSON-RPC
//!   message, an oversized line, an empty batch; the error names the code, the
//!   reason and the start of the line) or not finishing the handshake in time
//!   ([`HostError::HandshakeTimeout`], default 10 s) kill it at once. Closing
//!   stdout while alive ([`HostError::StdoutClosed`]: the read side ended but
//!   the process still runs) kills it after the deadline.
//! - Flooding stderr is not an error: it is drained as fast as it comes and
//!   only the last 64 KiB are kept.
//! - Killing "the tree" ([`deputy_proctree`]): every descendant of the agent
//!   by parent links, every process of its session and of its group, and the
//!   agent, are frozen with `SIGSTOP` (re-reading `/proc` until nothing new
//!   shows up, so a fork cannot slip through), then SIGKILLed. Only then is
//!   the agent reaped (no zombie, and its pid cannot be reused while we signal
//!   it). `deputy agent` is a child subreaper, so even a tool's grandchild
//!   that double-forked into a session of its own is still its descendant and
//!   dies. For a third-party agent that is not one, [`AgentCommand::reaped`]
//!   starts it under `deputy`'s reaper, which gives it the same property.
//!   Limits: Linux only (elsewhere: the group kill); a process that leaves
//!   the PID namespace or is re-parented by a debugger is not followed.
//! - Outgoing lines never exceed the `max_line_bytes` the agent announced in
//!   `initialize`: a too-large submission fails with
//!   [`HostError::MessageTooLarge`] and nothing is sent. The host announces
//!   its own limit to the agent (`capabilities.max_line_bytes`).
//!
//! # The cancel ladder (the 500 ms contract)
//!
//! On cancel — the caller's token (the conversation uses child tokens of it),
//! [`Conversation::cancel`], or drop:
//!
//! 1. pending approvals are answered `abort` and the approver is told
//!    ([`Approver::cancelled`], [`ApprovalContext::token`]); `interrupt` and
//!    `shutdown` are sent back to back (their answers are not awaited),
//!    flushed, and the agent's stdin is closed right after: a half-close of
//!    the connection (`Peer::close_write`), EOF being one more shutdown signal;
//! 2. the host keeps reading stdout (events are no longer waited for: a
//!    consumer that stopped reading cannot wedge it) until the agent exits and
//!    its stdout ends — `deputy agent` answers both requests and writes
//!    `turn_aborted` and `shutdown_complete` after the EOF — or the end of the
//!    drain window: the budget (`shutdown_deadline`, 500 ms) less
//!    [`KILL_RESERVE`] (150 ms, at most a third of the budget);
//! 3. then the tree is frozen and SIGKILLed, the agent reaped and the reader
//!    tasks aborted (a grandchild holding the pipe cannot keep them alive),
//!    inside the reserve: the tree is dead and reaped within the budget;
//! 4. in every case it ends with a tree kill, so grandchildren do not outlive
//!    the agent.
//!
//! The result, [`Ending`], says how: [`Ending::Graceful`] (exit status, time
//! to exit) or [`Ending::Killed`] (at the deadline). Drop cannot wait: it kills
//! the tree synchronously with raw syscalls and reaps the agent (never through
//! a spawned task that a shutting-down runtime could lose). Cancelling during
//! spawn or the handshake kills the agent at once and yields
//! [`HostError::Cancelled`].

mod approver;
mod command;
mod config;
mod conversation;
mod dialect;
mod error;
mod filter;
mod io;
mod one_shot;
mod process;
mod spawn;
mod stderr;

pub use approver::{
    ApprovalContext, ApprovalRequest, ApproveAll, Approver, ChannelApprover, DenyAll, FnApprover,
    PendingApproval, ToolApprovalParams,
};
pub use command::AgentCommand;
pub use config::{
    ConversationConfig, DEFAULT_EVENT_CAPACITY, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_DEADLINE,
};
pub use conversation::{Conversation, Ending, KILL_RESERVE, Submitter};
pub use dialect::AgentProtocol;
pub use error::HostError;
pub use filter::EventFilter;
pub use one_shot::OneShot;
pub use stderr::{STDERR_TAIL_BYTES, StderrTail};

pub use async_trait::async_trait;
/// The protocol's data types (ops, events, approvals, session params), so
/// that `deputy-host` is the only dependency a host needs.
pub use deputy_protocol as protocol;
pub use deputy_rpc::PeerConfig;
pub use tokio_util::sync::CancellationToken;
