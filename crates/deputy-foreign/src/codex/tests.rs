//! The Codex mapping's edges, message by message (the whole recorded
//! conversations are replayed in `tests/replay.rs`).

use deputy_protocol::{EventMsg, Op, ReviewDecision, TurnAbortReason};
use serde_json::{Value, json};

use super::*;
use crate::test_util::{msgs, recv, sends};
use crate::{Approval, ForeignSession, Output, SubmitError};

const THREAD: &str = "01a233c5-97e1-7982-9f93-988add6bec4d";
const TURN: &str = "01a233c5-97ff-7330-8c6f-af2dd38d6bf4";

/// A session past its handshake, with a turn started (`turn/start` id 3).
fn in_turn() -> CodexSession {
    let mut s = CodexSession::new(CodexConfig::new("/w"));
    s.start();
    recv(&mut s, json!({"id": 1, "result": {"userAgent": "deputy/0.171.0"}}));
    let out = recv(
        &mut s,
        json!({"id": 2, "result": {"thread": {"id": THREAD, "turns": []}, "model": "gpt-5.5",
                "approvalPolicy": "untrusted", "sandbox": {"type": "workspaceWrite"}, "cwd": "/w"}}),
    );
    let EventMsg::SessionConfigured { approval_policy, .. } = &msgs(&out)[0] else { panic!("{out:?}") };
    assert_eq!(*approval_policy, deputy_protocol::ApprovalPolicy::AskUnlessReadOnly);
    s.submit("s1", &Op::text("hi")).unwrap();
    recv(&mut s, json!({"id": 3, "result": {"turn": {"id": TURN, "status": "inProgress", "items": []}}}));
    s
}

fn command_started(s: &mut CodexSession, id: &str, command: &str, process_id: Value) -> Vec<Output> {
    recv(
        s,
        json!({"method": "item/started", "params": {"turnId": TURN, "threadId": THREAD, "item": {
            "type": "commandExecution", "id": id, "command": command, "cwd": "/w", "processId": process_id,
            "source": "agent", "status": "inProgress", "commandActions": []}}}),
    )
}

fn command_approval(s: &mut CodexSession, request: i64, item: &str, available: Value) -> Vec<Output> {
    recv(
        s,
        json!({"method": "item/commandExecution/requestApproval", "id": request, "params": {
            "kind": "command", "threadId": THREAD, "turnId": TURN, "itemId": item, "startedAtMs": 1,
            "command": "/bin/bash -lc 'rm -rf build'", "cwd": "/w", "availableDecisions": available}}),
    )
}

#[test]
fn the_handshake_sends_initialize_with_the_experimental_api_then_initialized_and_thread_start() {
    let mut s = CodexSession::new(CodexConfig { resume: Some("t-old".into()), ..CodexConfig::new("/w") });
    let out = sends(&s.start());
    assert_eq!(
        out,
        [json!({"id": 1, "method": "initialize", "params": {
            "clientInfo": {"name": "deputy", "title": null, "version": env!("CARGO_PKG_VERSION")},
            "capabilities": {"experimentalApi": true}}})]
    );
    assert_eq!(s.submit("s1", &Op::text("hi")), Err(SubmitError::NotReady));
    let out = sends(&recv(&mut s, json!({"id": 1, "result": {}})));
    assert_eq!(
        out,
        [
            json!({"method": "initialized"}),
            json!({"id": 2, "method": "thread/resume", "params": {"threadId": "t-old", "cwd": "/w"}})
        ]
    );
    let out = recv(&mut s, json!({"id": 2, "result": {"thread": {"id": "t-old", "turns": [{}, {}]}}}));
    let EventMsg::SessionConfigured { session_id, history_len, model, .. } = &msgs(&out)[0] else { panic!() };
    assert_eq!((session_id.as_str(), *history_len, model.as_str()), ("t-old", 2, "codex"));
    assert_eq!(s.session_id(), Some("t-old"));
}

#[test]
fn a_refused_handshake_fails_the_conversation() {
    let mut s = CodexSession::new(CodexConfig::new("/w"));
    s.start();
    let out = recv(&mut s, json!({"id": 1, "error": {"code": -32600, "message": "bad client"}}));
    assert_eq!(out, [Output::Failed("codex app-server refused `initialize`: bad client".into())]);
    let mut s = CodexSession::new(CodexConfig::new("/w"));
    s.start();
    assert_eq!(s.closed(), [Output::Failed("codex app-server exited before its handshake finished".into())]);
}

#[test]
fn the_thread_settings_map_to_codex_names() {
    use deputy_protocol::{ApprovalPolicy as P, SandboxMode as M};
    assert_eq!(
        [P::AskAlways, P::AskUnlessReadOnly, P::AskToEscalate, P::NeverAsk].map(approval_policy_name),
        ["untrusted", "untrusted", "on-request", "never"]
    );
    assert_eq!(
        [M::WorkspaceWrite, M::ReadOnly, M::Off].map(sandbox_name),
        ["workspace-write", "read-only", "danger-full-access"]
    );
    let mut s = CodexSession::new(CodexConfig {
        approval_policy: Some("never".into()),
        sandbox: Some("read-only".into()),
        ..CodexConfig::new("/w")
    });
    s.start();
    let out = sends(&recv(&mut s, json!({"id": 1, "result": {}})));
    assert_eq!(out[1]["params"], json!({"cwd": "/w", "approvalPolicy": "never", "sandbox": "read-only"}));
}

#[test]
fn ops_map_to_turn_start_and_turn_interrupt_and_a_busy_turn_is_refused() {
    let mut s = CodexSession::new(CodexConfig::new("/w"));
    s.start();
    recv(&mut s, json!({"id": 1, "result": {}}));
    recv(&mut s, json!({"id": 2, "result": {"thread": {"id": THREAD}}}));
    assert_eq!(s.submit("s0", &Op::Interrupt), Ok(vec![]), "idle: nothing to interrupt");
    let out = sends(&s.submit("s1", &Op::text("hello")).unwrap());
    assert_eq!(
        out,
        [json!({"id": 3, "method": "turn/start", "params": {"threadId": THREAD,
                "input": [{"type": "text", "text": "hello", "text_elements": []}]}})]
    );
    assert!(s.turn_running());
    assert_eq!(s.submit("s2", &Op::text("again")), Err(SubmitError::TurnInProgress));
    // An interrupt before Codex named the turn waits for its id.
    assert_eq!(s.submit("s3", &Op::Interrupt), Ok(vec![]));
    let out = recv(&mut s, json!({"id": 3, "result": {"turn": {"id": TURN, "status": "inProgress"}}}));
    assert_eq!(msgs(&out), [EventMsg::TaskStarted { turn_id: TURN.into(), model_context_window: None }]);
    assert_eq!(
        sends(&out),
        [json!({"id": 4, "method": "turn/interrupt", "params": {"threadId": THREAD, "turnId": TURN}})]
    );
    // A second interrupt is not sent again.
    assert_eq!(s.submit("s4", &Op::Interrupt), Ok(vec![]));
}

#[test]
fn a_refused_turn_is_an_error_then_an_aborted_turn_that_never_started() {
    let mut s = CodexSession::new(CodexConfig::new("/w"));
    s.start();
    recv(&mut s, json!({"id": 1, "result": {}}));
    recv(&mut s, json!({"id": 2, "result": {"thread": {"id": THREAD}}}));
    s.submit("s1", &Op::text("hello")).unwrap();
    let out = recv(&mut s, json!({"id": 3, "error": {"code": -32602, "message": "input too long"}}));
    assert_eq!(
        msgs(&out),
        [
            EventMsg::Error { message: "codex refused the turn: input too long".into() },
            EventMsg::TurnAborted { turn_id: String::new(), reason: TurnAbortReason::Interrupted },
        ]
    );
    assert!(!s.turn_running());
}

#[test]
fn decisions_map_to_the_closest_codex_decision() {
    let offered =
        json!(["accept", {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": ["rm"]}}, "cancel"]);
    for (d, want) in [
        (ReviewDecision::Approved, "accept"),
        // Not offered: accepted once; the mapper keeps the grant.
        (ReviewDecision::ApprovedForSession, "accept"),
        (ReviewDecision::Denied, "decline"),
        (ReviewDecision::Abort, "cancel"),
    ] {
        let mut s = in_turn();
        command_started(&mut s, "c1", "/bin/bash -lc 'rm -rf build'", Value::Null);
        command_approval(&mut s, 0, "c1", offered.clone());
        let out = s.answer("c1", d);
        assert_eq!(sends(&out), [json!({"id": 0, "result": {"decision": want}})], "{d:?}");
        assert_eq!(msgs(&out).len(), usize::from(d.is_approved()), "a begin only when approved: {out:?}");
    }
    // Offered: `acceptForSession` is Codex's own grant.
    let mut s = in_turn();
    command_started(&mut s, "c1", "/bin/bash -lc 'rm -rf build'", Value::Null);
    command_approval(&mut s, 0, "c1", json!(["accept", "acceptForSession", "decline", "cancel"]));
    let out = s.answer("c1", ReviewDecision::ApprovedForSession);
    assert_eq!(sends(&out)[0]["result"]["decision"], "acceptForSession");
    // A key that is not pending maps to nothing.
    assert!(s.answer("c1", ReviewDecision::Approved).is_empty());
    assert!(s.answer("nope", ReviewDecision::Approved).is_empty());
}

#[test]
fn approved_for_session_answers_the_same_argv_without_asking_again() {
    let mut s = in_turn();
    command_started(&mut s, "c1", "/bin/bash -lc 'rm -rf build'", Value::Null);
    let out = command_approval(&mut s, 0, "c1", json!(["accept", "cancel"]));
    let [Output::Approve(Approval::Exec(p))] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(p.command, ["/bin/bash", "-lc", "rm -rf build"]);
    s.answer("c1", ReviewDecision::ApprovedForSession);
    command_started(&mut s, "c2", "/bin/bash -lc 'rm -rf build'", Value::Null);
    let out = command_approval(&mut s, 1, "c2", json!(["accept", "cancel"]));
    assert!(!out.iter().any(|o| matches!(o, Output::Approve(_))), "not asked again: {out:?}");
    assert_eq!(sends(&out), [json!({"id": 1, "result": {"decision": "accept"}})]);
    assert!(
        matches!(&msgs(&out)[..], [EventMsg::ExecCommandBegin { call_id, unsandboxed: true, .. }] if call_id == "c2")
    );
    // Another argv is asked.
    command_started(&mut s, "c3", "/bin/bash -lc 'rm -rf dist'", Value::Null);
    let out = recv(
        &mut s,
        json!({"method": "item/commandExecution/requestApproval", "id": 2, "params": {
            "threadId": THREAD, "turnId": TURN, "itemId": "c3", "command": "/bin/bash -lc 'rm -rf dist'"}}),
    );
    assert!(matches!(out.as_slice(), [Output::Approve(_)]));
}

#[test]
fn output_deltas_stream_between_begin_and_end_and_feed_an_interrupted_end() {
    let mut s = in_turn();
    let out = command_started(&mut s, "c1", "sleep 30", json!("123"));
    assert!(matches!(&msgs(&out)[..], [EventMsg::ExecCommandBegin { unsandboxed: false, .. }]));
    let out = recv(
        &mut s,
        json!({"method": "item/commandExecution/outputDelta", "params": {"threadId": THREAD, "turnId": TURN, "itemId": "c1", "delta": "tick\n"}}),
    );
    assert!(matches!(&msgs(&out)[..], [EventMsg::ExecCommandOutputDelta { chunk, .. }] if chunk == "tick\n"));
    let out = recv(
        &mut s,
        json!({"method": "turn/completed", "params": {"threadId": THREAD, "turn": {"id": TURN, "status": "interrupted"}}}),
    );
    let m = msgs(&out);
    assert!(
        matches!(&m[0], EventMsg::ExecCommandEnd { interrupted: true, exit_code: 137, output, .. } if output == "tick\n"),
        "{m:?}"
    );
    assert_eq!(m[1], EventMsg::TurnAborted { turn_id: TURN.into(), reason: TurnAbortReason::Interrupted });
    assert_eq!(
        sends(&out),
        [json!({"id": 4, "method": "thread/backgroundTerminals/clean", "params": {"threadId": THREAD}})]
    );
    // Codex's own report after the clean is dropped.
    let late = recv(
        &mut s,
        json!({"method": "item/completed", "params": {"turnId": TURN, "item": {"type": "commandExecution", "id": "c1",
            "command": "sleep 30", "cwd": "/w", "status": "failed", "exitCode": -1}}}),
    );
    assert!(late.is_empty(), "{late:?}");
}

#[test]
fn shutdown_interrupts_the_turn_and_closes_stdin_when_it_ended() {
    let mut s = in_turn();
    let out = s.submit("bye", &Op::Shutdown).unwrap();
    assert_eq!(
        sends(&out),
        [json!({"id": 4, "method": "turn/interrupt", "params": {"threadId": THREAD, "turnId": TURN}})]
    );
    assert_eq!(s.submit("x", &Op::text("more")), Err(SubmitError::ShuttingDown));
    let out = recv(
        &mut s,
        json!({"method": "turn/completed", "params": {"threadId": THREAD, "turn": {"id": TURN, "status": "interrupted"}}}),
    );
    assert_eq!(
        msgs(&out),
        [EventMsg::TurnAborted { turn_id: TURN.into(), reason: TurnAbortReason::Shutdown }]
    );
    assert_eq!(out.last(), Some(&Output::CloseInput));
    assert_eq!(msgs(&s.closed()), [EventMsg::ShutdownComplete]);
}

#[test]
fn an_agent_that_dies_mid_turn_ends_everything_it_left_open() {
    let mut s = in_turn();
    let mut all = command_started(&mut s, "c1", "sleep 30", json!("123"));
    command_started(&mut s, "c2", "rm -rf /", Value::Null);
    command_approval(&mut s, 0, "c2", Value::Null);
    let out = s.closed();
    all.extend(out.clone());
    assert_eq!(out[0], Output::Withdrawn("c2".into()));
    let m = msgs(&out);
    assert!(matches!(&m[0], EventMsg::ExecCommandEnd { call_id, interrupted: true, .. } if call_id == "c1"));
    assert_eq!(m[1], EventMsg::Error { message: "codex app-server exited during the turn".into() });
    assert_eq!(m[2], EventMsg::TurnAborted { turn_id: TURN.into(), reason: TurnAbortReason::Interrupted });
    crate::invariants::check(&all).unwrap();
}

#[test]
fn requests_deputy_cannot_answer_get_errors_and_write_stdin_is_a_generic_approval() {
    let mut s = in_turn();
    let out = recv(&mut s, json!({"method": "item/tool/requestUserInput", "id": 7, "params": {}}));
    assert_eq!(
        sends(&out),
        [
            json!({"id": 7, "error": {"code": -32601, "message": "Deputy does not answer `item/tool/requestUserInput`"}})
        ]
    );
    let out =
        recv(&mut s, json!({"method": "item/fileChange/requestApproval", "id": 8, "params": {"itemId": 3}}));
    assert_eq!(sends(&out)[0]["error"]["code"], -32602);
    let out = recv(
        &mut s,
        json!({"method": "item/commandExecution/requestApproval", "id": 9, "params": {
            "kind": "writeStdin", "threadId": THREAD, "turnId": TURN, "itemId": "c9", "reason": "type y"}}),
    );
    let [Output::Approve(Approval::Other(o))] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!((o.tool.as_str(), o.reason.as_deref()), ("write_stdin", Some("type y")));
    assert_eq!(
        sends(&s.answer("c9", ReviewDecision::Denied)),
        [json!({"id": 9, "result": {"decision": "decline"}})]
    );
}

#[test]
fn a_patch_outside_the_workspace_says_so_and_is_never_granted_for_the_session() {
    let mut s = in_turn();
    recv(
        &mut s,
        json!({"method": "item/started", "params": {"turnId": TURN, "item": {"type": "fileChange", "id": "p1",
            "status": "inProgress", "changes": [
                {"path": "/w/a.txt", "kind": {"type": "add"}, "diff": "a\n"},
                {"path": "/notes/todo.md", "kind": {"type": "update", "move_path": null}, "diff": "@@ -1 +1 @@\n-x\n+y\n"}]}}}),
    );
    let out = recv(
        &mut s,
        json!({"method": "item/fileChange/requestApproval", "id": 0, "params": {"threadId": THREAD, "turnId": TURN, "itemId": "p1"}}),
    );
    let [Output::Approve(Approval::Patch(p))] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(p.changes.keys().collect::<Vec<_>>(), ["/notes/todo.md", "a.txt"]);
    assert_eq!(p.outside_workspace, [std::path::PathBuf::from("/notes/todo.md")]);
    assert_eq!(p.grant_root.as_deref(), Some(std::path::Path::new("/notes")));
    let out = s.answer("p1", ReviewDecision::ApprovedForSession);
    assert_eq!(sends(&out)[0]["result"]["decision"], "acceptForSession");
    assert!(matches!(&msgs(&out)[..], [EventMsg::PatchApplyBegin { auto_approved: false, .. }]));
}

#[test]
fn warnings_errors_and_reasoning_map_to_their_events() {
    let mut s = in_turn();
    let out = recv(
        &mut s,
        json!({"method": "error", "params": {"error": {"message": "slow down"}, "willRetry": true, "turnId": TURN}}),
    );
    assert_eq!(msgs(&out), [EventMsg::StreamError { message: "slow down".into() }]);
    let out = recv(
        &mut s,
        json!({"method": "deprecationNotice", "params": {"summary": "old", "details": "use new"}}),
    );
    assert_eq!(msgs(&out), [EventMsg::Warning { message: "old: use new".into() }]);
    let out = recv(
        &mut s,
        json!({"method": "item/reasoning/summaryTextDelta", "params": {"turnId": TURN, "itemId": "r", "delta": "hm", "summaryIndex": 0}}),
    );
    assert_eq!(msgs(&out), [EventMsg::AgentReasoningDelta { delta: "hm".into() }]);
    let out = recv(
        &mut s,
        json!({"method": "item/completed", "params": {"turnId": TURN, "item": {"type": "reasoning", "id": "r", "summary": ["hm"], "content": []}}}),
    );
    assert_eq!(msgs(&out), [EventMsg::AgentReasoning { text: "hm".into() }]);
    // A failed turn whose error was not reported yet reports it.
    let out = recv(
        &mut s,
        json!({"method": "turn/completed", "params": {"turn": {"id": TURN, "status": "failed", "error": {"message": "boom"}}}}),
    );
    assert_eq!(
        msgs(&out),
        [
            EventMsg::Error { message: "boom".into() },
            EventMsg::TaskComplete { turn_id: TURN.into(), last_agent_message: None }
        ]
    );
    // Malformed lines are errors and change nothing.
    assert!(s.receive("{not json").is_err());
    assert!(s.receive(r#"{"method":"item/started","params":{"item":7}}"#).unwrap().is_empty());
}

#[test]
fn command_strings_split_back_into_the_argv_codex_runs() {
    assert_eq!(
        map::split_command("/bin/bash -lc \"sh -c 'sleep 30; echo done'\""),
        ["/bin/bash", "-lc", "sh -c 'sleep 30; echo done'"]
    );
    assert_eq!(map::split_command("echo 'unbalanced"), ["echo 'unbalanced"]);
}
