//! How the command line answers approvals: automatically (`--approve`), by
//! asking on the terminal, or — with nobody to ask — by denying and saying
//! how to allow.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use deputy_host::{ApprovalContext, Approver, async_trait};
use deputy_protocol::{ExecApprovalParams, PatchApprovalParams, ReviewDecision};

use super::render::Renderer;

/// `--approve`: decide every approval without asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApproveMode {
    /// Deny every command and patch.
    Never,
    /// Approve commands, deny patches.
    Exec,
    /// Approve patches, deny commands.
    Patch,
    /// Approve every command and patch.
    All,
}

/// The command line's approver.
pub struct CliApprover {
    mode: Option<ApproveMode>,
    /// `--allow-outside-cwd`: `--approve patch|all` also approves patches
    /// that write outside the workspace (each with a warning line). Without
    /// it such patches are denied: leaving the workspace is never implied.
    allow_outside: bool,
    /// Whether a person can be asked (stdin and stderr are terminals).
    interactive: bool,
    renderer: Arc<Renderer>,
    /// One prompt at a time: concurrent approvals queue for the terminal.
    prompt: tokio::sync::Mutex<()>,
    /// Set when any approval was answered `abort` (exit code 3).
    aborted: AtomicBool,
    /// Set when an approval was denied for lack of a terminal (hint printed once).
    hinted: AtomicBool,
}

impl CliApprover {
    pub fn new(mode: Option<ApproveMode>, allow_outside: bool, renderer: Arc<Renderer>) -> Arc<CliApprover> {
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        Arc::new(CliApprover {
            mode,
            allow_outside,
            interactive,
            renderer,
            prompt: tokio::sync::Mutex::new(()),
            aborted: AtomicBool::new(false),
            hinted: AtomicBool::new(false),
        })
    }

    /// Whether any approval was answered `abort`.
    pub fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Relaxed)
    }

    async fn decide(&self, exec: bool, what: String, cx: &ApprovalContext) -> ReviewDecision {
        let decision = match self.mode {
            Some(ApproveMode::All) => ReviewDecision::Approved,
            Some(ApproveMode::Exec) if exec => ReviewDecision::Approved,
            Some(ApproveMode::Patch) if !exec => ReviewDecision::Approved,
            Some(_) => {
                self.renderer.note(&format!("denied {what} (by --approve)"));
                ReviewDecision::Denied
            }
            None if self.interactive => self.ask(&what, cx).await,
            None => {
                let flag = if exec { "exec" } else { "patch" };
                self.renderer.note(&format!("denied {what}: no terminal to ask"));
                if !self.hinted.swap(true, Ordering::Relaxed) {
                    self.renderer.note(&format!(
                        "to allow it, pass --approve {flag} (or --approve all); see `deputy exec --help`"
                    ));
                }
                ReviewDecision::Denied
            }
        };
        if decision == ReviewDecision::Abort {
            self.aborted.store(true, Ordering::Relaxed);
        }
        decision
    }

    /// Asks on the terminal: y / n / a(lways) / b (abort). The read runs on a
    /// blocking thread; if the approval is withdrawn meanwhile, the answer is
    /// ignored (the future is dropped) and the prompt is closed with a note.
    async fn ask(&self, what: &str, cx: &ApprovalContext) -> ReviewDecision {
        let _turn = self.prompt.lock().await;
        if cx.is_cancelled() {
            return ReviewDecision::Denied;
        }
        let question = format!("allow {what}? [y]es / [n]o / [a]lways this session / a[b]ort: ");
        let renderer = Arc::clone(&self.renderer);
        let answer = tokio::task::spawn_blocking(move || {
            loop {
                renderer.prompt(&question);
                let mut line = String::new();
                match std::io::stdin().lock().read_line(&mut line) {
                    Ok(0) | Err(_) => return ReviewDecision::Denied,
                    Ok(_) => {}
                }
                match line.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => return ReviewDecision::Approved,
                    "n" | "no" | "" => return ReviewDecision::Denied,
                    "a" | "always" => return ReviewDecision::ApprovedForSession,
                    "b" | "abort" => return ReviewDecision::Abort,
                    _ => {
                        let _ = writeln!(std::io::stderr(), "please answer y, n, a or b");
                    }
                }
            }
        });
        tokio::select! {
            answer = answer => answer.unwrap_or(ReviewDecision::Denied),
            () = cx.cancelled() => {
                self.renderer.note("(the agent withdrew that request; press Enter)");
                ReviewDecision::Denied
            }
        }
    }
}

fn describe_exec(p: &ExecApprovalParams) -> String {
    let command = super::render::command_line(&p.command);
    format!("`{command}` in {}", p.cwd.display())
}

fn describe_patch(p: &PatchApprovalParams) -> String {
    let files: Vec<&str> = p.changes.keys().map(String::as_str).collect();
    let mut what = format!("a patch to {}", files.join(", "));
    if !p.outside_workspace.is_empty() {
        what.push_str(&format!(" that WRITES OUTSIDE THE WORKSPACE: {}", outside_list(p)));
        match &p.grant_root {
            Some(root) => what.push_str(&format!(" ([a]lways also allows writes under {})", root.display())),
            None => what.push_str(" ([a]lways grants nothing outside)"),
        }
    }
    what
}

fn outside_list(p: &PatchApprovalParams) -> String {
    p.outside_workspace.iter().map(|o| o.display().to_string()).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl Approver for CliApprover {
    async fn approve_exec(&self, params: ExecApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        if let Some(reason) = &params.reason {
            self.renderer.note(&format!("the agent asks to run a command: {reason}"));
        }
        self.decide(true, describe_exec(&params), &cx).await
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
        self.decide(false, describe_patch(&params), &cx).await
    }
}
