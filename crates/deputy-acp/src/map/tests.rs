//! The mapping, message by message, compared with the exact JSON it sends.

use std::path::Path;

use deputy_protocol::{TokenUsage, TokenUsageInfo, TurnAbortReason};
use serde_json::json;

use super::*;
use crate::wire::SessionNotification;

fn wire(u: &SessionUpdate) -> Value {
    serde_json::to_value(SessionNotification { session_id: "s1", update: u }).unwrap()["update"].clone()
}

fn wires(us: &[SessionUpdate]) -> Vec<Value> {
    us.iter().map(wire).collect()
}

#[test]
fn a_streamed_message_is_sent_once_and_an_unstreamed_one_whole() {
    let mut m = TurnMapper::new("/w");
    let d = m.event(&EventMsg::AgentMessageDelta { delta: "hel".into() });
    assert_eq!(
        wires(&d),
        [json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hel"}})]
    );
    assert!(m.event(&EventMsg::AgentMessage { message: "hello".into() }).is_empty());
    // The next message of the turn came without deltas: sent whole.
    let d = m.event(&EventMsg::AgentMessage { message: "bye".into() });
    assert_eq!(wires(&d)[0]["content"]["text"], "bye");
    let d = m.event(&EventMsg::AgentReasoning { text: "hmm".into() });
    assert_eq!(
        wires(&d),
        [json!({"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hmm"}})]
    );
}

#[test]
fn an_approved_command_is_announced_then_runs_then_completes_with_its_output() {
    let mut m = TurnMapper::new("/w");
    let argv: Vec<String> = vec!["echo".into(), "hi there".into()];
    let call = exec_tool_call("c1", &argv, Path::new("/w"), ToolCallStatus::Pending);
    let announced = m.announce(call.clone());
    assert_eq!(
        wire(&announced),
        json!({"sessionUpdate": "tool_call", "toolCallId": "c1", "title": "echo 'hi there'", "kind": "execute",
               "status": "pending", "rawInput": {"command": ["echo", "hi there"], "cwd": "/w"}})
    );
    let req = serde_json::to_value(ToolCallUpdate::from(&call)).unwrap();
    assert_eq!(req["toolCallId"], "c1");
    assert_eq!(req["status"], "pending");
    let begin = m.event(&EventMsg::ExecCommandBegin {
        call_id: "c1".into(),
        turn_id: "t".into(),
        command: argv.clone(),
        cwd: "/w".into(),
        unsandboxed: false,
    });
    assert_eq!(
        wires(&begin),
        [json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "in_progress"})]
    );
    let end = m.event(&EventMsg::ExecCommandEnd {
        call_id: "c1".into(),
        turn_id: "t".into(),
        exit_code: 0,
        duration_ms: 3,
        output: "hi there\n".into(),
        truncated: false,
        timed_out: false,
        interrupted: false,
    });
    assert_eq!(
        wires(&end),
        [json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "completed",
                "content": [{"type": "content", "content": {"type": "text", "text": "hi there\n"}}],
                "rawOutput": {"exit_code": 0, "duration_ms": 3, "truncated": false, "timed_out": false, "interrupted": false}})]
    );
    // Nothing is left to close at the turn's end.
    assert!(m.event(&EventMsg::TaskComplete { turn_id: "t".into(), last_agent_message: None }).is_empty());
}

#[test]
fn an_auto_approved_command_is_announced_in_progress_and_a_failing_one_ends_failed() {
    let mut m = TurnMapper::new("/w");
    let begin = m.event(&EventMsg::ExecCommandBegin {
        call_id: "c2".into(),
        turn_id: "t".into(),
        command: vec!["ls".into()],
        cwd: "/w".into(),
        unsandboxed: false,
    });
    assert_eq!(wire(&begin[0])["sessionUpdate"], "tool_call");
    assert_eq!(wire(&begin[0])["status"], "in_progress");
    let end = m.event(&EventMsg::ExecCommandEnd {
        call_id: "c2".into(),
        turn_id: "t".into(),
        exit_code: 137,
        duration_ms: 3,
        output: String::new(),
        truncated: false,
        timed_out: false,
        interrupted: true,
    });
    assert_eq!(wire(&end[0])["status"], "failed");
    assert!(wire(&end[0])["content"][0]["content"]["text"].as_str().unwrap().contains("cancelled"));
}

#[test]
fn a_rejected_or_withdrawn_call_ends_failed_exactly_once() {
    let mut m = TurnMapper::new("/w");
    m.announce(exec_tool_call("a", &["rm".into()], Path::new("/w"), ToolCallStatus::Pending));
    m.announce(exec_tool_call("b", &["rm".into()], Path::new("/w"), ToolCallStatus::Pending));
    let failed = m.fail("a", "rejected").unwrap();
    assert_eq!(
        wire(&failed),
        json!({"sessionUpdate": "tool_call_update", "toolCallId": "a", "status": "failed",
               "content": [{"type": "content", "content": {"type": "text", "text": "rejected"}}]})
    );
    assert!(m.fail("a", "again").is_none());
    let end = m.event(&EventMsg::TurnAborted { turn_id: "t".into(), reason: TurnAbortReason::Interrupted });
    let end = wires(&end);
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["toolCallId"], "b");
    assert_eq!(end[0]["status"], "failed");
}

#[test]
fn permission_options_and_answers_map_onto_decisions() {
    let kinds: Vec<Value> =
        permission_options().iter().map(|o| serde_json::to_value(o).unwrap()["kind"].clone()).collect();
    assert_eq!(kinds, ["allow_once", "allow_always", "reject_once", "reject_always"]);
    let sel = |id: &str| permission(&RequestPermissionOutcome::Selected { option_id: id.into() });
    assert_eq!(sel("approved"), Permission::Decision(ReviewDecision::Approved));
    assert_eq!(sel("approved_for_session"), Permission::Decision(ReviewDecision::ApprovedForSession));
    assert_eq!(sel("denied"), Permission::Decision(ReviewDecision::Denied));
    assert_eq!(sel("denied_for_session"), Permission::DeniedForSession);
    assert_eq!(sel("denied_for_session").decision(), ReviewDecision::Denied);
    // Fail closed on anything not offered.
    assert_eq!(sel("yes please"), Permission::Decision(ReviewDecision::Denied));
    assert_eq!(permission(&RequestPermissionOutcome::Cancelled), Permission::Decision(ReviewDecision::Abort));
    let parsed: crate::wire::RequestPermissionResponse =
        serde_json::from_value(json!({"outcome": {"outcome": "selected", "optionId": "approved"}})).unwrap();
    assert_eq!(permission(&parsed.outcome), Permission::Decision(ReviewDecision::Approved));
    let parsed: crate::wire::RequestPermissionResponse =
        serde_json::from_value(json!({"outcome": {"outcome": "cancelled"}, "_meta": {}})).unwrap();
    assert_eq!(parsed.outcome, RequestPermissionOutcome::Cancelled);
}

#[test]
fn stop_reasons() {
    let done = EventMsg::TaskComplete { turn_id: "t".into(), last_agent_message: None };
    assert_eq!(stop_reason(&done, false), Some(StopReason::EndTurn));
    assert_eq!(stop_reason(&done, true), Some(StopReason::MaxTurnRequests));
    let aborted = EventMsg::TurnAborted { turn_id: "t".into(), reason: TurnAbortReason::Shutdown };
    assert_eq!(stop_reason(&aborted, false), Some(StopReason::Cancelled));
    assert_eq!(stop_reason(&EventMsg::AgentMessage { message: "x".into() }, false), None);
    assert_eq!(
        serde_json::to_value(crate::wire::PromptResponse { stop_reason: StopReason::MaxTurnRequests })
            .unwrap(),
        json!({"stopReason": "max_turn_requests"})
    );
}

#[test]
fn prompt_blocks_become_text_and_unsupported_kinds_are_named() {
    let items = prompt_text(&[
        json!({"type": "text", "text": "look at this"}),
        json!({"type": "resource", "resource": {"uri": "file:///w/a.rs", "text": "fn main() {}", "mimeType": "text/x-rust"}}),
        json!({"type": "resource_link", "uri": "file:///w/b.rs", "name": "b.rs"}),
    ])
    .unwrap();
    let [InputItem::Text { text }] = items.as_slice() else { panic!("{items:?}") };
    assert_eq!(
        text,
        "look at this\nContext from file:///w/a.rs:\n```\nfn main() {}\n```\n[resource: b.rs] file:///w/b.rs"
    );
    let e = prompt_text(&[
        json!({"type": "text", "text": "x"}),
        json!({"type": "image", "data": "", "mimeType": "image/png"}),
    ])
    .unwrap_err();
    assert!(e.0.contains("`image`"), "{e}");
    let e = prompt_text(&[json!({"type": "resource", "resource": {"uri": "file:///x", "blob": "AA=="}})])
        .unwrap_err();
    assert!(e.0.contains("blob"), "{e}");
    assert!(prompt_text(&[]).is_err());
}

#[test]
fn patches_show_diffs_and_their_kind() {
    let mut changes = BTreeMap::new();
    changes.insert("new.txt".to_owned(), FileChange::add("hello\n"));
    let diffs = vec![FileDiff { path: "/w/new.txt".into(), old_text: None, new_text: "hello\n".into() }];
    let call = patch_tool_call("p1", &changes, Some(&diffs), Path::new("/w"), ToolCallStatus::Pending);
    let v = serde_json::to_value(&call).unwrap();
    assert_eq!(v["kind"], "edit");
    assert_eq!(v["title"], "Edit new.txt");
    assert_eq!(v["content"], json!([{"type": "diff", "path": "/w/new.txt", "newText": "hello\n"}]));
    assert_eq!(v["locations"], json!([{"path": "/w/new.txt"}]));

    let mut del = BTreeMap::new();
    del.insert("old.txt".to_owned(), FileChange::delete("bye\n"));
    let v = serde_json::to_value(patch_tool_call("p2", &del, None, Path::new("/w"), ToolCallStatus::Pending))
        .unwrap();
    assert_eq!(v["kind"], "delete");
    assert_eq!(
        v["content"],
        json!([{"type": "diff", "path": "/w/old.txt", "oldText": "bye\n", "newText": ""}])
    );

    let mut mv = BTreeMap::new();
    mv.insert("a.txt".to_owned(), FileChange::update("@@\n-a\n+b\n", Some("b.txt".into())));
    let v = serde_json::to_value(patch_tool_call("p3", &mv, None, Path::new("/w"), ToolCallStatus::Pending))
        .unwrap();
    assert_eq!(v["kind"], "move");
    assert_eq!(v["locations"], json!([{"path": "/w/a.txt"}, {"path": "/w/b.txt"}]));

    // An auto-approved patch is announced at its begin event, with the noted diffs.
    let mut m = TurnMapper::new("/w");
    m.note_patch("p4", diffs.clone());
    let begin = m.event(&EventMsg::PatchApplyBegin {
        call_id: "p4".into(),
        turn_id: "t".into(),
        auto_approved: true,
        changes: changes.clone(),
    });
    assert_eq!(wire(&begin[0])["sessionUpdate"], "tool_call");
    assert_eq!(wire(&begin[0])["content"][0]["type"], "diff");
    let end = m.event(&EventMsg::PatchApplyEnd {
        call_id: "p4".into(),
        turn_id: "t".into(),
        success: true,
        stdout: "ok".into(),
        stderr: String::new(),
    });
    // Success keeps the diff on screen: the content is not replaced.
    assert_eq!(wire(&end[0])["status"], "completed");
    assert!(wire(&end[0]).get("content").is_none());
}

#[test]
fn usage_is_sent_only_when_the_context_window_is_known() {
    let mut m = TurnMapper::new("/w");
    let last = TokenUsage { input_tokens: 10, output_tokens: 5, total_tokens: 15, ..TokenUsage::default() };
    let mut info =
        TokenUsageInfo { total_token_usage: last, last_token_usage: last, model_context_window: None };
    assert!(m.event(&EventMsg::TokenCount { info: Some(info) }).is_empty());
    info.model_context_window = Some(128_000);
    let u = m.event(&EventMsg::TokenCount { info: Some(info) });
    assert_eq!(wires(&u), [json!({"sessionUpdate": "usage_update", "used": 15, "size": 128000})]);
}

#[test]
fn a_replay_has_messages_and_tool_calls_with_their_final_status() {
    let items = vec![
        RolloutItem::UserInput {
            turn_id: "t".into(),
            items: vec![InputItem::Text { text: "$ echo hi".into() }],
        },
        RolloutItem::ToolCall {
            turn_id: "t".into(),
            call_id: "c1".into(),
            name: "shell".into(),
            arguments: json!({"command": ["echo", "hi"]}),
        },
        RolloutItem::ToolResult {
            turn_id: "t".into(),
            call_id: "c1".into(),
            success: true,
            output: "exit code: 0\nhi\n".into(),
        },
        RolloutItem::ToolCall {
            turn_id: "t".into(),
            call_id: "c2".into(),
            name: "shell".into(),
            arguments: json!({"command": ["rm", "x"]}),
        },
        RolloutItem::AgentMessage { turn_id: "t".into(), message: "done".into() },
    ];
    let r = wires(&replay(&items, Path::new("/w")));
    assert_eq!(r.len(), 4);
    assert_eq!(
        r[0],
        json!({"sessionUpdate": "user_message_chunk", "content": {"type": "text", "text": "$ echo hi"}})
    );
    assert_eq!(r[1]["sessionUpdate"], "tool_call");
    assert_eq!(r[1]["status"], "completed");
    assert_eq!(r[1]["title"], "echo hi");
    assert_eq!(r[1]["content"][0]["content"]["text"], "exit code: 0\nhi\n");
    assert_eq!(r[2]["status"], "failed");
    assert_eq!(
        r[3],
        json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "done"}})
    );
}

#[test]
fn titles_quote_what_a_shell_would_need() {
    let t = command_title(&["sh".into(), "-c".into(), "echo 'a'; ls".into(), String::new()]);
    assert_eq!(t, r"sh -c 'echo '\''a'\''; ls' ''");
}
