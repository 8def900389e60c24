//! The Claude Code mapping's edges, message by message (the whole recorded
//! conversations are replayed in `tests/replay.rs`).

use std::sync::Arc;

use deputy_protocol::{EventMsg, FileChange, Op, ReviewDecision, TurnAbortReason};
use serde_json::{Value, json};

use super::*;
use crate::test_util::{msgs, recv, sends};
use crate::{Approval, ForeignSession, Output, SubmitError};

const SESSION: &str = "3f0c7d6e-1111-4222-8333-444455556666";

fn config() -> ClaudeConfig {
    let mut c = ClaudeConfig::new("/w", SESSION);
    c.read_file = Some(FileReader(Arc::new(|p: &std::path::Path| {
        (p == std::path::Path::new("/w/a.txt")).then(|| "one\ntwo\n".to_owned())
    })));
    c
}

/// A session past its handshake with a turn running.
fn in_turn() -> ClaudeSession {
    let mut s = ClaudeSession::new(config());
    s.start();
    recv(
        &mut s,
        json!({"type": "control_response", "response": {"subtype": "success", "request_id": "deputy_1", "response": {
            "models": [{"value": "default", "resolvedModel": "claude-opus-5-5"}], "current_permission_mode": "default"}}}),
    );
    s.submit("s1", &Op::text("hi")).unwrap();
    s
}

fn tool_use(s: &mut ClaudeSession, id: &str, name: &str, input: Value) -> Vec<Output> {
    recv(
        s,
        json!({"type": "assistant", "message": {"id": "m", "content": [{"type": "tool_use", "id": id, "name": name, "input": input}]},
               "parent_tool_use_id": null, "timestamp": "2026-12-01T22:42:51.319Z"}),
    )
}

fn can_use_tool(s: &mut ClaudeSession, request: &str, id: &str, name: &str, input: Value) -> Vec<Output> {
    recv(
        s,
        json!({"type": "control_request", "request_id": request, "request": {
            "subtype": "can_use_tool", "tool_name": name, "input": input, "tool_use_id": id, "description": "why"}}),
    )
}

fn result(s: &mut ClaudeSession, v: Value) -> Vec<Output> {
    let mut r = json!({"type": "result", "subtype": "success", "is_error": false, "result": "ok", "session_id": SESSION,
                       "usage": {"input_tokens": 5, "cache_read_input_tokens": 2, "output_tokens": 3}});
    for (k, val) in v.as_object().unwrap() {
        r[k] = val.clone();
    }
    recv(s, r)
}

#[test]
fn the_launch_arguments_carry_the_protocol_flags_and_the_session() {
    let c = ClaudeConfig::new("/w", SESSION);
    assert_eq!(
        c.launch_args(),
        [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-prompt-tool",
            "stdio",
            "--session-id",
            SESSION,
            "--include-partial-messages"
        ]
    );
    let c = ClaudeConfig { resume: true, partial_messages: false, ..c };
    assert_eq!(c.launch_args()[8..], ["--resume", SESSION]);
}

#[test]
fn the_handshake_configures_the_session_before_any_message() {
    let mut s = ClaudeSession::new(config());
    assert_eq!(
        sends(&s.start()),
        [
            json!({"type": "control_request", "request_id": "deputy_1", "request": {"subtype": "initialize", "hooks": null}})
        ]
    );
    assert_eq!(s.submit("s1", &Op::text("hi")), Err(SubmitError::NotReady));
    let out = recv(
        &mut s,
        json!({"type": "control_response", "response": {"subtype": "success", "request_id": "deputy_1", "response": {
            "models": [{"value": "sonnet", "resolvedModel": "claude-sonnet"}], "current_permission_mode": "bypassPermissions",
            "sandbox_enabled": true}}}),
    );
    let [EventMsg::SessionConfigured { session_id, model, approval_policy, cwd, .. }] = &msgs(&out)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!((session_id.as_str(), model.as_str()), (SESSION, "claude-sonnet"));
    assert_eq!(*approval_policy, deputy_protocol::ApprovalPolicy::NeverAsk);
    assert_eq!(cwd, std::path::Path::new("/w"));
    let out = s.submit("s1", &Op::text("hi")).unwrap();
    assert_eq!(
        sends(&out),
        [
            json!({"type": "user", "session_id": "", "message": {"role": "user", "content": [{"type": "text", "text": "hi"}]}, "parent_tool_use_id": null})
        ]
    );
    assert_eq!(msgs(&out), [EventMsg::TaskStarted { turn_id: "turn-1".into(), model_context_window: None }]);
    assert_eq!(s.submit("s2", &Op::text("more")), Err(SubmitError::TurnInProgress));
    // A sandboxed CLI runs its commands sandboxed.
    tool_use(&mut s, "t1", "Bash", json!({"command": "make"}));
    let out = can_use_tool(&mut s, "r1", "t1", "Bash", json!({"command": "make"}));
    let [Output::Approve(Approval::Exec(p))] = &out[..] else { panic!() };
    assert!(!p.unsandboxed);

    let mut s = ClaudeSession::new(config());
    s.start();
    let out = recv(
        &mut s,
        json!({"type": "control_response", "response": {"subtype": "error", "request_id": "deputy_1", "error": "bad"}}),
    );
    assert_eq!(out, [Output::Failed("claude refused `initialize`: bad".into())]);
}

#[test]
fn decisions_map_to_allow_deny_and_deny_with_interrupt() {
    let input = json!({"command": "rm -rf build", "description": "clean"});
    for (d, want) in [
        (ReviewDecision::Approved, json!({"behavior": "allow", "updatedInput": input})),
        (ReviewDecision::ApprovedForSession, json!({"behavior": "allow", "updatedInput": input})),
        (
            ReviewDecision::Denied,
            json!({"behavior": "deny", "message": "The user denied this tool call (through Deputy)."}),
        ),
        (
            ReviewDecision::Abort,
            json!({"behavior": "deny", "message": "The user denied this tool call (through Deputy).", "interrupt": true}),
        ),
    ] {
        let mut s = in_turn();
        tool_use(&mut s, "t1", "Bash", input.clone());
        let out = can_use_tool(&mut s, "r1", "t1", "Bash", input.clone());
        let [Output::Approve(Approval::Exec(p))] = &out[..] else { panic!("{out:?}") };
        assert_eq!(p.command, ["bash", "-c", "rm -rf build"]);
        assert_eq!(p.reason.as_deref(), Some("why"));
        assert!(p.unsandboxed);
        let out = s.answer("t1", d);
        assert_eq!(
            sends(&out)[0]["response"],
            json!({"subtype": "success", "request_id": "r1", "response": want}),
            "{d:?}"
        );
        assert_eq!(msgs(&out).len(), usize::from(d.is_approved()));
    }
}

#[test]
fn an_abort_answer_turns_the_error_result_into_an_aborted_turn() {
    let mut s = in_turn();
    tool_use(&mut s, "t1", "Bash", json!({"command": "x"}));
    can_use_tool(&mut s, "r1", "t1", "Bash", json!({"command": "x"}));
    s.answer("t1", ReviewDecision::Abort);
    let out = result(
        &mut s,
        json!({"subtype": "error_during_execution", "is_error": true, "terminal_reason": "tool_use"}),
    );
    assert!(
        matches!(msgs(&out).last(), Some(EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. })),
        "{out:?}"
    );
}

#[test]
fn other_errors_are_an_error_then_task_complete() {
    let mut s = in_turn();
    let out =
        result(&mut s, json!({"subtype": "error_max_turns", "is_error": true, "errors": ["too many turns"]}));
    let m = msgs(&out);
    assert!(
        matches!(&m[0], EventMsg::TokenCount { info: Some(i) } if i.last_token_usage.input_tokens == 7 && i.last_token_usage.cached_input_tokens == 2)
    );
    assert_eq!(m[1], EventMsg::Error { message: "too many turns".into() });
    assert!(matches!(&m[2], EventMsg::TaskComplete { .. }));
    // Usage adds up over turns.
    s.submit("s2", &Op::text("again")).unwrap();
    let out = result(&mut s, json!({}));
    let EventMsg::TokenCount { info: Some(i) } = &msgs(&out)[0] else { panic!() };
    assert_eq!((i.total_token_usage.total_tokens, i.last_token_usage.total_tokens), (20, 10));
}

#[test]
fn edits_are_patch_approvals_with_the_diff_and_other_tools_generic_ones() {
    let mut s = in_turn();
    let edit = json!({"file_path": "/w/a.txt", "old_string": "two", "new_string": "2"});
    tool_use(&mut s, "t1", "Edit", edit.clone());
    let out = can_use_tool(&mut s, "r1", "t1", "Edit", edit);
    let [Output::Approve(Approval::Patch(p))] = &out[..] else { panic!("{out:?}") };
    assert_eq!(p.changes.get("a.txt"), Some(&FileChange::update("@@ -1,2 +1,2 @@\n one\n-two\n+2\n", None)));
    assert!(p.outside_workspace.is_empty());
    let out = s.answer("t1", ReviewDecision::Approved);
    assert!(matches!(&msgs(&out)[..], [EventMsg::PatchApplyBegin { auto_approved: false, .. }]));
    let out = recv(
        &mut s,
        json!({"type": "user", "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Edit failed: not found", "is_error": true}]}}),
    );
    assert!(
        matches!(&msgs(&out)[..], [EventMsg::PatchApplyEnd { success: false, stderr, .. }] if stderr == "Edit failed: not found")
    );

    let write = json!({"file_path": "/etc/motd", "content": "hi\n"});
    let out = can_use_tool(&mut s, "r2", "t2", "Write", write);
    let [Output::Approve(Approval::Patch(p))] = &out[..] else { panic!("{out:?}") };
    assert_eq!(p.changes.get("/etc/motd"), Some(&FileChange::add("hi\n")));
    assert_eq!(p.outside_workspace, [std::path::PathBuf::from("/etc/motd")]);
    assert_eq!(p.grant_root.as_deref(), Some(std::path::Path::new("/etc")));

    let out = can_use_tool(&mut s, "r3", "t3", "WebFetch", json!({"url": "https://example.com"}));
    let [Output::Approve(Approval::Other(o))] = &out[..] else { panic!("{out:?}") };
    assert_eq!((o.tool.as_str(), o.input["url"].as_str()), ("WebFetch", Some("https://example.com")));
    assert!(msgs(&s.answer("t3", ReviewDecision::Approved)).is_empty(), "no events for a generic tool");
}

#[test]
fn an_unasked_call_begins_on_the_first_sign_that_it_runs() {
    let mut s = in_turn();
    assert!(
        msgs(&tool_use(&mut s, "t1", "Bash", json!({"command": "ls"}))).is_empty(),
        "not yet: an approval may follow"
    );
    let out = recv(&mut s, json!({"type": "tool_progress", "tool_use_id": "t1", "elapsed_time_seconds": 30}));
    assert!(matches!(&msgs(&out)[..], [EventMsg::ExecCommandBegin { call_id, .. }] if call_id == "t1"));
    let out = recv(
        &mut s,
        json!({"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a\nb", "is_error": false}]},
               "tool_use_result": {"stdout": "a", "stderr": "b"}, "timestamp": "2026-12-01T22:42:52.319Z"}),
    );
    assert!(
        matches!(&msgs(&out)[..], [EventMsg::ExecCommandEnd { exit_code: 0, output, duration_ms: 1000, .. }] if output == "a\nb")
    );
}

#[test]
fn shutdown_interrupts_the_turn_first_because_claude_finishes_it_on_end_of_input() {
    let mut s = in_turn();
    let out = s.submit("bye", &Op::Shutdown).unwrap();
    assert_eq!(
        sends(&out),
        [json!({"type": "control_request", "request_id": "deputy_2", "request": {"subtype": "interrupt"}})]
    );
    let out = result(
        &mut s,
        json!({"subtype": "error_during_execution", "is_error": true, "terminal_reason": "aborted_tools"}),
    );
    assert!(matches!(
        msgs(&out).last(),
        Some(EventMsg::TurnAborted { reason: TurnAbortReason::Shutdown, .. })
    ));
    assert_eq!(out.last(), Some(&Output::CloseInput));
    assert_eq!(msgs(&s.closed()), [EventMsg::ShutdownComplete]);
    // Idle: straight to closing stdin.
    let mut s = in_turn();
    result(&mut s, json!({}));
    assert_eq!(s.submit("bye", &Op::Shutdown), Ok(vec![Output::CloseInput]));
}

#[test]
fn requests_deputy_cannot_answer_get_errors_and_cancels_withdraw() {
    let mut s = in_turn();
    let out = recv(
        &mut s,
        json!({"type": "control_request", "request_id": "h1", "request": {"subtype": "hook_callback"}}),
    );
    assert_eq!(
        sends(&out),
        [
            json!({"type": "control_response", "response": {"subtype": "error", "request_id": "h1", "error": "Deputy does not answer `hook_callback` requests"}})
        ]
    );
    let out = recv(
        &mut s,
        json!({"type": "control_request", "request_id": "h2", "request": {"subtype": "can_use_tool"}}),
    );
    assert_eq!(sends(&out)[0]["response"]["subtype"], "error");
    can_use_tool(&mut s, "r1", "t1", "Bash", json!({"command": "x"}));
    assert_eq!(
        recv(&mut s, json!({"type": "control_cancel_request", "request_id": "r1"})),
        [Output::Withdrawn("t1".into())]
    );
    assert!(s.answer("t1", ReviewDecision::Approved).is_empty(), "a late answer is dropped");
    assert!(recv(&mut s, json!({"type": "control_cancel_request", "request_id": "r1"})).is_empty());
    assert!(s.receive("nope").is_err());
}

#[test]
fn a_sub_agents_texts_are_not_the_agents_messages() {
    let mut s = in_turn();
    let out = recv(
        &mut s,
        json!({"type": "assistant", "message": {"content": [{"type": "text", "text": "inner"}]}, "parent_tool_use_id": "task_1"}),
    );
    assert!(out.is_empty());
    let out = recv(
        &mut s,
        json!({"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hm"}}, "parent_tool_use_id": null}),
    );
    assert_eq!(msgs(&out), [EventMsg::AgentReasoningDelta { delta: "hm".into() }]);
}

#[test]
fn an_agent_that_dies_mid_turn_ends_everything_it_left_open() {
    let mut s = in_turn();
    tool_use(&mut s, "t1", "Bash", json!({"command": "sleep 30"}));
    can_use_tool(&mut s, "r1", "t1", "Bash", json!({"command": "sleep 30"}));
    let mut all = s.answer("t1", ReviewDecision::Approved);
    can_use_tool(&mut s, "r2", "t2", "Bash", json!({"command": "rm x"}));
    let out = s.closed();
    all.extend(out.clone());
    assert_eq!(out[0], Output::Withdrawn("t2".into()));
    let m = msgs(&out);
    assert!(matches!(&m[0], EventMsg::ExecCommandEnd { call_id, interrupted: true, .. } if call_id == "t1"));
    assert_eq!(m[1], EventMsg::Error { message: "claude exited during the turn".into() });
    assert!(matches!(&m[2], EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. }));
    crate::invariants::check(&all).unwrap();
}
