//! A test kit for Deputy (PROTOCOL.md), for plain `#[test]`s and assert_cmd:
//!
//! - **To test a host** (a program that spawns agents): [`ScriptedAgent`], a
//!   fake agent that plays a script — `ScriptedAgent::new().message("hi")
//!   .exec(["ls"]).wait_for_interrupt()` — and runs as a
//!   [`deputy_host::AgentCommand`], a `std::process::Command` (for
//!   assert_cmd: `assert_cmd::Command::from_std(agent.command())`) or a
//!   command line for a host's `--agent` flag.
//! - **To test an agent** (a program that speaks the protocol):
//!   [`AgentUnderTest`], a blocking protocol driver —
//!   `AgentUnderTest::spawn(cmd)`, then `initialize()`, `start_session(..)`,
//!   `submit_text("…")`, `expect_event(..)`, `expect_approval()` /
//!   `answer_approval(..)`, `shutdown()`, `wait_exit()` and a final
//!   [`assert_no_process_left`](AgentUnderTest::assert_no_process_left). It
//!   keeps a transcript of every line and checks each stdout line is a
//!   JSON-RPC message ([`wire`]). `deputy check` (the `deputy-check` crate)
//!   is a conformance battery built on it.
//!
//! Add it as a dev-dependency: `cargo add --dev deputy-testkit`.
//!
//! # How the fake agent runs without a `deputy` binary
//!
//! A fake agent must be a program: hosts spawn processes. The choices were:
//! - a binary target of this crate: Cargo does not build the bin targets of
//!   a dependency for its users, so a test could not find or run it;
//! - `deputy agent --model script`, or a hidden subcommand of `deputy`: the
//!   user would have to install (and keep in step) the `deputy` binary;
//! - a Python (or shell) script: another toolchain, and not the real engine.
//!
//! So the fake agent is **the test executable itself**. This crate links
//! Deputy's agent engine (`deputy-agent`) and registers a constructor (an
//! ELF `.init_array` entry) that runs before `main` in every executable
//! linking the crate. [`ScriptedAgent::command`] returns
//! `current_exe() __deputy_testkit_agent SCRIPT`; in that process the
//! constructor sees the marker, serves the protocol on stdio with the
//! `script` brain (the same engine, tools, approvals, sandbox and process
//! hygiene as `deputy agent`) and exits — the test harness never starts, so
//! nothing but protocol lines reaches stdout. It works in integration
//! tests, unit tests, doctests and examples alike, and for hosts that are
//! separate binaries (they spawn the command like any agent).
//!
//! Limits: Linux (elsewhere [`ScriptedAgent::command`] panics saying so:
//! use [`ScriptedAgent::scenario_jsonl`] with an installed `deputy agent
//! --model script --scenario FILE`); the script travels as one argument
//! (at most 128 KiB on Linux); a private Deputy home is used (under the temp
//! dir, `deputy-testkit-agent-PID-…`) unless [`ScriptedAgent::home`] names
//! one. It is removed when the agent exits; one left by an agent that was
//! killed (every host's cancel ladder ends with a kill) is removed by the
//! next scripted agent that starts, once its process is gone.
//!
//! # Dependencies
//!
//! `deputy-agent` (the engine the fake agent runs), `deputy-host` (for
//! [`deputy_host::AgentCommand`]), `deputy-protocol` (typed messages),
//! `deputy-proctree` (process trees, for
//! [`AgentUnderTest::assert_no_process_left`]), `serde_json`, `libc`, and
//! `shlex` to quote [`ScriptedAgent::command_line`] as a shell would split
//! it. The driver is blocking on purpose (two reader threads, no runtime):
//! it fits plain `#[test]`s, and a line-by-line view is what a conformance
//! test needs.

#![warn(missing_docs)]

mod driver;
pub mod procs;
mod scripted;
pub mod wire;

pub use driver::{
    AgentUnderTest, ApprovalRequest, DEFAULT_TIMEOUT, Direction, Entry, Error, ErrorKind, Options, Result,
    STDERR_TAIL_BYTES, is_approval, is_event_of,
};
pub use scripted::{ENTRY_ARG, ScriptedAgent};

pub use deputy_protocol;
