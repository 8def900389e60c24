//! Deputy's sub-agent engine: the child side of the Deputy protocol.
//!
//! `deputy agent` (this crate behind the CLI) is the process that editors,
//! agent hosts and scripts spawn. It serves the protocol of `PROTOCOL.md` —
//! newline-delimited JSON-RPC 2.0 — on its stdin/stdout through
//! [`deputy_rpc`], runs turns with a pluggable brain, asks the host before it
//! runs a command or applies a patch, and persists every session as a
//! rollout so it can be resumed or forked.
//!
//! ```no_run
//! // What `deputy agent --home DIR` does:
//! let mut config = deputy_agent::AgentConfig::new("/home/me/.deputy");
//! config.default_model = "shell".into();
//! deputy_agent::init_logging(deputy_agent::LogFormat::Text); // stderr only
//! deputy_agent::prepare_home(&config.home).expect("usable home");
//! std::process::exit(deputy_agent::run_stdio(config));
//! ```
//!
//! With [`AgentConfig::protocol`] = [`Protocol::Acp`] (`deputy agent
//! --protocol acp`) the same engine serves the Agent Client Protocol v1 to
//! editors instead: each session gets an ACP face that writes its events as
//! `session/update`s and its approvals as `session/request_permission`s
//! (mapping in `deputy-acp`, tables in PROTOCOL.md §8).
//!
//! Tests can also run the engine in-process over any pipe pair with
//! [`serve`] (e.g. [`tokio::io::duplex`]).
//!
//! # Architecture
//!
//! ```text
//!  stdin ──► deputy-rpc Peer ──► router (server.rs)
//!                 ▲                ├─ initialize            (answered inline)
//!                 │                ├─ session/start ──► session::start ──► Actor task
//!                 │                └─ submit ────────► Actor (mpsc, one at a time)
//!                 │                                      ├─ user_input → spawns a Turn task
//!  stdout ◄── writer queue ◄── events, approval requests ├─ interrupt  → cancels the Turn
//!           (bounded: backpressure)                      └─ shutdown   → abort, flush, exit
//! ```
//!
//! - **Front** ([`serve`]): a [`deputy_rpc::Router`] whose handlers decode
//!   params themselves, so lifecycle errors come first (`-32002` before
//!   `initialize`, `-32010` before `session/start`) and bad params are
//!   `-32602` with the decoder's message. Requests are handled concurrently,
//!   so an `interrupt` is read and served while an approval is pending.
//! - **Session actor** (`session.rs`): one task owns the turn state and takes
//!   submissions one at a time from a channel; it is also the only place a
//!   turn ends: it joins the turn task, writes `turn_complete`/`turn_aborted`
//!   to the rollout, emits `task_complete`/`turn_aborted`, then fsyncs. Since
//!   the turn is cleared before the next submission is looked at, a
//!   `user_input` sent after the turn's last event never sees `-32014`.
//!   Neither does one sent after an `interrupt`: the actor queues inputs that
//!   arrive while the turn is stopping (or, with `on_busy: queue|replace`,
//!   while it runs) and starts the next one when it ends the previous turn.
//!   When a turn is aborted, the tool calls it cut short get their end events
//!   (`exec_command_end` with `interrupted`) before `turn_aborted`.
//! - **Turn task** (`turn.rs`): calls the [`model::Model`] in a loop, turning
//!   its stream into events, recording conversation items, and running the
//!   tool calls of each response. Approvals of one response are asked **at
//!   once** (each its own `approval/*` request keyed by call id); each call
//!   runs, in order, as soon as its own answer is in. The whole turn body runs
//!   under `select!` with the turn's cancellation token: an interrupt drops
//!   the body at once, which kills running commands (their process groups),
//!   withdraws pending approvals (`$/cancelRequest`, sent by `deputy-rpc` when
//!   a request future is dropped or its token fires), and stops the model
//!   stream mid-way. The actor then writes `turn_aborted` — well within the
//!   50 ms budget.
//! - **Brains** ([`model`]): the [`model::Model`] trait is a streaming
//!   chat-completions call with tool calls; [`model::shell::ShellBrain`]
//!   (default, deterministic), [`model::script::ScriptBrain`] (scenario
//!   files, PROTOCOL.md appendix A) and [`model::openai::OpenAiModel`]
//!   (`openai:MODEL`, any OpenAI-compatible Chat Completions endpoint with
//!   streaming and tool calls) are built in.
//! - **Tools**: [`exec`] (argv, own process group, `PR_SET_PDEATHSIG`,
//!   stdin null, timeout, secret env scrubbed, head+tail capped output) and
//!   [`patch`] (Codex's patch format, computed before approval, applied all
//!   or nothing, confined to writable roots). The approval policy and the
//!   session's grants are in [`approval`], including the documented list of
//!   read-only commands.
//! - **Rollouts** ([`rollout`]): JSON lines under
//!   `$DEPUTY_HOME/sessions/YYYY/MM/DD/`, one write per item, fsync at every
//!   turn end and at shutdown; loading drops a torn last line; resume appends
//!   to the same file, fork copies the history into a new one.
//!
//! # Exit
//!
//! `shutdown` aborts the turn, syncs the rollout, writes `shutdown_complete`
//! (after the `submit` response), closes stdout and returns 0.
//!
//! End of stdin is a shutdown too. `deputy-rpc` half-closes at EOF (it keeps
//! writing), so first every request read before EOF is handled and
//! **answered** — an `interrupt` and a `shutdown` piped just before EOF both
//! take effect, in order. Then, unless such a `shutdown` already ended the
//! session, the running turn is aborted (`turn_aborted`, reason `shutdown`,
//! or `interrupted` if an interrupt got there first; an approval still
//! pending cannot be answered any more and is not taken as a denial), its
//! tools are killed, the rollout is synced and `shutdown_complete` is
//! written with id `""`. The output is flushed (`Peer::flush`), the write
//! side closed, and the agent returns 0 — within a second even if the host
//! stopped reading. A broken stdout (write error) ends the session the
//! same way. Tools never outlive the agent: killed on abort, on exit of
//! their leader (leftover background jobs), and by `PR_SET_PDEATHSIG` if the
//! agent is SIGKILLed.
//!
//! # Logging
//!
//! [`init_logging`] installs a `tracing` subscriber writing to **stderr**
//! (never stdout, which carries only protocol lines), filtered by `RUST_LOG`
//! (default `warn`), as text or JSON lines.

#![warn(missing_docs)]

mod acp;
pub mod approval;
mod config;
pub mod exec;
pub mod model;
pub mod patch;
pub mod rollout;
pub mod sandbox;
mod server;
mod session;
mod stdio;
mod turn;
pub mod util;

pub use config::{
    AgentConfig, DEFAULT_MAX_MODEL_CALLS, LogFormat, Protocol, default_home, init_logging, prepare_home,
};
pub use server::{run_stdio, serve, serve_until};

/// The brains this agent has, by name, as advertised in `initialize`.
/// `openai:*` stands for `openai:MODEL`, any model of an OpenAI-compatible
/// Chat Completions endpoint (e.g. `openai:gpt-4o-mini`, `openai:llama3.2`).
pub const MODELS: &[&str] = &["shell", "script", "openai:*"];

/// Whether `name` names a brain of this agent (`shell`, `script`, or
/// `openai:MODEL` with a non-empty MODEL).
pub fn is_model_name(name: &str) -> bool {
    match name.strip_prefix(model::openai::PREFIX) {
        Some(model) => !model.trim().is_empty() && model != "*",
        None => name == "shell" || name == "script",
    }
}
