//! What the command line prints: events as JSON lines (`--json`) or, for
//! people, streamed messages, commands with their exit codes and patches as
//! coloured diffs, with a spinner on stderr while nothing happens.
//!
//! stdout gets the conversation (or, with `--json`, only protocol events);
//! stderr gets notes, prompts, errors and the spinner. Colour is used only on a
//! terminal and never with `NO_COLOR` set.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};
use deputy_protocol::{Event, EventMsg, FileChange};

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const CYAN: Style = AnsiColor::Cyan.on_default();
const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Default)]
struct State {
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
}

pub struct Renderer {
    json: bool,
    color_out: bool,
    color_err: bool,
    spinner: bool,
    state: Mutex<State>,
}

fn wants_color(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

impl Renderer {
    pub fn new(json: bool) -> Renderer {
        let err_tty = std::io::stderr().is_terminal();
        Renderer {
            json,
            color_out: !json && wants_color(std::io::stdout().is_terminal()),
            color_err: wants_color(err_tty),
            spinner: err_tty && !json,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn paint(&self, on_stdout: bool, style: Style, text: &str) -> String {
        let color = if on_stdout { self.color_out } else { self.color_err };
        if color { format!("{style}{text}{style:#}") } else { text.to_owned() }
    }

    fn clear_spinner(&self, state: &mut State) {
        if state.spinner_shown {
            eprint!("\r\x1b[2K");
            state.spinner_shown = false;
        }
    }

    /// Prints to stdout, keeping track of whether the line is open.
    fn out(&self, state: &mut State, text: &str) {
        self.clear_spinner(state);
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
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
        eprintln!("{text}");
        state.last_output = Some(Instant::now());
    }

    /// A note for the person at the terminal (stderr).
    pub fn note(&self, text: &str) {
        let text = self.paint(false, DIM, &format!("deputy: {text}"));
        self.err_line(&mut self.state(), &text);
    }

    /// A warning (stderr).
    pub fn warning(&self, text: &str) {
        let text = format!("{} {text}", self.paint(false, YELLOW.bold(), "warning:"));
        self.err_line(&mut self.state(), &text);
    }

    /// An error (stderr).
    pub fn error(&self, text: &str) {
        let text = format!("{} {text}", self.paint(false, RED.bold(), "error:"));
        self.err_line(&mut self.state(), &text);
    }

    /// A question on stderr, without a newline.
    pub fn prompt(&self, text: &str) {
        let mut state = self.state();
        self.newline(&mut state);
        self.clear_spinner(&mut state);
        eprint!("{}", self.paint(false, YELLOW.bold(), text));
        let _ = std::io::stderr().flush();
        state.last_output = Some(Instant::now());
    }

    /// Draws the next spinner frame if nothing was printed for a while and no
    /// line is open. Called by a timer.
    pub fn tick(&self) {
        if !self.spinner {
            return;
        }
        let mut state = self.state();
        let idle = state.last_output.is_none_or(|t| t.elapsed() > Duration::from_millis(300));
        if !idle || state.mid_line {
            return;
        }
        state.spinner_frame = (state.spinner_frame + 1) % SPINNER.len();
        let frame = SPINNER[state.spinner_frame];
        eprint!("\r\x1b[2K{}", self.paint(false, CYAN, &format!("{frame} working…")));
        let _ = std::io::stderr().flush();
        state.spinner_shown = true;
    }

    /// Clears the spinner and ends an open line (before exiting).
    pub fn finish(&self) {
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
        for (path, change) in changes {
            match change {
                FileChange::Add { content, .. } => {
                    text.push_str(&self.paint(true, BOLD, &format!("added {path}\n")));
                    for line in content.lines() {
                        text.push_str(&self.paint(true, GREEN, &format!("+{line}")));
                        text.push('\n');
                    }
                }
                FileChange::Delete { content, .. } => {
                    text.push_str(&self.paint(true, BOLD, &format!("deleted {path}\n")));
                    for line in content.lines() {
                        text.push_str(&self.paint(true, RED, &format!("-{line}")));
                        text.push('\n');
                    }
                }
                FileChange::Update { unified_diff, move_path, .. } => {
                    let title = match move_path {
                        Some(to) => format!("updated {path} → {}\n", to.display()),
                        None => format!("updated {path}\n"),
                    };
                    text.push_str(&self.paint(true, BOLD, &title));
                    for line in unified_diff.lines() {
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
            let line = serde_json::to_string(event).expect("events serialize");
            let mut state = self.state();
            self.out(&mut state, &format!("{line}\n"));
            return;
        }
        let mut state = self.state();
        match &event.msg {
            EventMsg::AgentMessageDelta { delta } => {
                state.streamed_message = true;
                self.out(&mut state, delta);
            }
            EventMsg::AgentMessage { message } => {
                if !std::mem::take(&mut state.streamed_message) {
                    self.newline(&mut state);
                    self.out(&mut state, message);
                }
                self.newline(&mut state);
            }
            EventMsg::AgentReasoningDelta { delta } => {
                state.streamed_reasoning = true;
                let text = self.paint(true, DIM.italic(), delta);
                self.out(&mut state, &text);
            }
            EventMsg::AgentReasoning { text } => {
                if !std::mem::take(&mut state.streamed_reasoning) {
                    self.newline(&mut state);
                    let text = self.paint(true, DIM.italic(), text);
                    self.out(&mut state, &text);
                }
                self.newline(&mut state);
            }
            EventMsg::ExecCommandBegin { command, cwd, .. } => {
                let command = command_line(command);
                self.newline(&mut state);
                let line =
                    format!("{} {}\n", self.paint(true, CYAN.bold(), "$"), self.paint(true, BOLD, &command));
                self.out(&mut state, &line);
                let _ = cwd;
            }
            EventMsg::ExecCommandOutputDelta { call_id, chunk, .. } => {
                if !state.streamed_output.contains(call_id) {
                    state.streamed_output.push(call_id.clone());
                }
                let text = self.paint(true, DIM, chunk);
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
                    let text = self.paint(true, DIM, output);
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
                    self.paint(true, GREEN, &format!("✓ patch applied{}", summary(stdout)))
                } else {
                    self.paint(true, RED, &format!("✗ patch not applied: {}", stderr.trim()))
                };
                self.out(&mut state, &format!("{line}\n"));
            }
            EventMsg::Error { message } => {
                let text = format!("{} {message}", self.paint(false, RED.bold(), "error:"));
                self.err_line(&mut state, &text);
            }
            EventMsg::StreamError { message } | EventMsg::Warning { message } => {
                let text = format!("{} {message}", self.paint(false, YELLOW.bold(), "warning:"));
                self.err_line(&mut state, &text);
            }
            EventMsg::BackgroundEvent { message } => {
                let text = self.paint(false, DIM, message);
                self.err_line(&mut state, &text);
            }
            EventMsg::TurnAborted { reason, .. } => {
                let text = self.paint(false, YELLOW, &format!("turn aborted ({})", reason_name(*reason)));
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
        .filter(|l| l.len() > 2 && matches!(&l[..2], "A " | "M " | "D " | "R "))
        .collect();
    if files.is_empty() { String::new() } else { format!(" ({})", files.join(", ")) }
}

/// An argv as a person would type it (quoted where needed).
pub fn command_line(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

pub fn reason_name(reason: deputy_protocol::TurnAbortReason) -> &'static str {
    match reason {
        deputy_protocol::TurnAbortReason::Interrupted => "interrupted",
        deputy_protocol::TurnAbortReason::Replaced => "replaced",
        deputy_protocol::TurnAbortReason::Shutdown => "shutdown",
    }
}
