//! Foreign sub-agents in Deputy's terms: the wire types of OpenAI's **Codex
//! app-server** (v2, [`codex`]) and of **Claude Code**'s `-p` stream-json
//! mode ([`claude`]), and the mapping between them and Deputy's own
//! protocol (`deputy-protocol`'s [`Op`], [`Event`], approvals and
//! [`ReviewDecision`]).
//!
//! Plain data and pure state machines ("sans I/O"): no tokio, no processes,
//! no pipes. Each dialect is a [`ForeignSession`]: the caller feeds it every
//! line the agent wrote ([`ForeignSession::receive`]), every op the host
//! submits ([`ForeignSession::submit`]) and every decision of the approver
//! ([`ForeignSession::answer`]); it answers with [`Output`]s, in order:
//! Deputy events to emit, approvals to ask, lines to write to the agent,
//! withdrawals, and when to close the agent's stdin. Spawning, the event
//! channel, the approver, the filter and the cancel ladder stay with the
//! host (`deputy-host`'s dialect seam), written once for every dialect.
//!
//! Every mapping table, and what cannot be mapped, is in `DIALECTS.md` at
//! the repository root. The fixtures in `tests/fixtures/` are real lines of
//! the pinned programs (Codex 0.171.0, Claude Code 2.1.332), and
//! `tests/peer_codex.rs` / `tests/peer_claude.rs` at the repository root run
//! the real programs against model mocks through these mappers.
//!
//! # Guarantees the mappers add
//!
//! The foreign agents do not give every guarantee Deputy's protocol makes;
//! where the missing piece can be derived from what they do send, the mapper
//! derives it, so a host sees Deputy's semantics whatever the dialect:
//! - An `exec_command_begin` / `patch_apply_begin` comes **after** the
//!   approval (both agents announce the call before asking), and a call that
//!   was asked about but not approved has neither event.
//! - Every begin has exactly one end, **before** its turn's end event, also
//!   when the agent reports the end later (Codex's interrupted commands) or
//!   never (the agent died).
//! - `approved_for_session` is kept by the mapper where the agent has no
//!   equivalent: the same argv (or the same files) is then answered without
//!   asking the approver again.
//! - An approval the agent withdraws (Codex `serverRequest/resolved`, Claude
//!   `control_cancel_request`), or whose turn ends, is reported as
//!   [`Output::Withdrawn`]; a late answer to it is dropped.
//!
//! # Dependencies
//! `shlex` (splitting Codex's command strings back into argv), `similar`
//! (unified diffs for Claude's edits) and `time` (Claude's timestamps, for
//! command durations); see `Cargo.toml` for why each.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

use deputy_protocol::{Event, EventMsg, ExecApprovalParams, Op, PatchApprovalParams, ReviewDecision};
use serde_json::Value;

pub mod claude;
pub mod codex;
mod diff;
pub mod invariants;
#[cfg(test)]
mod test_util;

pub use diff::{EditChange, Replace, edit_changes};

/// An approval a foreign agent asks for, in Deputy's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Approval {
    /// May this command run?
    Exec(ExecApprovalParams),
    /// May this patch be applied?
    Patch(PatchApprovalParams),
    /// A tool Deputy has no approval type for (Claude's `WebFetch`, an MCP
    /// tool, Codex's `writeStdin`…): the approver sees the tool's name and
    /// input, and should deny what it does not understand.
    Other(OtherApproval),
}

impl Approval {
    /// The key answers and withdrawals use: `approval_id` if present, else
    /// `call_id` (as `deputy-host`'s `ApprovalRequest::key`).
    pub fn key(&self) -> &str {
        match self {
            Approval::Exec(p) => p.approval_key(),
            Approval::Patch(p) => &p.call_id,
            Approval::Other(p) => &p.call_id,
        }
    }

    /// The turn the tool call belongs to (for display, never as a key).
    pub fn turn_id(&self) -> &str {
        match self {
            Approval::Exec(p) => &p.turn_id,
            Approval::Patch(p) => &p.turn_id,
            Approval::Other(p) => &p.turn_id,
        }
    }
}

/// An approval for a tool that is neither a command nor a patch.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherApproval {
    /// The agent's id for the tool call.
    pub call_id: String,
    /// The turn it belongs to (for display, never as a key).
    pub turn_id: String,
    /// The agent's name for the tool (e.g. `WebFetch`, `mcp__github__create_issue`).
    pub tool: String,
    /// The tool's input, as the agent sent it.
    pub input: Value,
    /// Why the agent asks, if it says.
    pub reason: Option<String>,
}

/// What the caller must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Emit this Deputy event.
    Event(Event),
    /// Ask the approver; give its decision to [`ForeignSession::answer`]
    /// with [`Approval::key`].
    Approve(Approval),
    /// The agent no longer waits for the answer to this approval (its key):
    /// tell the approver (close its prompt). Answering it is harmless; the
    /// answer is dropped.
    Withdrawn(String),
    /// Write this line (one JSON object, no newline) to the agent's stdin.
    Send(String),
    /// Close the agent's stdin: its graceful end (a shutdown was asked and no
    /// turn is running any more).
    CloseInput,
    /// The agent cannot be used (its handshake failed): end the conversation
    /// with this message.
    Failed(String),
}

/// A line from the agent that is not a message of its protocol. Nothing was
/// mapped from it; the session's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Why it did not decode.
    pub message: String,
    /// The start of the line (at most 200 bytes), for the log.
    pub line_start: String,
}

impl DecodeError {
    pub(crate) fn new(line: &str, message: impl Into<String>) -> Self {
        let mut end = line.len().min(200);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        DecodeError { message: message.into(), line_start: line[..end].to_owned() }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (line starts: {:?})", self.message, self.line_start)
    }
}

impl std::error::Error for DecodeError {}

/// Why an op was refused. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The handshake has not finished (wait for `session_configured`).
    NotReady,
    /// A turn is running (Deputy's `-32014`); interrupt it first.
    TurnInProgress,
    /// A shutdown was submitted already (Deputy's `-32015`).
    ShuttingDown,
    /// The op cannot be expressed in this dialect (names it).
    Unsupported(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::NotReady => f.write_str("the agent's handshake has not finished"),
            SubmitError::TurnInProgress => f.write_str("a turn is in progress"),
            SubmitError::ShuttingDown => f.write_str("the session is shutting down"),
            SubmitError::Unsupported(what) => write!(f, "not supported by this agent: {what}"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// One foreign agent's protocol, as a state machine without I/O.
///
/// The caller owns the process: it calls [`start`](Self::start) right after
/// spawning, [`receive`](Self::receive) for every line of the agent's
/// stdout, [`submit`](Self::submit) for every op, [`answer`](Self::answer)
/// for every approver decision, and [`closed`](Self::closed) once the
/// agent's stdout ended; it carries out every returned [`Output`] in order.
pub trait ForeignSession: Send {
    /// The first lines to send (the handshake).
    fn start(&mut self) -> Vec<Output>;

    /// Maps one op. `id` is the submission id: the events of the turn a
    /// `user_input` starts carry it.
    fn submit(&mut self, id: &str, op: &Op) -> Result<Vec<Output>, SubmitError>;

    /// Maps one line the agent wrote (without its newline).
    fn receive(&mut self, line: &str) -> Result<Vec<Output>, DecodeError>;

    /// The approver's decision for the approval `key`. A key that is no
    /// longer pending (withdrawn, answered, its turn over) maps to nothing.
    fn answer(&mut self, key: &str, decision: ReviewDecision) -> Vec<Output>;

    /// The agent's stdout ended (it exited or was killed): every open
    /// command and patch gets its end, a running turn its `turn_aborted`,
    /// every pending approval is withdrawn, and `shutdown_complete` ends the
    /// stream if a shutdown was asked.
    fn closed(&mut self) -> Vec<Output>;

    /// The Deputy session id (Codex's thread id, Claude's session id), once
    /// known.
    fn session_id(&self) -> Option<&str>;

    /// Whether a turn is running (a `user_input` was mapped and its end not yet).
    fn turn_running(&self) -> bool;
}

/// Why a turn ends early: the shutdown, if one was asked, else an interrupt.
pub(crate) fn abort_reason(shutdown: &Option<String>) -> deputy_protocol::TurnAbortReason {
    if shutdown.is_some() {
        deputy_protocol::TurnAbortReason::Shutdown
    } else {
        deputy_protocol::TurnAbortReason::Interrupted
    }
}

/// The end of every dialect's `closed()`: the turn still running (its
/// submission id and turn id) is aborted — after an error saying that
/// `agent` exited, unless a shutdown was asked — and an asked shutdown is
/// complete.
pub(crate) fn end_of_output(
    agent: &str,
    turn: Option<(String, String)>,
    shutdown: &Option<String>,
) -> Vec<Output> {
    let mut out = Vec::new();
    if let Some((sub, turn_id)) = turn {
        if shutdown.is_none() {
            out.push(event(&sub, EventMsg::Error { message: format!("{agent} exited during the turn") }));
        }
        out.push(event(&sub, EventMsg::TurnAborted { turn_id, reason: abort_reason(shutdown) }));
    }
    if let Some(sub) = shutdown {
        out.push(event(sub, EventMsg::ShutdownComplete));
    }
    out
}

/// What an op may do, after the rules every dialect's `submit` shares.
pub(crate) enum Gate {
    /// A shutdown was recorded: interrupt the running turn first (the
    /// session closes stdin at its end), or close stdin now.
    Shutdown {
        /// A turn is running.
        interrupt: bool,
    },
    /// Map the op.
    Go,
}

/// The rules every dialect's `submit` shares: nothing after a shutdown; a
/// shutdown is recorded (under the submission `id`) whether or not the
/// handshake finished; other ops wait for it; one turn at a time.
pub(crate) fn gate(
    shutdown: &mut Option<String>,
    ready: bool,
    turn_running: bool,
    id: &str,
    op: &Op,
) -> Result<Gate, SubmitError> {
    if shutdown.is_some() {
        return Err(SubmitError::ShuttingDown);
    }
    match op {
        Op::Shutdown => {
            *shutdown = Some(id.to_owned());
            Ok(Gate::Shutdown { interrupt: turn_running })
        }
        _ if !ready => Err(SubmitError::NotReady),
        Op::UserInput { .. } if turn_running => Err(SubmitError::TurnInProgress),
        _ => Ok(Gate::Go),
    }
}

/// Bytes of a command's output kept from its start in `exec_command_end`
/// (as `deputy agent` keeps them).
pub const OUTPUT_HEAD_BYTES: usize = 64 * 1024;
/// Bytes of a command's output kept from its end in `exec_command_end`.
pub const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// A command's output as an `exec_command_end` carries it: the first and
/// last 64 KiB with Deputy's marker between, and whether it was cut.
pub(crate) fn cap_output(text: &str) -> (String, bool) {
    if text.len() <= OUTPUT_HEAD_BYTES + OUTPUT_TAIL_BYTES {
        return (text.to_owned(), false);
    }
    let mut head = OUTPUT_HEAD_BYTES;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - OUTPUT_TAIL_BYTES;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    let omitted = tail - head;
    (format!("{}\n[... {omitted} bytes omitted ...]\n{}", &text[..head], &text[tail..]), true)
}

/// Output collected from deltas, bounded: past twice the kept size the
/// middle is dropped (counted), so a chatty command costs bounded memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutputBuf {
    text: String,
    /// Bytes dropped from the middle so far.
    dropped: usize,
}

impl OutputBuf {
    pub(crate) fn push(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        let keep = OUTPUT_HEAD_BYTES + OUTPUT_TAIL_BYTES;
        if self.text.len() > 2 * keep {
            let mut head = OUTPUT_HEAD_BYTES;
            while !self.text.is_char_boundary(head) {
                head -= 1;
            }
            let mut tail = self.text.len() - OUTPUT_TAIL_BYTES;
            while !self.text.is_char_boundary(tail) {
                tail += 1;
            }
            self.dropped += tail - head;
            self.text.replace_range(head..tail, "");
        }
    }

    /// The output as `exec_command_end` carries it.
    pub(crate) fn finish(&self) -> (String, bool) {
        if self.dropped == 0 {
            return cap_output(&self.text);
        }
        let text = &self.text;
        let mut head = OUTPUT_HEAD_BYTES.min(text.len());
        while !text.is_char_boundary(head) {
            head -= 1;
        }
        let mut tail = text.len().saturating_sub(OUTPUT_TAIL_BYTES).max(head);
        while !text.is_char_boundary(tail) {
            tail += 1;
        }
        let omitted = self.dropped + (tail - head);
        (format!("{}\n[... {omitted} bytes omitted ...]\n{}", &text[..head], &text[tail..]), true)
    }
}

/// The end Deputy gives a command the agent did not report ended before
/// its turn ended (or before the agent exited): killed by the abort, 137.
pub(crate) fn interrupted_exec_end(call_id: String, turn_id: String, output: (String, bool)) -> EventMsg {
    EventMsg::ExecCommandEnd {
        call_id,
        turn_id,
        exit_code: 137,
        duration_ms: 0,
        output: output.0,
        truncated: output.1,
        timed_out: false,
        interrupted: true,
    }
}

/// The end Deputy gives a patch the agent did not report applied.
pub(crate) fn unreported_patch_end(call_id: String, turn_id: String, why: &str) -> EventMsg {
    EventMsg::PatchApplyEnd {
        call_id,
        turn_id,
        success: false,
        stdout: String::new(),
        stderr: why.to_owned(),
    }
}

/// An event with the submission id it belongs to.
pub(crate) fn event(id: &str, msg: EventMsg) -> Output {
    Output::Event(Event { id: id.to_owned(), msg })
}

/// `path` relative to `cwd` when it lies under it (Deputy's patches name
/// files relative to the session's cwd), else as given.
pub(crate) fn relative_to(cwd: &Path, path: &str) -> String {
    match Path::new(path).strip_prefix(cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().into_owned(),
        _ => path.to_owned(),
    }
}

/// Whether `path` (absolute, or relative to `cwd`) lies outside `cwd`,
/// judged by its components alone (`..` is resolved lexically; symlinks are
/// not followed: the mapper does no I/O).
pub(crate) fn outside(cwd: &Path, path: &str) -> Option<PathBuf> {
    let joined = if Path::new(path).is_absolute() { PathBuf::from(path) } else { cwd.join(path) };
    let mut clean = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            other => clean.push(other),
        }
    }
    if clean.starts_with(cwd) { None } else { Some(clean) }
}

/// The one directory holding every path, if there is one (Deputy's
/// `grant_root`: the smallest grant that covers a patch's outside paths).
pub(crate) fn common_parent(paths: &[PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?.parent()?.to_path_buf();
    paths.iter().all(|p| p.parent() == Some(first.as_path())).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_inside_the_cwd_and_outside_paths_are_found_lexically() {
        let cwd = Path::new("/w/proj");
        assert_eq!(relative_to(cwd, "/w/proj/src/a.rs"), "src/a.rs");
        assert_eq!(relative_to(cwd, "/w/other/a.rs"), "/w/other/a.rs");
        assert_eq!(relative_to(cwd, "/w/proj"), "/w/proj");
        assert_eq!(outside(cwd, "src/a.rs"), None);
        assert_eq!(outside(cwd, "/w/proj/x/../y"), None);
        assert_eq!(outside(cwd, "../notes/todo.md"), Some(PathBuf::from("/w/notes/todo.md")));
        assert_eq!(outside(cwd, "/w/projector/a"), Some(PathBuf::from("/w/projector/a")));
        let outs = [PathBuf::from("/w/notes/a"), PathBuf::from("/w/notes/b")];
        assert_eq!(common_parent(&outs), Some(PathBuf::from("/w/notes")));
        assert_eq!(common_parent(&[PathBuf::from("/a/x"), PathBuf::from("/b/y")]), None);
    }

    #[test]
    fn output_keeps_its_head_and_tail_with_the_agents_marker() {
        let small = "hello\n";
        assert_eq!(cap_output(small), (small.to_owned(), false));
        let big =
            format!("{}{}{}", "a".repeat(OUTPUT_HEAD_BYTES), "m".repeat(1000), "z".repeat(OUTPUT_TAIL_BYTES));
        let (text, cut) = cap_output(&big);
        assert!(cut);
        assert!(
            text.starts_with(&"a".repeat(OUTPUT_HEAD_BYTES))
                && text.ends_with(&"z".repeat(OUTPUT_TAIL_BYTES))
        );
        assert!(
            text.contains("\n[... 1000 bytes omitted ...]\n"),
            "{}",
            &text[OUTPUT_HEAD_BYTES..OUTPUT_HEAD_BYTES + 40]
        );
        // From deltas: the same shape, memory bounded.
        let mut buf = OutputBuf::default();
        buf.push(&"a".repeat(OUTPUT_HEAD_BYTES));
        for _ in 0..100 {
            buf.push(&"m".repeat(10_000));
        }
        buf.push(&"z".repeat(OUTPUT_TAIL_BYTES));
        assert!(buf.text.len() <= 2 * (OUTPUT_HEAD_BYTES + OUTPUT_TAIL_BYTES) + 10_000);
        let (text, cut) = buf.finish();
        assert!(cut && text.starts_with('a') && text.ends_with(&"z".repeat(OUTPUT_TAIL_BYTES)));
        assert!(text.contains("\n[... 1000000 bytes omitted ...]\n"));
        let mut small = OutputBuf::default();
        small.push("x");
        assert_eq!(small.finish(), ("x".to_owned(), false));
    }

    #[test]
    fn a_decode_error_keeps_the_start_of_the_line_at_a_character_boundary() {
        let line = "é".repeat(150);
        let e = DecodeError::new(&line, "not JSON");
        assert!(e.line_start.len() <= 200 && line.starts_with(&e.line_start));
        assert!(e.to_string().starts_with("not JSON"));
    }
}
