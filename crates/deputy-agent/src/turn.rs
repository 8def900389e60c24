//! The turn engine: model calls, tool calls, approvals.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use deputy_protocol::{
    ApprovalKind, EventMsg, ExecApprovalParams, FileChange, PatchApprovalParams, ReviewDecision, RolloutItem,
    TurnAbortReason,
};
use deputy_rpc::{CancellationToken, RpcError};
use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::acp::ApprovalRequest;
use crate::exec::{self, ExecParams};
use crate::model::{Fault, MAX_RETRIES, ModelEvent, Tool, ToolCall};
use crate::patch::{self, Patch, PreparedPatch};
use crate::session::{ExitRequest, HUNG, Session};

/// How a turn ended.
#[derive(Debug)]
pub(crate) enum TurnOutcome {
    Completed { last_agent_message: Option<String> },
    Aborted(TurnAbortReason),
}

/// One running turn.
pub(crate) struct Turn {
    pub session: Arc<Session>,
    /// The id of the `user_input` submission.
    pub id: String,
    pub index: u64,
    pub cancel: CancellationToken,
    /// The last complete agent message, for `task_complete`.
    pub last_message: Mutex<Option<String>>,
    /// Tool calls whose begin event was sent and whose end event was not:
    /// when the turn is aborted, their end events are sent from here, so
    /// every begin has exactly one end.
    pub open: Mutex<Vec<OpenCall>>,
}

/// A tool call between its begin and end events.
pub(crate) enum OpenCall {
    Exec {
        call_id: String,
        started: std::time::Instant,
        capture: exec::Capture,
    },
    /// The patch was applied (or failed) but its end event was not sent yet.
    Patch {
        call_id: String,
        end: Option<(bool, String, String)>,
    },
}

impl OpenCall {
    fn call_id(&self) -> &str {
        match self {
            OpenCall::Exec { call_id, .. } | OpenCall::Patch { call_id, .. } => call_id,
        }
    }
}

/// What a command killed by a turn abort reports as its exit code: 128 +
/// SIGKILL, the signal the agent kills its process group with.
pub(crate) const ABORTED_EXIT_CODE: i32 = 128 + 9;

/// The answer to an approval request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// No request was needed.
    Auto,
    Decision(ReviewDecision),
    /// The request failed (error response, undecodable result, closed
    /// connection): counts as denied.
    Failed,
}

impl Answer {
    fn decision(self) -> ReviewDecision {
        match self {
            Answer::Auto => ReviewDecision::Approved,
            Answer::Decision(d) => d,
            Answer::Failed => ReviewDecision::Denied,
        }
    }
}

/// A spawned approval request; aborted (which withdraws the request with
/// `$/cancelRequest`) when dropped before it is answered.
struct PendingApproval(Option<JoinHandle<Answer>>);

impl PendingApproval {
    async fn answer(&mut self) -> Answer {
        match self.0.as_mut() {
            Some(h) => {
                let a = h.await.unwrap_or(Answer::Failed);
                self.0 = None;
                a
            }
            None => Answer::Auto,
        }
    }
}

impl Drop for PendingApproval {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// A tool call checked and ready for approval.
enum Plan {
    Exec {
        call_id: String,
        argv: Vec<String>,
        reason: Option<String>,
        ask: bool,
    },
    Patch {
        call_id: String,
        patch: Patch,
        prepared: PreparedPatch,
        ask: bool,
    },
    Probe {
        call_id: String,
        n: u64,
        in_flight: u64,
    },
    /// Refused before asking; `message` goes to the model and an `error` event.
    Refused {
        call_id: String,
        message: String,
    },
}

enum ToolsOutcome {
    Continue,
    Abort,
}

impl Turn {
    /// Runs the turn until it ends or `cancel` fires; then the turn's body is
    /// dropped at once (killing commands, withdrawing approvals) and the
    /// outcome is the abort reason.
    pub async fn run_until_cancelled(self, reason: Arc<Mutex<Option<TurnAbortReason>>>) -> TurnOutcome {
        let cancel = self.cancel.clone();
        // The body is dropped when `select!` returns: its commands are killed
        // and its approvals withdrawn before the open calls are closed below.
        let finished = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            outcome = self.run() => Some(outcome),
        };
        if let Some(outcome) = finished {
            return outcome;
        }
        self.close_open_calls().await;
        let r = reason.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(TurnAbortReason::Interrupted);
        TurnOutcome::Aborted(r)
    }

    fn open_calls(&self) -> std::sync::MutexGuard<'_, Vec<OpenCall>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_call(&self, call_id: &str) {
        self.open_calls().retain(|c| c.call_id() != call_id);
    }

    /// Sends the end event of every call the abort cut short.
    async fn close_open_calls(&self) {
        let open = std::mem::take(&mut *self.open_calls());
        for call in open {
            match call {
                OpenCall::Exec { call_id, started, capture } => {
                    let (output, truncated) = capture.finish();
                    self.emit(EventMsg::ExecCommandEnd {
                        call_id: call_id.clone(),
                        turn_id: self.id.clone(),
                        exit_code: ABORTED_EXIT_CODE,
                        duration_ms: started.elapsed().as_millis() as u64,
                        output: output.clone(),
                        truncated,
                        timed_out: false,
                        interrupted: true,
                    })
                    .await;
                    self.tool_result(
                        call_id,
                        false,
                        format!("exit code: {ABORTED_EXIT_CODE} (killed: the turn was aborted)\n{output}"),
                    );
                }
                OpenCall::Patch { call_id, end } => {
                    let (success, stdout, stderr) = end.unwrap_or_else(|| {
                        (false, String::new(), "the turn was aborted before the patch was applied".to_owned())
                    });
                    self.emit(EventMsg::PatchApplyEnd {
                        call_id: call_id.clone(),
                        turn_id: self.id.clone(),
                        success,
                        stdout: stdout.clone(),
                        stderr: stderr.clone(),
                    })
                    .await;
                    self.tool_result(call_id, success, if success { stdout } else { stderr });
                }
            }
        }
    }

    fn set_last_message(&self, message: String) {
        *self.last_message.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    fn completed(&self) -> TurnOutcome {
        TurnOutcome::Completed {
            last_agent_message: self.last_message.lock().unwrap_or_else(|e| e.into_inner()).take(),
        }
    }

    async fn emit(&self, msg: EventMsg) {
        self.session.emit(&self.id, &msg).await;
    }

    async fn run(&self) -> TurnOutcome {
        let s = &self.session;
        self.emit(EventMsg::TaskStarted {
            turn_id: self.id.clone(),
            model_context_window: s.model.context_window(),
        })
        .await;
        let mut model_calls: u32 = 0;
        loop {
            if model_calls >= s.max_model_calls {
                s.note_capped(&self.id);
                self.emit(EventMsg::Error {
                    message: format!(
                        "the turn reached its cap of {} model calls (--max-model-calls) and was ended",
                        s.max_model_calls
                    ),
                })
                .await;
                return self.completed();
            }
            model_calls += 1;
            let prompt = s.prompt(&self.id, self.index);
            let mut calls: Vec<ToolCall> = Vec::new();
            let mut retries = 0;
            'call: loop {
                let mut stream = s.model.stream(&prompt);
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(ModelEvent::MessageDelta(delta)) => {
                            self.emit(EventMsg::AgentMessageDelta { delta }).await;
                        }
                        Ok(ModelEvent::Message(message)) => {
                            s.record(RolloutItem::AgentMessage {
                                turn_id: self.id.clone(),
                                message: message.clone(),
                            });
                            self.emit(EventMsg::AgentMessage { message: message.clone() }).await;
                            self.set_last_message(message);
                        }
                        Ok(ModelEvent::ReasoningDelta(delta)) => {
                            self.emit(EventMsg::AgentReasoningDelta { delta }).await;
                        }
                        Ok(ModelEvent::Reasoning(text)) => {
                            s.record(RolloutItem::Reasoning { turn_id: self.id.clone(), text: text.clone() });
                            self.emit(EventMsg::AgentReasoning { text }).await;
                        }
                        Ok(ModelEvent::ToolCall(call)) => {
                            s.record(RolloutItem::ToolCall {
                                turn_id: self.id.clone(),
                                call_id: call.call_id.clone(),
                                name: call.name().to_owned(),
                                arguments: call.arguments(),
                            });
                            calls.push(call);
                        }
                        Ok(ModelEvent::Usage(usage)) => {
                            let info = s.add_usage(usage);
                            s.persist(&RolloutItem::TokenCount { info });
                            self.emit(EventMsg::TokenCount { info: Some(info) }).await;
                        }
                        Ok(ModelEvent::Fault(fault)) => self.fault(fault).await,
                        Err(e) if e.retryable && retries < MAX_RETRIES && calls.is_empty() => {
                            retries += 1;
                            let delay = e.retry_after.unwrap_or_else(|| s.model.retry_delay(retries));
                            self.emit(EventMsg::StreamError {
                                message: format!(
                                    "{} (retry {retries}/{MAX_RETRIES} in {} ms)",
                                    e.message,
                                    delay.as_millis()
                                ),
                            })
                            .await;
                            drop(stream);
                            tokio::time::sleep(delay).await;
                            continue 'call;
                        }
                        Err(e) => {
                            let message = if e.retryable && retries > 0 {
                                format!("{} (gave up after {retries} retries)", e.message)
                            } else {
                                e.message
                            };
                            self.emit(EventMsg::Error { message }).await;
                            return self.completed();
                        }
                    }
                }
                break;
            }
            if calls.is_empty() {
                return self.completed();
            }
            match self.run_tools(calls).await {
                ToolsOutcome::Continue => {}
                ToolsOutcome::Abort => return TurnOutcome::Aborted(TurnAbortReason::Interrupted),
            }
        }
    }

    async fn fault(&self, fault: Fault) {
        match fault {
            Fault::Exit { code, stderr } => {
                if let Some(text) = stderr {
                    use std::io::Write as _;
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(text.as_bytes());
                    let _ = err.flush();
                }
                let _ = self.session.exit_tx.send(ExitRequest::Crash(code));
                std::future::pending::<()>().await;
            }
            Fault::Hang => {
                HUNG.store(true, std::sync::atomic::Ordering::Release);
                // SAFETY: setting a signal disposition; no handler involved.
                unsafe {
                    libc::signal(libc::SIGTERM, libc::SIG_IGN);
                }
                // A grandchild that keeps stdout/stderr open and stays in the
                // agent's process group (no setpgid): only a group kill ends it.
                match std::process::Command::new("sleep")
                    .arg("3600")
                    .stdin(std::process::Stdio::null())
                    .spawn()
                {
                    Ok(child) => {
                        debug!(pid = child.id(), "hang: started a sleeping grandchild");
                        std::mem::forget(child);
                    }
                    Err(e) => warn!(error = %e, "hang: cannot start the sleeping grandchild"),
                }
                std::future::pending::<()>().await;
            }
        }
    }

    // -----------------------------------------------------------------------
    // Tools.

    fn plan(&self, call: ToolCall) -> Plan {
        let s = &self.session;
        let ToolCall { call_id, tool } = call;
        match tool {
            Tool::Shell { command, reason } => {
                let mut roots = s.roots.lock().unwrap_or_else(|e| e.into_inner()).roots().to_vec();
                // A program in cwd is never "read-only", whatever the mode.
                roots.push(s.cwd.clone());
                let ask = s
                    .approvals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .exec_needs_approval(&command, &roots);
                Plan::Exec { call_id, argv: command, reason, ask }
            }
            Tool::ApplyPatch { patch: text } => {
                let parsed = match patch::parse(&text) {
                    Ok(p) => p,
                    Err(e) => return Plan::Refused { call_id, message: format!("apply_patch: {e}") },
                };
                let roots = s.roots.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match patch::prepare(&parsed, &s.cwd, &roots) {
                    Ok(prepared) => {
                        let approvals = s.approvals.lock().unwrap_or_else(|e| e.into_inner());
                        let outside = !prepared.outside.is_empty();
                        if outside && approvals.policy == deputy_protocol::ApprovalPolicy::NeverAsk {
                            return Plan::Refused {
                                call_id,
                                message: format!(
                                    "apply_patch refused: it writes outside the writable roots ({}), \
                                     and the never_ask policy cannot approve that",
                                    join_paths(&prepared.outside)
                                ),
                            };
                        }
                        // Leaving the workspace is its own decision: asked
                        // every time, whatever was approved for the session.
                        let ask = outside || approvals.patch_needs_approval(&prepared.files);
                        s.note_patch(&call_id, &prepared);
                        Plan::Patch { call_id, patch: parsed, prepared, ask }
                    }
                    Err(e) => Plan::Refused { call_id, message: format!("apply_patch: {e}") },
                }
            }
            Tool::ApprovalProbe { n, in_flight } => Plan::Probe { call_id, n, in_flight },
            Tool::Invalid { name, error, .. } => {
                Plan::Refused { call_id, message: format!("{name}: {error}") }
            }
        }
    }

    fn ask_exec(&self, call_id: &str, argv: &[String], reason: Option<String>) -> PendingApproval {
        self.ask(ApprovalRequest::Exec(ExecApprovalParams {
            call_id: call_id.to_owned(),
            approval_id: None,
            turn_id: self.id.clone(),
            command: argv.to_vec(),
            cwd: self.session.cwd.clone(),
            reason,
            unsandboxed: false,
        }))
    }

    fn ask(&self, request: ApprovalRequest) -> PendingApproval {
        let fut = self.session.ask_approval(request, self.cancel.clone());
        let cancel = self.cancel.clone();
        PendingApproval(Some(tokio::spawn(async move {
            match fut.await {
                Ok(decision) => Answer::Decision(decision),
                Err(e @ RpcError::ConnectionClosed { .. }) => {
                    // End of input: nobody can answer any more. That is not a
                    // denial; the session is about to abort this turn.
                    debug!(error = %e, "approval request unanswerable: waiting for the turn to be aborted");
                    cancel.cancelled().await;
                    Answer::Failed
                }
                Err(e @ RpcError::Cancelled) => {
                    debug!(error = %e, "approval request abandoned");
                    Answer::Failed
                }
                Err(e) => {
                    warn!(error = %e, "approval request failed: treated as denied");
                    Answer::Failed
                }
            }
        })))
    }

    /// Runs one response's tool calls: all approvals are asked at once, then
    /// each call runs in order once its own approval is in.
    async fn run_tools(&self, calls: Vec<ToolCall>) -> ToolsOutcome {
        let plans: Vec<Plan> = calls.into_iter().map(|c| self.plan(c)).collect();
        let mut pending: Vec<PendingApproval> = plans
            .iter()
            .map(|p| match p {
                Plan::Exec { call_id, argv, reason, ask: true } => {
                    self.ask_exec(call_id, argv, reason.clone())
                }
                Plan::Patch { call_id, prepared, ask: true, .. } => {
                    self.ask(ApprovalRequest::Patch(PatchApprovalParams {
                        call_id: call_id.clone(),
                        turn_id: self.id.clone(),
                        changes: FileChange::cap_all(&prepared.changes),
                        reason: None,
                        outside_workspace: prepared.outside.clone(),
                        grant_root: prepared.grant_root.clone(),
                    }))
                }
                _ => PendingApproval(None),
            })
            .collect();
        for (plan, pending) in plans.into_iter().zip(pending.iter_mut()) {
            let outcome = match plan {
                Plan::Exec { call_id, argv, ask, .. } => {
                    let answer = pending.answer().await;
                    self.exec_call(call_id, argv, ask, answer).await
                }
                Plan::Patch { call_id, patch, prepared, ask } => {
                    let answer = pending.answer().await;
                    self.patch_call(call_id, patch, prepared, ask, answer).await
                }
                Plan::Probe { call_id, n, in_flight } => self.probe(call_id, n, in_flight).await,
                Plan::Refused { call_id, message } => {
                    self.emit(EventMsg::Error { message: message.clone() }).await;
                    self.tool_result(call_id, false, message);
                    ToolsOutcome::Continue
                }
            };
            if let ToolsOutcome::Abort = outcome {
                return ToolsOutcome::Abort;
            }
        }
        ToolsOutcome::Continue
    }

    fn tool_result(&self, call_id: String, success: bool, output: String) {
        self.session.record(RolloutItem::ToolResult { turn_id: self.id.clone(), call_id, success, output });
    }

    fn record_approval(&self, call_id: &str, kind: ApprovalKind, decision: ReviewDecision) {
        self.session.persist(&RolloutItem::Approval {
            turn_id: self.id.clone(),
            call_id: call_id.to_owned(),
            kind,
            decision,
        });
    }

    /// Applies a decision's common part; `Some` when the tool must not run.
    fn refusal(
        &self,
        call_id: &str,
        kind: ApprovalKind,
        asked: bool,
        answer: Answer,
    ) -> Option<ToolsOutcome> {
        let decision = answer.decision();
        if asked {
            self.record_approval(call_id, kind, decision);
        }
        let what = match kind {
            ApprovalKind::Exec => "command",
            ApprovalKind::Patch => "patch",
        };
        match decision {
            ReviewDecision::Approved | ReviewDecision::ApprovedForSession => None,
            ReviewDecision::Denied => {
                let why =
                    if matches!(answer, Answer::Failed) { "the approval request failed" } else { "denied" };
                self.tool_result(call_id.to_owned(), false, format!("the {what} was not run: {why}"));
                Some(ToolsOutcome::Continue)
            }
            ReviewDecision::Abort => {
                self.tool_result(call_id.to_owned(), false, format!("the {what} was not run: aborted"));
                Some(ToolsOutcome::Abort)
            }
        }
    }

    async fn exec_call(
        &self,
        call_id: String,
        argv: Vec<String>,
        asked: bool,
        answer: Answer,
    ) -> ToolsOutcome {
        if let Some(out) = self.refusal(&call_id, ApprovalKind::Exec, asked, answer) {
            return out;
        }
        let s = &self.session;
        if matches!(answer.decision(), ReviewDecision::ApprovedForSession) {
            s.approvals.lock().unwrap_or_else(|e| e.into_inner()).grant_exec(argv.clone());
        }
        let outcome = self.run_command(&call_id, &argv, false).await;
        let mut result = outcome_text(&outcome);
        let mut success = outcome.exit_code == 0;
        let escalates = s.approvals.lock().unwrap_or_else(|e| e.into_inner()).escalates();
        let hint = if escalates && !success && !outcome.timed_out {
            crate::sandbox::denial_hint(&outcome.output)
        } else {
            None
        };
        if let Some(hint) = hint {
            // Asked once: the re-run is outside the sandbox, so it cannot be
            // blocked by it again.
            let rerun_id = format!("{call_id}-unsandboxed");
            let reason = format!(
                "the sandbox ({}) blocked this command: {hint}; approve to run it again outside the sandbox",
                s.sandbox.describe()
            );
            let params = ExecApprovalParams {
                call_id: call_id.clone(),
                approval_id: Some(rerun_id.clone()),
                turn_id: self.id.clone(),
                command: argv.clone(),
                cwd: s.cwd.clone(),
                reason: Some(reason),
                unsandboxed: true,
            };
            let answer = self.ask(ApprovalRequest::Exec(params)).answer().await;
            self.record_approval(&rerun_id, ApprovalKind::Exec, answer.decision());
            match answer.decision() {
                ReviewDecision::Approved | ReviewDecision::ApprovedForSession => {
                    let rerun = self.run_command(&rerun_id, &argv, true).await;
                    success = rerun.exit_code == 0;
                    result = format!(
                        "in the sandbox: {}\nre-run outside the sandbox (approved): {}",
                        result,
                        outcome_text(&rerun)
                    );
                }
                ReviewDecision::Denied => {
                    result.push_str("\n(running it outside the sandbox was denied)");
                }
                ReviewDecision::Abort => {
                    self.tool_result(call_id, false, result);
                    return ToolsOutcome::Abort;
                }
            }
        }
        self.tool_result(call_id, success, result);
        ToolsOutcome::Continue
    }

    /// Runs one command with its begin/output/end events; `unsandboxed`
    /// runs it outside the session's sandbox (an approved escalation).
    async fn run_command(&self, call_id: &str, argv: &[String], unsandboxed: bool) -> exec::ExecOutcome {
        let s = &self.session;
        let confined = !unsandboxed && s.sandbox.is_enforced();
        let call_id = call_id.to_owned();
        let started = std::time::Instant::now();
        self.emit(EventMsg::ExecCommandBegin {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            command: argv.to_vec(),
            cwd: s.cwd.clone(),
            unsandboxed: !confined,
        })
        .await;
        // From here until the end event is sent, an abort closes the call.
        self.open_calls().push(OpenCall::Exec {
            call_id: call_id.clone(),
            started,
            capture: exec::Capture::default(),
        });
        let sandbox = confined.then(|| crate::sandbox::Confinement {
            policy: s.sandbox,
            writable: s.roots.lock().unwrap_or_else(|e| e.into_inner()).roots().to_vec(),
        });
        let params = ExecParams {
            argv: argv.to_vec(),
            cwd: s.cwd.clone(),
            timeout: s.exec_timeout,
            keep_secret_env: s.keep_secret_env,
            sandbox,
        };
        let id = self.id.as_str();
        let outcome = exec::run(&params, |stream, chunk| {
            if let Some(OpenCall::Exec { capture, .. }) =
                self.open_calls().iter_mut().find(|c| c.call_id() == call_id)
            {
                capture.push(chunk.as_bytes());
            }
            let msg = EventMsg::ExecCommandOutputDelta { call_id: call_id.clone(), stream, chunk };
            async move {
                s.emit(id, &msg).await;
            }
        })
        .await;
        self.emit(EventMsg::ExecCommandEnd {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            exit_code: outcome.exit_code,
            duration_ms: outcome.duration.as_millis() as u64,
            output: outcome.output.clone(),
            truncated: outcome.truncated,
            timed_out: outcome.timed_out,
            interrupted: false,
        })
        .await;
        self.close_call(&call_id);
        outcome
    }

    async fn patch_call(
        &self,
        call_id: String,
        patch: Patch,
        approved: PreparedPatch,
        asked: bool,
        answer: Answer,
    ) -> ToolsOutcome {
        if let Some(out) = self.refusal(&call_id, ApprovalKind::Patch, asked, answer) {
            return out;
        }
        let s = &self.session;
        // Only `approved_for_session` widens the workspace, and only by the
        // one directory the request named; `approved` applies this patch.
        if matches!(answer.decision(), ReviewDecision::ApprovedForSession) {
            if let Some(root) = &approved.grant_root {
                s.roots.lock().unwrap_or_else(|e| e.into_inner()).add(root.clone());
            }
            s.approvals.lock().unwrap_or_else(|e| e.into_inner()).grant_patch(&approved.files);
        }
        // Compute again: the files may have changed while the approval was pending.
        let roots = s.roots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let fresh = match patch::prepare(&patch, &s.cwd, &roots) {
            Ok(p) if p.changes != approved.changes => {
                Err("apply_patch: the files changed while the approval was pending; nothing was applied"
                    .to_owned())
            }
            // Writes outside must be exactly those the person approved (a
            // path swapped for a symlink meanwhile would land elsewhere).
            Ok(p) if !p.outside.iter().all(|o| approved.outside.contains(o)) => Err(format!(
                "apply_patch refused: it now writes outside the writable roots where it did not ask to ({}); \
                 nothing was applied",
                join_paths(&p.outside)
            )),
            Ok(p) => Ok(p),
            Err(e) => Err(format!("apply_patch: {e}")),
        };
        let prepared = match fresh {
            Ok(p) => p,
            Err(message) => {
                self.emit(EventMsg::Error { message: message.clone() }).await;
                self.tool_result(call_id, false, message);
                return ToolsOutcome::Continue;
            }
        };
        let changes: BTreeMap<String, FileChange> = FileChange::cap_all(&prepared.changes);
        self.emit(EventMsg::PatchApplyBegin {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            auto_approved: !asked,
            changes,
        })
        .await;
        // No await between here and the registration below: an abort either
        // came before the begin event (nothing applied, nothing to close) or
        // finds the result here.
        let applied = patch::apply(&prepared);
        let (success, stdout, stderr) = match applied {
            Ok(()) => {
                (true, format!("Success. Updated the following files:\n{}", prepared.summary), String::new())
            }
            Err(e) => (false, String::new(), e.to_string()),
        };
        self.open_calls().push(OpenCall::Patch {
            call_id: call_id.clone(),
            end: Some((success, stdout.clone(), stderr.clone())),
        });
        self.emit(EventMsg::PatchApplyEnd {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            success,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        })
        .await;
        self.close_call(&call_id);
        self.tool_result(call_id, success, if success { stdout } else { stderr });
        ToolsOutcome::Continue
    }

    /// `n` sequential approval round trips for a harmless argv; nothing runs.
    /// `n` approval round trips, `in_flight` of them outstanding at a time,
    /// each timed from the request's queueing to its answer (here, on the
    /// agent: the figure the benchmarks plot against concurrency).
    async fn probe(&self, call_id: String, n: u64, in_flight: u64) -> ToolsOutcome {
        use futures::stream::FuturesUnordered;
        let argv = vec!["true".to_owned()];
        let in_flight = in_flight.clamp(1, n.max(1));
        let (mut approved, mut denied, mut abort, mut failed) = (0u64, 0u64, 0u64, 0u64);
        let mut round_trips = Vec::with_capacity(n.min(1 << 20) as usize);
        let mut running = FuturesUnordered::new();
        let mut asked = 0u64;
        while asked < n || !running.is_empty() {
            while asked < n && (running.len() as u64) < in_flight {
                asked += 1;
                let started = std::time::Instant::now();
                let mut p =
                    self.ask_exec(&format!("{call_id}-{asked}"), &argv, Some(format!("probe {asked}/{n}")));
                running.push(async move { (p.answer().await, started.elapsed()) });
            }
            let Some((answer, took)) = running.next().await else { break };
            round_trips.push(took);
            match answer {
                Answer::Decision(ReviewDecision::Approved | ReviewDecision::ApprovedForSession) => {
                    approved += 1
                }
                Answer::Decision(ReviewDecision::Denied) => denied += 1,
                Answer::Decision(ReviewDecision::Abort) => abort += 1,
                Answer::Failed | Answer::Auto => failed += 1,
            }
        }
        round_trips.sort_unstable();
        let rank = |p: usize| {
            round_trips.get((round_trips.len() * p).div_ceil(100).max(1) - 1).map_or(0, |d| d.as_micros())
        };
        let message = format!(
            "ask_approval_only: {n} round trips: {approved} approved, {denied} denied, {abort} abort, {failed} failed; \
             {in_flight} in flight, round trip p50 {} us, p99 {} us",
            rank(50),
            rank(99),
        );
        self.session.record(RolloutItem::AgentMessage { turn_id: self.id.clone(), message: message.clone() });
        self.emit(EventMsg::AgentMessage { message: message.clone() }).await;
        self.set_last_message(message.clone());
        self.tool_result(call_id, true, message);
        ToolsOutcome::Continue
    }
}

/// What the model is told about a command's end.
fn outcome_text(outcome: &exec::ExecOutcome) -> String {
    let mut result = format!("exit code: {}", outcome.exit_code);
    if outcome.timed_out {
        result.push_str(" (timed out)");
    }
    result.push('\n');
    result.push_str(&outcome.output);
    result
}

fn join_paths(paths: &[std::path::PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
