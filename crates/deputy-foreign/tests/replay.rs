//! The mappers fed the real lines of the pinned programs (Codex app-server
//! 0.171.0, Claude Code 2.1.332), recorded against the model mocks of
//! PEERS.md: `tests/fixtures/{codex,claude}/*.jsonl`, one message a line,
//! `<- ` what the agent wrote, `-> ` what the recording host wrote (see
//! `tests/fixtures/README.md`).
//!
//! A replay plays the host's part: where the recording host submitted a
//! turn, an interrupt or an approval answer, the replay submits the same to
//! the mapper; every other host line must be one the mapper produced
//! itself. Every event is checked against Deputy's published JSON Schema
//! (`schema/json/Event.json`) and the event contract
//! ([`deputy_foreign::invariants::check`]).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::OnceLock;

use deputy_foreign::claude::{ClaudeConfig, ClaudeSession};
use deputy_foreign::codex::{CodexConfig, CodexSession};
use deputy_foreign::{Approval, ForeignSession, Output, invariants};
use deputy_protocol::{Event, EventMsg, FileChange, Op, ReviewDecision, TurnAbortReason};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn event_schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(root().join("schema/json/Event.json")).unwrap();
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Codex,
    Claude,
}

/// What a replay produced, and what the recording host did.
struct Run {
    outs: Vec<Output>,
    /// Answers the replay gave that the mapper dropped (withdrawn first).
    dropped_answers: usize,
}

impl Run {
    fn events(&self) -> Vec<&Event> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.msg.kind()).collect()
    }

    /// Events, approvals and withdrawals in order (sends left out).
    fn story(&self) -> Vec<String> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.msg.kind().to_owned()),
                Output::Approve(Approval::Exec(_)) => Some("APPROVE exec".into()),
                Output::Approve(Approval::Patch(_)) => Some("APPROVE patch".into()),
                Output::Approve(Approval::Other(o)) => Some(format!("APPROVE other {}", o.tool)),
                Output::Withdrawn(_) => Some("WITHDRAWN".into()),
                Output::CloseInput => Some("CLOSE".into()),
                Output::Failed(m) => Some(format!("FAILED {m}")),
                Output::Send(_) => None,
            })
            .collect()
    }

    fn approvals(&self) -> Vec<&Approval> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Approve(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn find(&self, kind: &str) -> &EventMsg {
        &self.events().into_iter().find(|e| e.msg.kind() == kind).unwrap_or_else(|| panic!("no {kind}")).msg
    }
}

fn decision_of(d: Dialect, answer: &Value) -> ReviewDecision {
    match d {
        Dialect::Codex => match answer["result"]["decision"].as_str() {
            Some("accept") => ReviewDecision::Approved,
            Some("acceptForSession") => ReviewDecision::ApprovedForSession,
            Some("decline") => ReviewDecision::Denied,
            Some("cancel") => ReviewDecision::Abort,
            other => panic!("a recorded decision the replay does not know: {other:?}"),
        },
        Dialect::Claude => {
            let r = &answer["response"]["response"];
            match (r["behavior"].as_str(), r.get("updatedPermissions").is_some(), r["interrupt"] == true) {
                (Some("allow"), false, _) => ReviewDecision::Approved,
                (Some("allow"), true, _) => ReviewDecision::ApprovedForSession,
                (Some("deny"), _, false) => ReviewDecision::Denied,
                (Some("deny"), _, true) => ReviewDecision::Abort,
                other => panic!("a recorded answer the replay does not know: {other:?}"),
            }
        }
    }
}

/// What kind of host line this is, for matching it with a produced one.
fn shape(d: Dialect, v: &Value) -> String {
    match d {
        Dialect::Codex => v["method"].as_str().map(str::to_owned).unwrap_or_else(|| "response".into()),
        Dialect::Claude => {
            format!("{}/{}", v["type"].as_str().unwrap_or(""), v["request"]["subtype"].as_str().unwrap_or(""))
        }
    }
}

/// The id a host line carries (Codex `id`, Claude `request_id`).
fn id_of(d: Dialect, v: &Value) -> Option<String> {
    match d {
        Dialect::Codex => v.get("id").map(|i| i.to_string()),
        Dialect::Claude => {
            v["request_id"].as_str().or(v["response"]["request_id"].as_str()).map(str::to_owned)
        }
    }
}

fn replay(d: Dialect, session: &mut dyn ForeignSession, fixture: &str) -> Run {
    let path = root().join("crates/deputy-foreign/tests/fixtures").join(fixture);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut outs: Vec<Output> = Vec::new();
    let mut produced: VecDeque<Value> = VecDeque::new();
    // Recorded host id → the mapper's, for the agent's answers to them.
    let mut ids: HashMap<String, String> = HashMap::new();
    // The agent's request id → the approval key.
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut dropped_answers = 0;
    let mut subs = 0;
    let take = |new: Vec<Output>, outs: &mut Vec<Output>, produced: &mut VecDeque<Value>| {
        for o in &new {
            if let Output::Send(line) = o {
                produced.push_back(serde_json::from_str(line).expect("the mapper sends JSON"));
            }
        }
        outs.extend(new);
    };
    take(session.start(), &mut outs, &mut produced);
    for (n, line) in text.lines().enumerate() {
        let (dir, body) = line.split_at(3);
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{fixture}:{}: {e}", n + 1));
        if dir == "-> " {
            let op = match (d, shape(d, &v).as_str()) {
                (Dialect::Codex, "turn/start") => {
                    Some(Op::text(v["params"]["input"][0]["text"].as_str().unwrap()))
                }
                (Dialect::Codex, "turn/interrupt") | (Dialect::Claude, "control_request/interrupt") => {
                    Some(Op::Interrupt)
                }
                (Dialect::Claude, "user/") => {
                    Some(Op::text(v["message"]["content"][0]["text"].as_str().unwrap()))
                }
                _ => None,
            };
            let answer_to = match d {
                Dialect::Codex if v.get("method").is_none() => id_of(d, &v),
                Dialect::Claude if v["type"] == "control_response" => id_of(d, &v),
                _ => None,
            };
            if let Some(op) = op {
                subs += 1;
                let new = session.submit(&format!("sub-{subs}"), &op).expect("the op is accepted");
                take(new, &mut outs, &mut produced);
            } else if let Some(request) = &answer_to {
                let decision = decision_of(d, &v);
                // Not pending: the mapper answered it itself (a session grant).
                if let Some(key) = keys.get(request) {
                    let new = session.answer(key, decision);
                    if new.is_empty() {
                        dropped_answers += 1;
                    }
                    take(new, &mut outs, &mut produced);
                }
            }
            // The recorded host line must match one the mapper produced.
            let want = shape(d, &v);
            let at = produced
                .iter()
                .position(|p| shape(d, p) == want && (want != "response" || id_of(d, p) == id_of(d, &v)));
            match at {
                Some(i) => {
                    let p = produced.remove(i).unwrap();
                    if let (Some(ours), Some(theirs)) = (id_of(d, &p), id_of(d, &v)) {
                        ids.insert(theirs, ours);
                    }
                    if answer_to.is_some() {
                        // Claude: the mapper keeps session grants itself and
                        // never sends `updatedPermissions`.
                        let class =
                            |d: ReviewDecision| if d.is_approved() { ReviewDecision::Approved } else { d };
                        assert_eq!(
                            class(decision_of(d, &p)),
                            class(decision_of(d, &v)),
                            "{fixture}:{}: the answer sent",
                            n + 1
                        );
                    }
                }
                None if answer_to.as_ref().is_some_and(|r| keys.contains_key(r)) => {
                    // A late answer the mapper dropped: nothing is sent.
                }
                None => panic!(
                    "{fixture}:{}: the mapper did not produce {want:?}; it produced {produced:?}",
                    n + 1
                ),
            }
        } else {
            assert_eq!(dir, "<- ", "{fixture}:{}", n + 1);
            // Answers to our requests carry our ids.
            let mut v = v;
            let key = match d {
                Dialect::Codex => v.get("method").is_none().then_some("id"),
                Dialect::Claude => None,
            };
            if let Some(k) = key
                && let Some(ours) = ids.get(&v[k].to_string())
            {
                v[k] = serde_json::from_str(ours).unwrap();
            }
            if d == Dialect::Claude
                && v["type"] == "control_response"
                && let Some(ours) = ids.get(v["response"]["request_id"].as_str().unwrap_or(""))
            {
                v["response"]["request_id"] = json!(ours);
            }
            let agent_request = match d {
                Dialect::Codex => v.get("method").and(v.get("id")).map(|i| i.to_string()),
                Dialect::Claude => {
                    (v["type"] == "control_request").then(|| v["request_id"].as_str().unwrap().to_owned())
                }
            };
            let line = if body.contains("\"request_id\"") || key.is_some() {
                v.to_string()
            } else {
                body.to_owned()
            };
            let new = session.receive(&line).unwrap_or_else(|e| panic!("{fixture}:{}: {e}", n + 1));
            if let Some(req) = agent_request {
                for o in &new {
                    if let Output::Approve(a) = o {
                        keys.insert(req.clone(), a.key().to_owned());
                    }
                }
                // Answered by the mapper itself: remember it answered.
                if !new.iter().any(|o| matches!(o, Output::Approve(_))) {
                    keys.remove(&req);
                }
            }
            take(new, &mut outs, &mut produced);
        }
    }
    // The recording ended with the host closing stdin and the agent exiting.
    take(session.submit("bye", &Op::Shutdown).unwrap(), &mut outs, &mut produced);
    take(session.closed(), &mut outs, &mut produced);
    let run = Run { outs, dropped_answers };
    for e in run.events() {
        let v = serde_json::to_value(e).unwrap();
        let errors: Vec<String> = event_schema().iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{fixture}: not a valid Deputy Event: {errors:?}\n{v}");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(&back, e, "{fixture}: the event round-trips");
    }
    invariants::check(&run.outs).unwrap_or_else(|e| panic!("{fixture}: {e}\n{:#?}", run.story()));
    assert!(matches!(run.outs.last(), Some(Output::Event(Event { msg: EventMsg::ShutdownComplete, .. }))));
    run
}

fn codex(fixture: &str) -> Run {
    // The recordings ran in /tmp/explore/<run>/work.
    let run_dir = match fixture {
        "exec_approved.jsonl" => "c-exec",
        "exec_auto.jsonl" => "c-auto",
        "patch_add.jsonl" => "c-patch",
        "patch_update.jsonl" => "c-edit",
        "interrupt_running.jsonl" => "c-sleep",
        "message.jsonl" => "c-message",
        "exec_declined.jsonl" => "c2-exec-decline",
        "exec_cancelled.jsonl" => "c2-exec-cancel",
        "interrupt_pending.jsonl" => "c2-exec-none",
        "exit_code.jsonl" => "c2-fail-accept",
        "model_error.jsonl" => "c2-error-accept",
        other => panic!("{other}"),
    };
    let mut s = CodexSession::new(CodexConfig::new(format!("/tmp/explore/{run_dir}/work")));
    replay(Dialect::Codex, &mut s, &format!("codex/{fixture}"))
}

fn claude(fixture: &str, work: &str) -> Run {
    let mut config = ClaudeConfig::new(work, "00000000-0000-4000-8000-000000000000");
    // What the recorded files held when the tools asked.
    config.read_file =
        Some(deputy_foreign::claude::FileReader(std::sync::Arc::new(|p: &std::path::Path| {
            p.ends_with("notes.txt").then(|| "old line\nsecond\n".to_owned())
        })));
    let mut s = ClaudeSession::new(config);
    replay(Dialect::Claude, &mut s, &format!("claude/{fixture}"))
}

fn with_turn(rest: &[&str]) -> Vec<String> {
    ["session_configured", "task_started"].iter().chain(rest).map(|s| s.to_string()).collect()
}

/// Codex warns (`configWarning`: no bubblewrap on PATH) before the thread starts.
fn codex_turn(rest: &[&str]) -> Vec<String> {
    ["warning", "session_configured", "task_started"].iter().chain(rest).map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Codex

#[test]
fn codex_message_streams_then_completes_with_usage() {
    let run = codex("message.jsonl");
    assert_eq!(
        run.story(),
        codex_turn(&[
            "agent_message_delta",
            "agent_message_delta",
            "agent_message",
            "token_count",
            "task_complete",
            "CLOSE",
            "shutdown_complete"
        ])
    );
    let EventMsg::SessionConfigured { session_id, model, approval_policy, .. } =
        run.find("session_configured")
    else {
        panic!()
    };
    assert!(session_id.starts_with("01a233"), "the thread id: {session_id}");
    assert_eq!(model, "gpt-5.5");
    assert_eq!(*approval_policy, deputy_protocol::ApprovalPolicy::AskToEscalate);
    let EventMsg::TaskComplete { last_agent_message, .. } = run.find("task_complete") else { panic!() };
    assert_eq!(last_agent_message.as_deref(), Some("Hello from the mock."));
    let EventMsg::TokenCount { info: Some(info) } = run.find("token_count") else { panic!() };
    assert_eq!((info.last_token_usage.total_tokens, info.model_context_window), (15, Some(258400)));
    // The turn's events carry the submission id of its user input.
    for e in run.events() {
        let want = match e.msg.kind() {
            "warning" | "session_configured" => "",
            "shutdown_complete" => "bye",
            _ => "sub-1",
        };
        assert_eq!(e.id, want, "{e:?}");
    }
}

#[test]
fn codex_approved_command_asks_then_begins_then_ends_with_its_output() {
    let run = codex("exec_approved.jsonl");
    assert_eq!(
        run.story(),
        codex_turn(&[
            "APPROVE exec",
            "exec_command_begin",
            "exec_command_end",
            "token_count",
            "agent_message_delta",
            "agent_message_delta",
            "agent_message",
            "token_count",
            "task_complete",
            "CLOSE",
            "shutdown_complete"
        ])
    );
    let Approval::Exec(p) = run.approvals()[0] else { panic!() };
    // The argv exactly as Codex runs it, split back from its string.
    assert_eq!(p.command, ["/bin/bash", "-lc", "touch ran.txt && echo hello-from-exec"]);
    assert_eq!(
        (p.call_id.as_str(), p.reason.as_deref()),
        ("call_exec_1", Some("mock wants to run touch ran.txt && echo hello-from-exec"))
    );
    assert!(p.unsandboxed, "an approved Codex command runs outside its sandbox");
    let EventMsg::ExecCommandEnd { exit_code, output, interrupted, .. } = run.find("exec_command_end") else {
        panic!()
    };
    assert_eq!((*exit_code, output.as_str(), *interrupted), (0, "hello-from-exec\n", false));
}

#[test]
fn codex_auto_approved_command_begins_when_it_starts() {
    let run = codex("exec_auto.jsonl");
    assert!(run.approvals().is_empty());
    let EventMsg::ExecCommandBegin { command, unsandboxed, .. } = run.find("exec_command_begin") else {
        panic!()
    };
    assert_eq!(command, &["/bin/bash", "-lc", "echo hello-auto"]);
    assert!(!unsandboxed, "it ran in Codex's read-only sandbox");
}

#[test]
fn codex_declined_command_has_no_events_and_the_turn_goes_on() {
    let run = codex("exec_declined.jsonl");
    assert!(!run.kinds().contains(&"exec_command_begin"));
    assert_eq!(run.approvals().len(), 1);
    assert!(run.kinds().contains(&"task_complete"));
}

#[test]
fn codex_cancel_answer_aborts_the_turn() {
    let run = codex("exec_cancelled.jsonl");
    assert!(!run.kinds().contains(&"exec_command_begin"));
    let EventMsg::TurnAborted { reason, .. } = run.find("turn_aborted") else { panic!() };
    assert_eq!(*reason, TurnAbortReason::Interrupted);
}

#[test]
fn codex_patch_approval_shows_the_changes_from_the_item_before_it() {
    let run = codex("patch_add.jsonl");
    let Approval::Patch(p) = run.approvals()[0] else { panic!() };
    assert_eq!(p.changes.get("hello.txt"), Some(&FileChange::add("hi from mock\n")));
    assert!(p.outside_workspace.is_empty());
    let story = run.story();
    let at = |k: &str| story.iter().position(|s| s == k).unwrap();
    assert!(at("APPROVE patch") < at("patch_apply_begin") && at("patch_apply_begin") < at("patch_apply_end"));
    let EventMsg::PatchApplyEnd { success, .. } = run.find("patch_apply_end") else { panic!() };
    assert!(success);
    let EventMsg::PatchApplyBegin { auto_approved, .. } = run.find("patch_apply_begin") else { panic!() };
    assert!(!auto_approved);

    let run = codex("patch_update.jsonl");
    let Approval::Patch(p) = run.approvals()[0] else { panic!() };
    assert_eq!(
        p.changes.get("notes.txt"),
        Some(&FileChange::update("@@ -1,2 +1,2 @@\n-old line\n+new line\n second\n", None))
    );
}

#[test]
fn codex_interrupt_during_a_command_ends_it_before_the_turn_and_cleans_the_terminals() {
    let run = codex("interrupt_running.jsonl");
    let story = run.story();
    let at = |k: &str| story.iter().position(|s| s == k).unwrap_or_else(|| panic!("{k} in {story:?}"));
    assert!(at("exec_command_begin") < at("exec_command_end") && at("exec_command_end") < at("turn_aborted"));
    let EventMsg::ExecCommandEnd { interrupted, exit_code, .. } = run.find("exec_command_end") else {
        panic!()
    };
    assert_eq!((*interrupted, *exit_code), (true, 137));
    // The clean request follows turn/completed; the late item/completed
    // (after Codex's own clean) maps to nothing.
    let cleans = run
        .outs
        .iter()
        .filter(|o| matches!(o, Output::Send(l) if l.contains("backgroundTerminals/clean")))
        .count();
    assert_eq!(cleans, 1);
    assert_eq!(run.kinds().iter().filter(|k| **k == "exec_command_end").count(), 1);
}

#[test]
fn codex_interrupt_with_a_pending_approval_withdraws_it_and_drops_the_late_answer() {
    let run = codex("interrupt_pending.jsonl");
    let story = run.story();
    let at = |k: &str| story.iter().position(|s| s == k).unwrap_or_else(|| panic!("{k} in {story:?}"));
    assert!(at("APPROVE exec") < at("WITHDRAWN") && at("WITHDRAWN") < at("turn_aborted"), "{story:?}");
    assert!(!run.kinds().contains(&"exec_command_begin"));
    assert_eq!(run.dropped_answers, 1, "the recorded late accept was dropped");
}

#[test]
fn codex_failed_command_keeps_its_exit_code_and_a_model_error_is_an_error_then_task_complete() {
    let run = codex("exit_code.jsonl");
    let EventMsg::ExecCommandEnd { exit_code, output, .. } = run.find("exec_command_end") else { panic!() };
    assert_eq!((*exit_code, output.as_str()), (3, "oops\n"));

    let run = codex("model_error.jsonl");
    assert_eq!(run.story(), codex_turn(&["error", "task_complete", "CLOSE", "shutdown_complete"]));
    let EventMsg::Error { message } = run.find("error") else { panic!() };
    assert!(message.contains("high demand"), "{message}");
}

// ---------------------------------------------------------------------------
// Claude Code

#[test]
fn claude_message_completes_with_usage_and_the_chosen_session_id() {
    let run = claude("message.jsonl", "/tmp/explore/k-message/work");
    assert_eq!(
        run.story(),
        with_turn(&["agent_message", "token_count", "task_complete", "CLOSE", "shutdown_complete"])
    );
    let EventMsg::SessionConfigured { session_id, model, approval_policy, .. } =
        run.find("session_configured")
    else {
        panic!()
    };
    assert_eq!(model, "claude-opus-5-5");
    assert_eq!(*approval_policy, deputy_protocol::ApprovalPolicy::AskUnlessReadOnly);
    // The recording did not pass our id; system/init's id wins.
    assert_eq!(session_id, "00000000-0000-4000-8000-000000000000");
    let EventMsg::TokenCount { info: Some(info) } = run.find("token_count") else { panic!() };
    assert_eq!(
        (info.last_token_usage.input_tokens, info.last_token_usage.output_tokens, info.model_context_window),
        (10, 12, Some(1_000_000))
    );
    let EventMsg::TaskComplete { last_agent_message, .. } = run.find("task_complete") else { panic!() };
    assert_eq!(last_agent_message.as_deref(), Some("Hello from the mock."));
}

#[test]
fn claude_partial_messages_are_deltas_then_the_message() {
    let run = claude("message_partial.jsonl", "/tmp/explore/k2-message-allow/work");
    assert_eq!(
        run.story(),
        with_turn(&[
            "agent_message_delta",
            "agent_message_delta",
            "agent_message",
            "token_count",
            "task_complete",
            "CLOSE",
            "shutdown_complete"
        ])
    );
}

#[test]
fn claude_approved_bash_asks_with_the_command_exactly_then_runs() {
    let run = claude("exec_approved.jsonl", "/tmp/explore/k-exec/work");
    assert_eq!(
        run.story(),
        with_turn(&[
            "APPROVE exec",
            "exec_command_begin",
            "exec_command_end",
            "agent_message",
            "token_count",
            "task_complete",
            "CLOSE",
            "shutdown_complete"
        ])
    );
    let Approval::Exec(p) = run.approvals()[0] else { panic!() };
    assert_eq!(p.command, ["bash", "-c", "touch ran.txt && echo hello-from-exec"]);
    assert_eq!(p.call_id, "toolu_mock_1");
    let EventMsg::ExecCommandEnd { exit_code, output, duration_ms, .. } = run.find("exec_command_end") else {
        panic!()
    };
    assert_eq!((*exit_code, output.as_str()), (0, "hello-from-exec"));
    assert!(*duration_ms > 0, "from the lines' timestamps");
}

#[test]
fn claude_auto_allowed_bash_begins_with_its_result() {
    let run = claude("exec_auto.jsonl", "/tmp/explore/k-auto/work");
    assert!(run.approvals().is_empty());
    let story = run.story();
    assert!(story.windows(2).any(|w| w == ["exec_command_begin", "exec_command_end"]), "{story:?}");
}

#[test]
fn claude_denied_bash_has_no_events_and_the_turn_completes() {
    let run = claude("exec_denied.jsonl", "/tmp/explore/k2-exec-deny/work");
    assert!(!run.kinds().contains(&"exec_command_begin"));
    assert!(run.kinds().contains(&"task_complete"));
}

#[test]
fn claude_abort_answer_ends_the_turn_aborted() {
    let run = claude("exec_abort.jsonl", "/tmp/explore/k2-exec-abort/work");
    assert!(!run.kinds().contains(&"exec_command_begin"));
    let EventMsg::TurnAborted { reason, .. } = run.find("turn_aborted") else { panic!() };
    assert_eq!(*reason, TurnAbortReason::Interrupted);
}

#[test]
fn claude_failed_bash_keeps_its_exit_code() {
    let run = claude("exit_code.jsonl", "/tmp/explore/k2-fail-allow/work");
    let EventMsg::ExecCommandEnd { exit_code, output, .. } = run.find("exec_command_end") else { panic!() };
    assert_eq!((*exit_code, output.as_str()), (3, "Exit code 3\noops"));
}

#[test]
fn claude_write_and_edit_approvals_show_the_change() {
    let run = claude("write.jsonl", "/tmp/explore/k-patch/work");
    let Approval::Patch(p) = run.approvals()[0] else { panic!() };
    assert_eq!(p.changes.get("hello.txt"), Some(&FileChange::add("hi from mock\n")));
    let EventMsg::PatchApplyEnd { success, stdout, .. } = run.find("patch_apply_end") else { panic!() };
    assert!(*success && stdout.starts_with("File created successfully"), "{stdout}");

    let run = claude("edit.jsonl", "/tmp/explore/k-edit/work");
    let Approval::Patch(p) = run.approvals()[0] else { panic!() };
    assert_eq!(
        p.changes.get("notes.txt"),
        Some(&FileChange::update("@@ -1,2 +1,2 @@\n-old line\n+new line\n second\n", None))
    );
}

#[test]
fn claude_interrupt_during_a_command_ends_it_interrupted_then_aborts_the_turn() {
    let run = claude("interrupt_running.jsonl", "/tmp/explore/k2-tree-allow/work");
    let story = run.story();
    let at = |k: &str| story.iter().position(|s| s == k).unwrap_or_else(|| panic!("{k} in {story:?}"));
    assert!(at("exec_command_begin") < at("exec_command_end") && at("exec_command_end") < at("turn_aborted"));
    let EventMsg::ExecCommandEnd { interrupted, exit_code, .. } = run.find("exec_command_end") else {
        panic!()
    };
    assert_eq!((*interrupted, *exit_code), (true, 137));
}

#[test]
fn claude_interrupt_with_a_pending_approval_withdraws_it() {
    let run = claude("interrupt_pending.jsonl", "/tmp/explore/k2-exec-none/work");
    let story = run.story();
    let at = |k: &str| story.iter().position(|s| s == k).unwrap_or_else(|| panic!("{k} in {story:?}"));
    assert!(at("APPROVE exec") < at("WITHDRAWN") && at("WITHDRAWN") < at("turn_aborted"), "{story:?}");
    assert!(!run.kinds().contains(&"exec_command_begin"));
}

#[test]
fn claude_approved_for_session_is_kept_by_the_mapper() {
    // Claude asked twice (its session rule does not cover a command that
    // writes a path); the mapper answered the second time itself.
    let run = claude("approved_twice.jsonl", "/tmp/explore/k2-twice-session/work");
    assert_eq!(run.approvals().len(), 1, "{:?}", run.story());
    assert_eq!(run.kinds().iter().filter(|k| **k == "exec_command_begin").count(), 2);
}

#[test]
fn claude_a_tool_it_does_not_have_maps_to_nothing() {
    let run = claude("unknown_tool.jsonl", "/tmp/explore/k-multiedit/work");
    assert_eq!(
        run.story(),
        with_turn(&["agent_message", "token_count", "task_complete", "CLOSE", "shutdown_complete"])
    );
}
