//! The turn engine: model calls, tool calls, approvals.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use deputy_protocol::{
    ApprovalKind, ApprovalResult, EventMsg, ExecApprovalParams, FileChange, PatchApprovalParams,
    ReviewDecision, RolloutItem, TurnAbortReason, methods,
};
use deputy_rpc::{CancellationToken, RequestOptions, RpcError};
use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

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
}

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
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                let r = reason.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(TurnAbortReason::Interrupted);
                TurnOutcome::Aborted(r)
            }
            outcome = self.run() => outcome,
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
                let ask = s.approvals.lock().unwrap_or_else(|e| e.into_inner()).exec_needs_approval(&command);
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
                        if let Some(root) = &prepared.grant_root
                            && approvals.policy == deputy_protocol::ApprovalPolicy::NeverAsk
                        {
                            return Plan::Refused {
                                call_id,
                                message: format!(
                                    "apply_patch refused: it writes outside the writable roots (under {}), \
                                     and the never_ask policy cannot grant that",
                                    root.display()
                                ),
                            };
                        }
                        let ask =
                            prepared.grant_root.is_some() || approvals.patch_needs_approval(&prepared.files);
                        Plan::Patch { call_id, patch: parsed, prepared, ask }
                    }
                    Err(e) => Plan::Refused { call_id, message: format!("apply_patch: {e}") },
                }
            }
            Tool::ApprovalProbe { n } => Plan::Probe { call_id, n },
            Tool::Invalid { name, error, .. } => {
                Plan::Refused { call_id, message: format!("{name}: {error}") }
            }
        }
    }

    fn ask_exec(&self, call_id: &str, argv: &[String], reason: Option<String>) -> PendingApproval {
        let params = ExecApprovalParams {
            call_id: call_id.to_owned(),
            approval_id: None,
            turn_id: self.id.clone(),
            command: argv.to_vec(),
            cwd: self.session.cwd.clone(),
            reason,
        };
        self.ask(methods::APPROVAL_EXEC, params)
    }

    fn ask<P: serde::Serialize>(&self, method: &str, params: P) -> PendingApproval {
        let fut = self.session.peer.request_with::<_, ApprovalResult>(
            method,
            params,
            RequestOptions::default().cancel(self.cancel.clone()),
        );
        let cancel = self.cancel.clone();
        PendingApproval(Some(tokio::spawn(async move {
            match fut.await {
                Ok(r) => Answer::Decision(r.decision),
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
                Plan::Patch { call_id, prepared, ask: true, .. } => self.ask(
                    methods::APPROVAL_PATCH,
                    PatchApprovalParams {
                        call_id: call_id.clone(),
                        turn_id: self.id.clone(),
                        changes: prepared.changes.clone(),
                        reason: None,
                        grant_root: prepared.grant_root.clone(),
                    },
                ),
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
                Plan::Probe { call_id, n } => self.probe(call_id, n).await,
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
        self.emit(EventMsg::ExecCommandBegin {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            command: argv.clone(),
            cwd: s.cwd.clone(),
        })
        .await;
        let params = ExecParams {
            argv,
            cwd: s.cwd.clone(),
            timeout: s.exec_timeout,
            keep_secret_env: s.keep_secret_env,
        };
        let id = self.id.as_str();
        let outcome = exec::run(&params, |stream, chunk| {
            let msg = EventMsg::ExecCommandOutputDelta { call_id: call_id.clone(), stream, chunk };
            async move {
                s.emit(id, &msg).await;
            }
        })
        .await;
        let mut result = format!("exit code: {}", outcome.exit_code);
        if outcome.timed_out {
            result.push_str(" (timed out)");
        }
        result.push('\n');
        result.push_str(&outcome.output);
        self.emit(EventMsg::ExecCommandEnd {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            exit_code: outcome.exit_code,
            duration_ms: outcome.duration.as_millis() as u64,
            output: outcome.output,
            truncated: outcome.truncated,
            timed_out: outcome.timed_out,
        })
        .await;
        self.tool_result(call_id, outcome.exit_code == 0, result);
        ToolsOutcome::Continue
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
        if let Some(root) = &approved.grant_root {
            s.roots.lock().unwrap_or_else(|e| e.into_inner()).add(root.clone());
        }
        if matches!(answer.decision(), ReviewDecision::ApprovedForSession) {
            s.approvals.lock().unwrap_or_else(|e| e.into_inner()).grant_patch(&approved.files);
        }
        // Compute again: the files may have changed while the approval was pending.
        let roots = s.roots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let fresh = match patch::prepare(&patch, &s.cwd, &roots) {
            Ok(p) if p.changes != approved.changes => {
                Err("apply_patch: the files changed while the approval was pending; nothing was applied"
                    .to_owned())
            }
            Ok(p) if p.grant_root.is_some() => Err(format!(
                "apply_patch refused: it writes outside the writable roots (under {})",
                p.grant_root.as_deref().unwrap_or(std::path::Path::new("/")).display()
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
        let changes: BTreeMap<String, FileChange> = prepared.changes.clone();
        self.emit(EventMsg::PatchApplyBegin {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            auto_approved: !asked,
            changes,
        })
        .await;
        let applied = patch::apply(&prepared);
        let (success, stdout, stderr) = match applied {
            Ok(()) => {
                (true, format!("Success. Updated the following files:\n{}", prepared.summary), String::new())
            }
            Err(e) => (false, String::new(), e.to_string()),
        };
        self.emit(EventMsg::PatchApplyEnd {
            call_id: call_id.clone(),
            turn_id: self.id.clone(),
            success,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        })
        .await;
        self.tool_result(call_id, success, if success { stdout } else { stderr });
        ToolsOutcome::Continue
    }

    /// `n` sequential approval round trips for a harmless argv; nothing runs.
    async fn probe(&self, call_id: String, n: u64) -> ToolsOutcome {
        let argv = vec!["true".to_owned()];
        let (mut approved, mut denied, mut abort, mut failed) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..n {
            let mut p =
                self.ask_exec(&format!("{call_id}-{}", i + 1), &argv, Some(format!("probe {}/{n}", i + 1)));
            match p.answer().await {
                Answer::Decision(ReviewDecision::Approved | ReviewDecision::ApprovedForSession) => {
                    approved += 1
                }
                Answer::Decision(ReviewDecision::Denied) => denied += 1,
                Answer::Decision(ReviewDecision::Abort) => abort += 1,
                Answer::Failed | Answer::Auto => failed += 1,
            }
        }
        let message = format!(
            "ask_approval_only: {n} round trips: {approved} approved, {denied} denied, {abort} abort, {failed} failed"
        );
        self.session.record(RolloutItem::AgentMessage { turn_id: self.id.clone(), message: message.clone() });
        self.emit(EventMsg::AgentMessage { message: message.clone() }).await;
        self.set_last_message(message.clone());
        self.tool_result(call_id, true, message);
        ToolsOutcome::Continue
    }
}
