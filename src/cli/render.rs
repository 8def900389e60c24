//! The terminal layer: everything the command line prints goes through one
//! [`Renderer`], which owns the screen.
//!
//! stdout gets the conversation (or, with `--json`, only protocol events);
//! stderr gets notes, questions, errors and the spinner. Colour is used only on
//! a terminal and never with `NO_COLOR` set. Text from the agent is untrusted
//! and passes through [`clean`] before it is printed.
//!
//! While an approval question is open, the renderer holds everything else back
//! (and draws no spinner), so output never lands on the question's line and the
//! question stays on screen until it is answered; the held output follows the
//! answer, in order. A write that fails (a closed pipe) stops all output and
//! fires [`Renderer::broken`], so the caller ends the conversation through the
//! cancel ladder instead of panicking or hanging.
//!
//! The spinner is drawn by hand rather than with `indicatif`: its
//! `suspend`/`println` hide a bar around one write, but here the spinner must
//! stay hidden for as long as a question is open (seconds, while a line editor
//! or a blocking read owns the input), the held output must be released in
//! order, and a failed write must be seen by us, not swallowed by a draw
//! thread. With one mutex over the screen state those are a few lines each;
//! with indicatif they would be the same lines plus its draw thread to keep
//! out of the way.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};
use deputy_host::CancellationToken;
use deputy_protocol::{Event, EventMsg, FileChange};

use super::sanitize::{clean, quote_argv};

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const CYAN: Style = AnsiColor::Cyan.on_default();
const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Output held back while a question is open, beyond which the event loops
/// stop reading events ([`Renderer::room`]) until the question is answered:
/// the agent is slowed down rather than our memory growing.
const HELD_LIMIT: usize = 1 << 20;

type Sink = Box<dyn Write + Send>;

struct State {
    stdout: Sink,
    stderr: Sink,
    /// stdout's cursor is not at the start of a line (a message is streaming).
    mid_line: bool,
    /// Deltas of the current agent message / reasoning were printed.
    streamed_message: bool,
    streamed_reasoning: bool,
    /// Output deltas of these command calls were printed.
    streamed_output: Vec<String>,
    /// The spinner is drawn on stderr.
    spinner_shown: bool,
    spinner_frame: usize,
    last_output: Option<Instant>,
    /// An approval question is on screen: hold output, draw no spinner.
    question_open: bool,
    /// What was printed while the question was open: (to stdout?, bytes).
    held: Vec<(bool, Vec<u8>)>,
    held_bytes: usize,
    /// An approval was answered `abort`: the turn's end says so.
    abort_answered: bool,
}

pub struct Renderer {
    json: bool,
    color_out: bool,
    color_err: bool,
    spinner: bool,
    state: Mutex<State>,
    /// Fired by the first failed write.
    broken: CancellationToken,
    /// Notified when a question closes (held output released).
    released: tokio::sync::Notify,
}

fn wants_color(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

impl Renderer {
    pub fn new(json: bool) -> Renderer {
        let err_tty = std::io::stderr().is_terminal();
        let color_out = !json && wants_color(std::io::stdout().is_terminal());
        Renderer::with_sinks(
            json,
            color_out,
            wants_color(err_tty),
            err_tty && !json,
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
        )
    }

    fn with_sinks(
        json: bool,
        color_out: bool,
        color_err: bool,
        spinner: bool,
        stdout: Sink,
        stderr: Sink,
    ) -> Renderer {
        Renderer {
            json,
            color_out,
            color_err,
            spinner,
            state: Mutex::new(State {
                stdout,
                stderr,
                mid_line: false,
                streamed_message: false,
                streamed_reasoning: false,
                streamed_output: Vec::new(),
                spinner_shown: false,
                spinner_frame: 0,
                last_output: None,
                question_open: false,
                held: Vec::new(),
                held_bytes: 0,
                abort_answered: false,
            }),
            broken: CancellationToken::new(),
            released: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once a write to stdout or stderr failed (e.g. a closed pipe).
    pub async fn broken(&self) {
        self.broken.cancelled().await
    }

    pub fn is_broken(&self) -> bool {
        self.broken.is_cancelled()
    }

    /// Resolves when there is room for more output: at once, unless a question
    /// is open and more than [`HELD_LIMIT`] bytes are held back.
    pub async fn room(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let state = self.state();
                if !state.question_open || state.held_bytes < HELD_LIMIT || self.is_broken() {
                    return;
                }
            }
            released.await;
        }
    }

    fn paint(&self, on_stdout: bool, style: Style, text: &str) -> String {
        let color = if on_stdout { self.color_out } else { self.color_err };
        if color { format!("{style}{text}{style:#}") } else { text.to_owned() }
    }

    /// Writes to a sink at once (`force`, for the question itself) or, while a
    /// question is open, into the held buffer. A failed write stops all output.
    fn write(&self, state: &mut State, to_stdout: bool, bytes: &[u8], force: bool) {
        if self.is_broken() || bytes.is_empty() {
            return;
        }
        if state.question_open && !force {
            state.held_bytes += bytes.len();
            match state.held.last_mut() {
                Some((on_stdout, held)) if *on_stdout == to_stdout => held.extend_from_slice(bytes),
                _ => state.held.push((to_stdout, bytes.to_vec())),
            }
            return;
        }
        let sink = if to_stdout { &mut state.stdout } else { &mut state.stderr };
        if sink.write_all(bytes).and_then(|()| sink.flush()).is_err() {
            self.broken.cancel();
        }
    }

    fn clear_spinner(&self, state: &mut State) {
        if state.spinner_shown {
            state.spinner_shown = false;
            self.write(state, false, b"\r\x1b[2K", true);
        }
    }

    /// Prints to stdout, keeping track of whether the line is open.
    fn out(&self, state: &mut State, text: &str) {
        self.clear_spinner(state);
        self.write(state, true, text.as_bytes(), false);
        if !text.is_empty() {
            state.mid_line = !text.ends_with('\n');
        }
        state.last_output = Some(Instant::now());
    }

    /// Ends an open stdout line.
    fn newline(&self, state: &mut State) {
        if state.mid_line {
            self.out(state, "\n");
        }
    }

    /// Prints a line to stderr (after ending an open stdout line).
    fn err_line(&self, state: &mut State, text: &str) {
        self.newline(state);
        self.clear_spinner(state);
        self.write(state, false, format!("{text}\n").as_bytes(), false);
        state.last_output = Some(Instant::now());
    }

    /// A note for the person at the terminal (stderr). `text` is ours; any
    /// untrusted part of it must have been cleaned by the caller.
    pub fn note(&self, text: &str) {
        let text = self.paint(false, DIM, &format!("deputy: {text}"));
        self.err_line(&mut self.state(), &text);
    }

    /// A warning (stderr); the text may come from the agent and is cleaned.
    pub fn warning(&self, text: &str) {
        let text = format!("{} {}", self.paint(false, YELLOW.bold(), "warning:"), clean(text));
        self.err_line(&mut self.state(), &text);
    }

    /// An error (stderr); the text may come from the agent and is cleaned.
    pub fn error(&self, text: &str) {
        let text = format!("{} {}", self.paint(false, RED.bold(), "error:"), clean(text));
        self.err_line(&mut self.state(), &text);
    }

    /// Opens an approval question: ends open lines, hides the spinner and
    /// holds other output back until [`Renderer::close_question`]. With
    /// `text`, prints it on stderr without a newline (the answer is typed
    /// after it); without, a line editor draws the question itself.
    pub fn open_question(&self, text: Option<&str>) {
        let mut state = self.state();
        self.newline(&mut state);
        self.clear_spinner(&mut state);
        state.question_open = true;
        if let Some(text) = text {
            let text = self.paint(false, YELLOW.bold(), text);
            self.write(&mut state, false, text.as_bytes(), true);
        }
    }

    /// Closes the question and prints what was held back meanwhile.
    /// `unanswered`: the cursor is still on the question's line (it was
    /// withdrawn), so a newline ends it first.
    pub fn close_question(&self, unanswered: bool) {
        let mut state = self.state();
        if !state.question_open {
            return;
        }
        if unanswered {
            self.write(&mut state, false, b"\n", true);
        }
        state.question_open = false;
        state.held_bytes = 0;
        for (to_stdout, bytes) in std::mem::take(&mut state.held) {
            self.write(&mut state, to_stdout, &bytes, false);
        }
        state.last_output = Some(Instant::now());
        drop(state);
        self.released.notify_waiters();
    }

    /// Remembers that an approval was answered `abort`, so the turn's end says
    /// so (the agent reports the turn as interrupted).
    pub fn abort_answered(&self) {
        self.state().abort_answered = true;
    }

    /// Draws the next spinner frame if nothing was printed for a while, no
    /// line is open and no question is asked. Called by a timer.
    pub fn tick(&self) {
        if !self.spinner {
            return;
        }
        let mut state = self.state();
        let idle = state.last_output.is_none_or(|t| t.elapsed() > Duration::from_millis(300));
        if !idle || state.mid_line || state.question_open {
            return;
        }
        state.spinner_frame = (state.spinner_frame + 1) % SPINNER.len();
        let frame = SPINNER[state.spinner_frame];
        let text = format!("\r\x1b[2K{}", self.paint(false, CYAN, &format!("{frame} working…")));
        self.write(&mut state, false, text.as_bytes(), true);
        state.spinner_shown = true;
    }

    /// Clears the spinner and ends an open line (before exiting). A question
    /// still open (its turn was stopped) is closed, so what it held is shown.
    pub fn finish(&self) {
        self.close_question(true);
        let mut state = self.state();
        self.newline(&mut state);
        self.clear_spinner(&mut state);
    }

    /// The changes of a patch, as a coloured diff (stdout).
    pub fn patch_preview(&self, changes: &BTreeMap<String, FileChange>) {
        if self.json {
            return;
        }
        let mut text = String::new();
        let lines = |text: &mut String, style: Style, prefix: &str, body: &str| {
            for line in clean(body).lines() {
                text.push_str(&self.paint(true, style, &format!("{prefix}{line}")));
                text.push('\n');
            }
        };
        for (path, change) in changes {
            let path = clean(path);
            match change {
                FileChange::Add { content, .. } => {
                    text.push_str(&self.paint(true, BOLD, &format!("added {path}\n")));
                    lines(&mut text, GREEN, "+", content);
                }
                FileChange::Delete { content, .. } => {
                    text.push_str(&self.paint(true, BOLD, &format!("deleted {path}\n")));
                    lines(&mut text, RED, "-", content);
                }
                FileChange::Update { unified_diff, move_path, .. } => {
                    let title = match move_path {
                        Some(to) => format!("updated {path} → {}\n", clean(&to.to_string_lossy())),
                        None => format!("updated {path}\n"),
                    };
                    text.push_str(&self.paint(true, BOLD, &title));
                    for line in clean(unified_diff).lines() {
                        let style = if line.starts_with('+') {
                            GREEN
                        } else if line.starts_with('-') {
                            RED
                        } else if line.starts_with("@@") {
                            CYAN
                        } else {
                            Style::new()
                        };
                        text.push_str(&self.paint(true, style, line));
                        text.push('\n');
                    }
                }
            }
            if let FileChange::Add { truncated: true, total_bytes, .. }
            | FileChange::Delete { truncated: true, total_bytes, .. }
            | FileChange::Update { truncated: true, total_bytes, .. } = change
            {
                let total = total_bytes.map(|b| format!(" of {b} bytes")).unwrap_or_default();
                text.push_str(&self.paint(true, DIM, &format!("[… cut: only the start{total} is shown]\n")));
            }
        }
        let mut state = self.state();
        self.newline(&mut state);
        self.out(&mut state, &text);
    }

    /// Prints one event.
    pub fn event(&self, event: &Event) {
        if self.json {
            // JSON escapes every control character itself; the line is kept
            // byte-exact for scripts.
            let line = serde_json::to_string(event).expect("events serialize");
            let mut state = self.state();
            self.out(&mut state, &format!("{line}\n"));
            return;
        }
        let mut state = self.state();
        match &event.msg {
            EventMsg::AgentMessageDelta { delta } => {
                state.streamed_message = true;
                self.out(&mut state, &clean(delta));
            }
            EventMsg::AgentMessage { message } => {
                if !std::mem::take(&mut state.streamed_message) {
                    self.newline(&mut state);
                    self.out(&mut state, &clean(message));
                }
                self.newline(&mut state);
            }
            EventMsg::AgentReasoningDelta { delta } => {
                state.streamed_reasoning = true;
                let text = self.paint(true, DIM.italic(), &clean(delta));
                self.out(&mut state, &text);
            }
            EventMsg::AgentReasoning { text } => {
                if !std::mem::take(&mut state.streamed_reasoning) {
                    self.newline(&mut state);
                    let text = self.paint(true, DIM.italic(), &clean(text));
                    self.out(&mut state, &text);
                }
                self.newline(&mut state);
            }
            EventMsg::ExecCommandBegin { command, .. } => {
                self.newline(&mut state);
                let line = format!(
                    "{} {}\n",
                    self.paint(true, CYAN.bold(), "$"),
                    self.paint(true, BOLD, &quote_argv(command))
                );
                self.out(&mut state, &line);
            }
            EventMsg::ExecCommandOutputDelta { call_id, chunk, .. } => {
                if !state.streamed_output.contains(call_id) {
                    state.streamed_output.push(call_id.clone());
                }
                let text = self.paint(true, DIM, &clean(chunk));
                self.out(&mut state, &text);
            }
            EventMsg::ExecCommandEnd {
                call_id,
                exit_code,
                duration_ms,
                output,
                timed_out,
                interrupted,
                ..
            } => {
                let streamed = match state.streamed_output.iter().position(|c| c == call_id) {
                    Some(i) => {
                        state.streamed_output.swap_remove(i);
                        true
                    }
                    None => false,
                };
                if !streamed && !output.is_empty() {
                    let text = self.paint(true, DIM, &clean(output));
                    self.out(&mut state, &text);
                }
                self.newline(&mut state);
                let (style, mark) = if *exit_code == 0 { (GREEN, "✓") } else { (RED, "✗") };
                let mut status = format!("{mark} exit {exit_code} ({duration_ms} ms)");
                if *timed_out {
                    status.push_str(", timed out");
                }
                if *interrupted {
                    status.push_str(", killed: the turn was aborted");
                }
                let line = format!("{}\n", self.paint(true, style, &status));
                self.out(&mut state, &line);
            }
            EventMsg::PatchApplyBegin { changes, auto_approved, .. } => {
                // Asked patches were shown with the question; show the others now.
                if *auto_approved {
                    drop(state);
                    self.patch_preview(changes);
                }
            }
            EventMsg::PatchApplyEnd { success, stdout, stderr, .. } => {
                self.newline(&mut state);
                let line = if *success {
                    self.paint(true, GREEN, &format!("✓ patch applied{}", summary(&clean(stdout))))
                } else {
                    self.paint(true, RED, &format!("✗ patch not applied: {}", clean(stderr.trim())))
                };
                self.out(&mut state, &format!("{line}\n"));
            }
            EventMsg::Error { message } => {
                let text = format!("{} {}", self.paint(false, RED.bold(), "error:"), clean(message));
                self.err_line(&mut state, &text);
            }
            EventMsg::StreamError { message } | EventMsg::Warning { message } => {
                let text = format!("{} {}", self.paint(false, YELLOW.bold(), "warning:"), clean(message));
                self.err_line(&mut state, &text);
            }
            EventMsg::BackgroundEvent { message } => {
                let text = self.paint(false, DIM, &clean(message));
                self.err_line(&mut state, &text);
            }
            EventMsg::TurnAborted { reason, .. } => {
                // The agent reports an `abort` answer as an interrupted turn;
                // the person who typed `b` is told what they did.
                let why = if std::mem::take(&mut state.abort_answered) {
                    "an approval was answered abort"
                } else {
                    reason_name(*reason)
                };
                let text = self.paint(false, YELLOW, &format!("turn aborted ({why})"));
                self.err_line(&mut state, &text);
            }
            EventMsg::TaskComplete { .. } => self.newline(&mut state),
            EventMsg::SessionConfigured { .. }
            | EventMsg::TaskStarted { .. }
            | EventMsg::TokenCount { .. }
            | EventMsg::ShutdownComplete
            | EventMsg::Unknown => {}
        }
    }
}

/// `A x.txt, M y.txt` from apply_patch's report (its per-file lines).
fn summary(stdout: &str) -> String {
    let files: Vec<&str> = stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.len() > 2 && matches!(l.get(..2), Some("A " | "M " | "D " | "R ")))
        .collect();
    if files.is_empty() { String::new() } else { format!(" ({})", files.join(", ")) }
}

pub fn reason_name(reason: deputy_protocol::TurnAbortReason) -> &'static str {
    match reason {
        deputy_protocol::TurnAbortReason::Interrupted => "interrupted",
        deputy_protocol::TurnAbortReason::Replaced => "replaced",
        deputy_protocol::TurnAbortReason::Shutdown => "shutdown",
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use deputy_protocol::{ExecOutputStream, TurnAbortReason};

    use super::*;
    use crate::cli::sanitize::tests::{HOSTILE, assert_inert};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn renderer(color: bool) -> (Renderer, Capture, Capture) {
        let (out, err) = (Capture::default(), Capture::default());
        let r =
            Renderer::with_sinks(false, color, color, false, Box::new(out.clone()), Box::new(err.clone()));
        (r, out, err)
    }

    /// Every event that prints agent-provided text, carrying `s` everywhere.
    fn events(s: &str) -> Vec<EventMsg> {
        let changes = |s: &str| {
            BTreeMap::from([
                (
                    format!("{s}.txt"),
                    FileChange::Add { content: format!("{s}\n"), truncated: false, total_bytes: None },
                ),
                (
                    format!("d{s}"),
                    FileChange::Delete { content: s.into(), truncated: false, total_bytes: None },
                ),
                (
                    format!("u{s}"),
                    FileChange::Update {
                        unified_diff: format!("@@ {s}\n-{s}\n+{s}\n {s}\n"),
                        move_path: Some(PathBuf::from(s)),
                        truncated: false,
                        total_bytes: None,
                    },
                ),
            ])
        };
        vec![
            EventMsg::AgentMessageDelta { delta: s.into() },
            EventMsg::AgentMessage { message: s.into() },
            EventMsg::AgentMessage { message: format!("unstreamed {s}") },
            EventMsg::AgentReasoningDelta { delta: s.into() },
            EventMsg::AgentReasoning { text: s.into() },
            EventMsg::AgentReasoning { text: format!("unstreamed {s}") },
            EventMsg::ExecCommandBegin {
                call_id: "c1".into(),
                turn_id: "t".into(),
                command: vec!["echo".into(), s.into()],
                cwd: PathBuf::from(s),
            },
            EventMsg::ExecCommandOutputDelta {
                call_id: "c1".into(),
                stream: ExecOutputStream::Stdout,
                chunk: s.into(),
            },
            EventMsg::ExecCommandEnd {
                call_id: "c1".into(),
                turn_id: "t".into(),
                exit_code: 0,
                duration_ms: 1,
                output: s.into(),
                truncated: false,
                timed_out: false,
                interrupted: false,
            },
            EventMsg::ExecCommandEnd {
                call_id: "c2".into(),
                turn_id: "t".into(),
                exit_code: 1,
                duration_ms: 1,
                output: s.into(),
                truncated: false,
                timed_out: true,
                interrupted: true,
            },
            EventMsg::PatchApplyBegin {
                call_id: "p".into(),
                turn_id: "t".into(),
                auto_approved: true,
                changes: changes(s),
            },
            EventMsg::PatchApplyEnd {
                call_id: "p".into(),
                turn_id: "t".into(),
                success: true,
                stdout: format!("A {s}\n"),
                stderr: String::new(),
            },
            EventMsg::PatchApplyEnd {
                call_id: "p".into(),
                turn_id: "t".into(),
                success: false,
                stdout: String::new(),
                stderr: s.into(),
            },
            EventMsg::Error { message: s.into() },
            EventMsg::StreamError { message: s.into() },
            EventMsg::Warning { message: s.into() },
            EventMsg::BackgroundEvent { message: s.into() },
            EventMsg::TurnAborted { turn_id: "t".into(), reason: TurnAbortReason::Interrupted },
        ]
    }

    /// Our own colour (SGR `ESC [ … m` and the spinner's clear) is the only
    /// escape sequence allowed; the rest must be inert.
    fn strip_own_styles(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('\x1b') {
            out.push_str(&rest[..i]);
            let tail = &rest[i + 1..];
            let end = tail
                .strip_prefix('[')
                .and_then(|t| t.find(|c: char| !c.is_ascii_digit() && c != ';').map(|j| (t, j)))
                .filter(|(t, j)| t[*j..].starts_with('m'))
                .map(|(_, j)| j + 2)
                .unwrap_or_else(|| panic!("a foreign escape sequence in {text:?}"));
            rest = &tail[end..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn every_printing_path_makes_hostile_text_inert() {
        for color in [false, true] {
            for s in HOSTILE {
                let (r, out, err) = renderer(color);
                for msg in events(s) {
                    r.event(&Event { id: "t".into(), msg });
                }
                r.patch_preview(
                    &events(s)
                        .into_iter()
                        .find_map(|m| match m {
                            EventMsg::PatchApplyBegin { changes, .. } => Some(changes),
                            _ => None,
                        })
                        .unwrap(),
                );
                r.error(s);
                r.note(&clean(s));
                r.open_question(Some(&format!("allow {}?", quote_argv(&[s.to_string()]))));
                r.close_question(true);
                r.finish();
                for shown in [out.text(), err.text()] {
                    assert_inert(&strip_own_styles(&shown), s);
                }
                assert!(out.text().contains("unstreamed"));
            }
        }
    }

    #[test]
    fn output_is_held_while_a_question_is_open() {
        let (r, out, err) = renderer(false);
        r.event(&Event { id: "t".into(), msg: EventMsg::AgentMessageDelta { delta: "partial".into() } });
        r.open_question(Some("allow `x`? "));
        r.event(&Event { id: "t".into(), msg: EventMsg::AgentMessage { message: "partial".into() } });
        r.error("later");
        assert_eq!(out.text(), "partial\n", "the open line is ended before the question");
        assert_eq!(err.text(), "allow `x`? ");
        r.close_question(false);
        assert_eq!(err.text(), "allow `x`? error: later\n");
    }

    #[test]
    fn a_failed_write_fires_broken_and_stops_output() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = Capture::default();
        let r = Renderer::with_sinks(false, false, false, false, Box::new(Closed), Box::new(err.clone()));
        assert!(!r.is_broken());
        r.event(&Event { id: "t".into(), msg: EventMsg::AgentMessage { message: "hi".into() } });
        assert!(r.is_broken());
        r.note("not printed");
        assert_eq!(err.text(), "");
    }

    #[test]
    fn an_abort_answer_is_named_at_the_turns_end() {
        let (r, _, err) = renderer(false);
        r.abort_answered();
        let aborted = EventMsg::TurnAborted { turn_id: "t".into(), reason: TurnAbortReason::Interrupted };
        r.event(&Event { id: "t".into(), msg: aborted.clone() });
        r.event(&Event { id: "t".into(), msg: aborted });
        assert_eq!(err.text(), "turn aborted (an approval was answered abort)\nturn aborted (interrupted)\n");
    }
}
