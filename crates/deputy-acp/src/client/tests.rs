use super::*;
use deputy_protocol::TurnAbortReason;

fn mapper() -> EventMapper {
    EventMapper::new("/work/proj")
}

fn chunk(kind: &str, text: &str) -> Value {
    json!({ "sessionUpdate": kind, "content": { "type": "text", "text": text } })
}

fn options() -> Vec<PermissionChoice> {
    serde_json::from_value(json!([
        { "optionId": "yes", "name": "Allow", "kind": "allow_once" },
        { "optionId": "always", "name": "Always", "kind": "allow_always" },
        { "optionId": "no", "name": "Reject", "kind": "reject_once" },
        { "optionId": "weird", "name": "?", "kind": "ask_my_mother" },
    ]))
    .unwrap()
}

#[test]
fn message_chunks_stream_as_deltas_and_end_as_one_message() {
    let mut m = mapper();
    assert_eq!(
        m.update("t", &chunk("agent_message_chunk", "Hel")),
        vec![EventMsg::AgentMessageDelta { delta: "Hel".into() }]
    );
    m.update("t", &chunk("agent_message_chunk", "lo"));
    let end = m.end_turn("t", &TurnEnd::Stopped(Some(StopReason::EndTurn)));
    assert_eq!(
        end,
        vec![
            EventMsg::AgentMessage { message: "Hello".into() },
            EventMsg::TaskComplete { turn_id: "t".into(), last_agent_message: Some("Hello".into()) },
        ]
    );
}

#[test]
fn thoughts_and_messages_close_each_other() {
    let mut m = mapper();
    m.update("t", &chunk("agent_thought_chunk", "hmm"));
    let out = m.update("t", &chunk("agent_message_chunk", "ok"));
    assert_eq!(
        out,
        vec![
            EventMsg::AgentReasoning { text: "hmm".into() },
            EventMsg::AgentMessageDelta { delta: "ok".into() },
        ]
    );
}

#[test]
fn unknown_updates_and_content_kinds_are_skipped() {
    let mut m = mapper();
    assert!(m.update("t", &json!({ "sessionUpdate": "plan", "entries": [] })).is_empty());
    assert!(m.update("t", &json!({ "sessionUpdate": "brand_new_kind" })).is_empty());
    assert!(
        m.update("t", &json!({ "sessionUpdate": "agent_message_chunk", "content": { "type": "image" } }))
            .is_empty()
    );
    assert!(m.update("t", &json!({ "no": "tag" })).is_empty());
    assert!(m.update("t", &chunk("user_message_chunk", "echo")).is_empty());
}

#[test]
fn an_approved_command_is_asked_begun_and_ended_with_its_output() {
    let mut m = mapper();
    let call = json!({
        "sessionUpdate": "tool_call", "toolCallId": "c1", "title": "echo hi", "kind": "execute",
        "status": "pending", "rawInput": { "command": ["echo", "hi"] }
    });
    assert!(m.update("t", &call).is_empty());
    let request: PermissionRequest = serde_json::from_value(json!({
        "sessionId": "s", "toolCall": { "toolCallId": "c1" }, "options": options()
            .iter().map(|o| json!({"optionId": o.option_id, "name": o.name, "kind": o.kind})).collect::<Vec<_>>()
    }))
    .unwrap();
    let Some(Ask::Exec(params)) = m.permission("t", &request) else { panic!("not an exec ask") };
    assert_eq!(params.command, vec!["echo", "hi"]);
    assert_eq!(params.cwd, PathBuf::from("/work/proj"));
    assert_eq!(params.call_id, "c1");
    assert_eq!(params.reason, None, "the title is the command itself");
    let outcome = choose(ReviewDecision::Approved, &request.options);
    assert_eq!(outcome, RequestPermissionOutcome::Selected { option_id: "yes".into() });
    m.answered("c1", &outcome, &request.options);
    let begin = m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "in_progress" }),
    );
    assert!(matches!(&begin[..], [EventMsg::ExecCommandBegin { command, .. }] if command == &["echo", "hi"]));
    let end = m.update(
        "t",
        &json!({
            "sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "completed",
            "content": [{ "type": "content", "content": { "type": "text", "text": "hi\n" } }]
        }),
    );
    match &end[..] {
        [EventMsg::ExecCommandEnd { exit_code: 0, output, interrupted: false, .. }] => {
            assert_eq!(output, "hi\n")
        }
        other => panic!("{other:?}"),
    }
    // A repeated final status emits nothing more.
    assert!(
        m.update(
            "t",
            &json!({ "sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "failed" })
        )
        .is_empty()
    );
}

#[test]
fn a_refused_command_that_fails_emits_nothing_but_an_unasked_one_is_shown() {
    let mut m = mapper();
    m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call", "toolCallId": "c1", "kind": "execute", "title": "rm -rf /" }),
    );
    let opts = options();
    let outcome = choose(ReviewDecision::Denied, &opts);
    assert_eq!(outcome, RequestPermissionOutcome::Selected { option_id: "no".into() });
    m.answered("c1", &outcome, &opts);
    assert!(
        m.update(
            "t",
            &json!({ "sessionUpdate": "tool_call_update", "toolCallId": "c1", "status": "failed" })
        )
        .is_empty()
    );
    // A call that goes straight to completed (no in_progress) still shows.
    m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call", "toolCallId": "c2", "kind": "execute", "title": "ls",
        "rawInput": { "command": "ls -la" } }),
    );
    let out = m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call_update", "toolCallId": "c2", "status": "completed",
        "rawOutput": { "exit_code": 3, "stdout": "x" } }),
    );
    match &out[..] {
        [
            EventMsg::ExecCommandBegin { command, .. },
            EventMsg::ExecCommandEnd { exit_code: 3, output, .. },
        ] => {
            assert_eq!(command, &["ls -la"]);
            assert_eq!(output, "x");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn option_choice_never_grants_more_than_decided() {
    let only_always: Vec<PermissionChoice> = serde_json::from_value(json!([
        { "optionId": "always", "name": "Always", "kind": "allow_always" },
        { "optionId": "never", "name": "Never", "kind": "reject_always" },
    ]))
    .unwrap();
    assert_eq!(
        choose(ReviewDecision::Approved, &only_always),
        RequestPermissionOutcome::Selected { option_id: "never".into() }
    );
    assert_eq!(
        choose(ReviewDecision::ApprovedForSession, &only_always),
        RequestPermissionOutcome::Selected { option_id: "always".into() }
    );
    assert_eq!(choose(ReviewDecision::Abort, &only_always), RequestPermissionOutcome::Cancelled);
    assert_eq!(choose(ReviewDecision::Denied, &[]), RequestPermissionOutcome::Cancelled);
    assert_eq!(choose(ReviewDecision::Approved, &[]), RequestPermissionOutcome::Cancelled);
    let once = options();
    assert_eq!(
        choose(ReviewDecision::ApprovedForSession, &once),
        RequestPermissionOutcome::Selected { option_id: "always".into() }
    );
}

#[test]
fn an_edit_with_diffs_is_a_patch_with_a_unified_diff() {
    let mut m = mapper();
    let call = json!({
        "sessionUpdate": "tool_call", "toolCallId": "e1", "title": "Edit a.txt", "kind": "edit",
        "content": [
            { "type": "diff", "path": "/work/proj/a.txt", "oldText": "one\ntwo\n", "newText": "one\n2\n" },
            { "type": "diff", "path": "/work/proj/new.txt", "newText": "fresh\n" },
            { "type": "diff", "path": "/etc/passwd", "oldText": "root\n", "newText": "me\n" }
        ]
    });
    m.update("t", &call);
    let request: PermissionRequest = serde_json::from_value(
        json!({ "sessionId": "s", "toolCall": { "toolCallId": "e1" }, "options": [] }),
    )
    .unwrap();
    let Some(Ask::Patch(p)) = m.permission("t", &request) else { panic!("not a patch ask") };
    assert_eq!(p.changes.keys().collect::<Vec<_>>(), vec!["/etc/passwd", "a.txt", "new.txt"]);
    match &p.changes["a.txt"] {
        FileChange::Update { unified_diff, .. } => {
            assert!(unified_diff.contains("-two\n+2\n"), "{unified_diff}");
            assert!(unified_diff.starts_with("--- a/a.txt\n+++ b/a.txt\n"), "{unified_diff}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.changes["new.txt"], FileChange::add("fresh\n"));
    assert_eq!(p.outside_workspace, vec![PathBuf::from("/etc/passwd")]);
    assert_eq!(p.reason.as_deref(), Some("Edit a.txt"));
    let begin = m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call_update", "toolCallId": "e1", "status": "in_progress" }),
    );
    assert!(matches!(&begin[..], [EventMsg::PatchApplyBegin { auto_approved: false, .. }]));
    let end = m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call_update", "toolCallId": "e1", "status": "completed" }),
    );
    assert!(matches!(&end[..], [EventMsg::PatchApplyEnd { success: true, .. }]));
}

#[test]
fn other_tools_ask_generically_and_end_as_background_events() {
    let mut m = mapper();
    m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call", "toolCallId": "f1", "kind": "fetch",
        "title": "GET https://example.com", "rawInput": { "url": "https://example.com" } }),
    );
    let request: PermissionRequest =
        serde_json::from_value(json!({ "sessionId": "s", "toolCall": { "toolCallId": "f1" } })).unwrap();
    let Some(Ask::Tool(ask)) = m.permission("t", &request) else { panic!("not a tool ask") };
    assert_eq!(ask.kind, "fetch");
    assert_eq!(ask.input, Some(json!({ "url": "https://example.com" })));
    let out = m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call_update", "toolCallId": "f1", "status": "completed" }),
    );
    assert_eq!(
        out,
        vec![EventMsg::BackgroundEvent { message: "fetch `GET https://example.com`: completed".into() }]
    );
    // No toolCallId: nothing to ask about.
    let bad: PermissionRequest = serde_json::from_value(json!({ "sessionId": "s", "toolCall": {} })).unwrap();
    assert_eq!(m.permission("t", &bad), None);
}

#[test]
fn a_cancelled_turn_closes_running_tools_as_interrupted() {
    let mut m = mapper();
    m.update(
        "t",
        &json!({ "sessionUpdate": "tool_call", "toolCallId": "c1", "kind": "execute",
        "status": "in_progress", "rawInput": { "command": ["sleep", "30"] } }),
    );
    m.update("t", &chunk("agent_message_chunk", "running"));
    let end = m.end_turn("t", &TurnEnd::Stopped(Some(StopReason::Cancelled)));
    match &end[..] {
        [
            EventMsg::AgentMessage { .. },
            EventMsg::ExecCommandEnd { interrupted: true, exit_code: 1, .. },
            EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. },
        ] => {}
        other => panic!("{other:?}"),
    }
    // The next turn starts clean.
    let end = m.end_turn("t2", &TurnEnd::Failed("boom".into()));
    assert_eq!(
        end,
        vec![
            EventMsg::Error { message: "boom".into() },
            EventMsg::TaskComplete { turn_id: "t2".into(), last_agent_message: None },
        ]
    );
}

#[test]
fn early_stops_warn_and_usage_maps_to_token_counts() {
    let mut m = mapper();
    let end = m.end_turn("t", &TurnEnd::Stopped(Some(StopReason::MaxTokens)));
    assert!(matches!(&end[..], [EventMsg::Warning { .. }, EventMsg::TaskComplete { .. }]));
    let end = m.end_turn("t", &TurnEnd::Stopped(stop_reason_of(&json!({ "stopReason": "new_reason" }))));
    assert!(matches!(&end[..], [EventMsg::Warning { .. }, EventMsg::TaskComplete { .. }]));
    let out = m.update("t", &json!({ "sessionUpdate": "usage_update", "used": 1200, "size": 200000 }));
    match &out[..] {
        [EventMsg::TokenCount { info: Some(info) }] => {
            assert_eq!(info.last_token_usage.total_tokens, 1200);
            assert_eq!(info.model_context_window, Some(200000));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn permission_answers_have_the_schema_shape() {
    assert_eq!(
        permission_answer(&RequestPermissionOutcome::Cancelled),
        json!({ "outcome": { "outcome": "cancelled" } })
    );
    assert_eq!(
        permission_answer(&RequestPermissionOutcome::Selected { option_id: "x".into() }),
        json!({ "outcome": { "outcome": "selected", "optionId": "x" } })
    );
    let init: AgentInitialize = serde_json::from_value(json!({
        "protocolVersion": 1, "agentCapabilities": { "loadSession": true, "sessionCapabilities": { "close": {} } },
        "agentInfo": { "name": "x", "version": "1" }, "authMethods": [], "extra": 1
    }))
    .unwrap();
    assert!(
        init.agent_capabilities.load_session && init.agent_capabilities.session_capabilities.close.is_some()
    );
    let bare: AgentInitialize = serde_json::from_value(json!({ "protocolVersion": 1 })).unwrap();
    assert!(!bare.agent_capabilities.load_session);
}

#[test]
fn a_huge_streamed_message_is_kept_bounded_for_its_final_event() {
    let mut m = mapper();
    let piece = "é".repeat(1000); // 2000 bytes, two-byte characters
    let mut deltas = 0;
    for _ in 0..1000 {
        deltas += m.update("t", &chunk("agent_message_chunk", &piece)).len();
    }
    assert_eq!(deltas, 1000, "every chunk is still a delta");
    let end = m.end_turn("t", &TurnEnd::Stopped(Some(StopReason::EndTurn)));
    let EventMsg::AgentMessage { message } = &end[0] else { panic!("{end:?}") };
    assert!(message.len() < MAX_KEPT_MESSAGE_BYTES + 200, "{}", message.len());
    assert!(
        message
            .ends_with("(2000000 bytes in all; the first 1048576 are kept here, the deltas carry the whole)"),
        "{}",
        &message[message.len() - 120..]
    );
}
