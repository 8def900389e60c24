//! How the command line answers approvals: automatically (`--approve`), by
//! asking on the terminal, or — with nobody to ask — by denying and saying
//! how to allow.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use clap::ValueEnum;
use deputy_host::{ApprovalContext, Approver, ToolApprovalParams, async_trait};
use deputy_protocol::{ExecApprovalParams, PatchApprovalParams, ReviewDecision};

use super::Interrupts;
use super::input::{Input, Reply};
use super::render::Renderer;
use super::sanitize::{clean, quote_argv};

/// `--approve`: decide every approval without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApproveMode {
    /// Deny every command and patch.
    Never,
    /// Approve commands, deny patches.
    Exec,
    /// Approve patches, deny commands.
    Patch,
    /// Approve every command and patch (and, from agents of other protocols,
    /// their other tools).
    All,
}

/// What an approval is for (which `--approve` modes allow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Exec,
    Patch,
    /// A foreign agent's other tool: only `--approve all` allows it.
    Tool,
}

/// Whether a person can be asked: stdin and stderr are terminals.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The command line's approver.
pub struct CliApprover {
    mode: Option<ApproveMode>,
    /// `--allow-outside-cwd`: `--approve patch|all` also approves patches
    /// that write outside the workspace (each with a warning line). Without
    /// it such patches are denied: leaving the workspace is never implied.
    allow_outside: bool,
    /// Where answers are read, when a person can be asked.
    input: Option<Arc<Input>>,
    renderer: Arc<Renderer>,
    /// Ctrl-C typed into the line editor at a question counts as a Ctrl-C.
    interrupts: Interrupts,
    /// One prompt at a time: concurrent approvals queue for the terminal.
    prompt: tokio::sync::Mutex<()>,
    /// Set when any approval was answered `abort` (exit code 3).
    aborted: AtomicBool,
    /// Approvals denied since [`CliApprover::take_denied`] (exit code 5).
    denied: AtomicU32,
    /// Set when an approval was denied for lack of a terminal (hint printed once).
    hinted: AtomicBool,
    /// The last question was answered with Ctrl-C.
    by_ctrl_c: AtomicBool,
}

impl CliApprover {
    /// `input`: the reader answers come from (`None`: nobody can be asked).
    pub fn new(
        mode: Option<ApproveMode>,
        allow_outside: bool,
        input: Option<Arc<Input>>,
        renderer: Arc<Renderer>,
        interrupts: Interrupts,
    ) -> Arc<CliApprover> {
        Arc::new(CliApprover {
            mode,
            allow_outside,
            input,
            renderer,
            interrupts,
            prompt: tokio::sync::Mutex::new(()),
            aborted: AtomicBool::new(false),
            denied: AtomicU32::new(0),
            hinted: AtomicBool::new(false),
            by_ctrl_c: AtomicBool::new(false),
        })
    }

    /// Whether any approval was answered `abort` since the last call (and
    /// forgets it).
    pub fn take_aborted(&self) -> bool {
        self.aborted.swap(false, Ordering::Relaxed)
    }

    /// How many approvals were denied since the last call.
    pub fn take_denied(&self) -> u32 {
        self.denied.swap(0, Ordering::Relaxed)
    }

    async fn decide(&self, kind: Asked, what: String, cx: &ApprovalContext) -> ReviewDecision {
        let decision = match (self.mode, &self.input) {
            (Some(ApproveMode::All), _) => ReviewDecision::Approved,
            (Some(ApproveMode::Exec), _) if kind == Asked::Exec => ReviewDecision::Approved,
            (Some(ApproveMode::Patch), _) if kind == Asked::Patch => ReviewDecision::Approved,
            (Some(_), _) => {
                self.renderer.note(&format!("denied {what} (by --approve)"));
                ReviewDecision::Denied
            }
            (None, Some(input)) => self.ask(input, &what, cx).await,
            (None, None) => {
                let flag = match kind {
                    Asked::Exec => "exec",
                    Asked::Patch => "patch",
                    Asked::Tool => "all",
                };
                self.renderer.note(&format!("denied {what}: no terminal to ask"));
                if !self.hinted.swap(true, Ordering::Relaxed) {
                    self.renderer.note(&format!(
                        "to allow it, pass --approve {flag} (or --approve all); see `deputy exec --help`"
                    ));
                }
                ReviewDecision::Denied
            }
        };
        match decision {
            // The turn is interrupted rather than aborted by an answer.
            ReviewDecision::Abort if self.by_ctrl_c.swap(false, Ordering::Relaxed) => {}
            ReviewDecision::Abort => {
                if !self.aborted.swap(true, Ordering::Relaxed) {
                    self.renderer.abort_answered();
                    self.renderer.note("aborted: the turn ends");
                }
            }
            ReviewDecision::Denied => {
                self.denied.fetch_add(1, Ordering::Relaxed);
            }
            ReviewDecision::Approved | ReviewDecision::ApprovedForSession => {}
        }
        decision
    }

    /// Asks on the terminal: y / n / a(lways) / b (abort). The question stays
    /// on screen, alone on its line, until it is answered (the renderer holds
    /// other output and the spinner meanwhile). If the approval is withdrawn
    /// first, the question is closed with a note; the line typed for it is
    /// then read and ignored.
    async fn ask(&self, input: &Input, what: &str, cx: &ApprovalContext) -> ReviewDecision {
        let _turn = self.prompt.lock().await;
        let question = format!("allow {what}? [y]es / [n]o / [a]lways this session / a[b]ort: ");
        loop {
            if cx.is_cancelled() {
                return ReviewDecision::Denied;
            }
            // Questions queued behind an `abort` answer are not asked: the
            // person has stopped the turn.
            if self.aborted.load(Ordering::Relaxed) {
                return ReviewDecision::Abort;
            }
            let read = if input.has_editor() {
                self.renderer.open_question(None);
                input.read(&question)
            } else {
                self.renderer.open_question(Some(&question));
                input.read("")
            };
            let reply = tokio::select! {
                reply = read => reply,
                () = cx.cancelled() => {
                    self.renderer.close_question(true);
                    self.renderer.note("(the agent withdrew that request; press Enter)");
                    return ReviewDecision::Denied;
                }
                () = self.renderer.broken() => return ReviewDecision::Denied,
            };
            self.renderer.close_question(false);
            match reply {
                Reply::Line(line) => match line.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => return ReviewDecision::Approved,
                    "n" | "no" | "" => {
                        self.renderer.note("denied");
                        return ReviewDecision::Denied;
                    }
                    "a" | "always" => return ReviewDecision::ApprovedForSession,
                    "b" | "abort" => return ReviewDecision::Abort,
                    _ => self.renderer.note("please answer y, n, a or b"),
                },
                // Ctrl-C at the question: interrupt the turn, as Ctrl-C does
                // anywhere else. `abort` ends it now; a denial would let the
                // turn go on until the interrupt arrives.
                Reply::Interrupted => {
                    self.interrupts.raise();
                    self.by_ctrl_c.store(true, Ordering::Relaxed);
                    return ReviewDecision::Abort;
                }
                Reply::Eof => return ReviewDecision::Denied,
            }
        }
    }
}

/// `text`, cut to at most `max` bytes (at a character boundary) with a mark.
fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

fn describe_exec(p: &ExecApprovalParams) -> String {
    format!("`{}` in {}", quote_argv(&p.command), clean(&p.cwd.to_string_lossy()))
}

fn describe_patch(p: &PatchApprovalParams) -> String {
    let files: Vec<String> = p.changes.keys().map(|f| clean(f).into_owned()).collect();
    let mut what = format!("a patch to {}", files.join(", "));
    if !p.outside_workspace.is_empty() {
        what.push_str(&format!(" that WRITES OUTSIDE THE WORKSPACE: {}", outside_list(p)));
        match &p.grant_root {
            Some(root) => what.push_str(&format!(
                " ([a]lways also allows writes under {})",
                clean(&root.to_string_lossy())
            )),
            None => what.push_str(" ([a]lways grants nothing outside)"),
        }
    }
    what
}

fn outside_list(p: &PatchApprovalParams) -> String {
    p.outside_workspace
        .iter()
        .map(|o| clean(&o.to_string_lossy()).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl Approver for CliApprover {
    async fn approve_exec(&self, params: ExecApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        if let Some(reason) = &params.reason {
            self.renderer.note(&format!("the agent asks to run a command: {}", clean(reason)));
        }
        self.decide(Asked::Exec, describe_exec(&params), &cx).await
    }

    async fn approve_patch(&self, params: PatchApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        self.renderer.patch_preview(&params.changes);
        let automatic = matches!(self.mode, Some(ApproveMode::Patch | ApproveMode::All));
        if automatic && !params.outside_workspace.is_empty() {
            // `--approve` speaks for the workspace only; a write outside it
            // needs its own say-so, and is never granted for the session.
            if !self.allow_outside {
                self.renderer.note(&format!(
                    "denied a patch that writes outside the workspace ({}): --approve does not cover that; \
                     pass --allow-outside-cwd to allow it",
                    outside_list(&params)
                ));
                return ReviewDecision::Denied;
            }
            self.renderer.warning(&format!(
                "approving a patch that writes OUTSIDE the workspace (--allow-outside-cwd): {}",
                outside_list(&params)
            ));
            return ReviewDecision::Approved;
        }
        self.decide(Asked::Patch, describe_patch(&params), &cx).await
    }

    async fn approve_tool(&self, params: ToolApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        if let Some(input) = &params.input {
            let shown = serde_json::to_string(input).unwrap_or_default();
            self.renderer.note(&format!("the agent's input for it: {}", clean(&cap(&shown, 2000))));
        }
        if let Some(detail) = &params.detail {
            self.renderer.note(&clean(&cap(detail, 2000)));
        }
        let what = format!("the agent's {} tool: {}", clean(&params.tool), clean(&params.title));
        self.decide(Asked::Tool, what, &cx).await
    }
}
