//! Real-process tests of the interactive conversation, with fixture children
//! (tests/fixtures/agent.py). Each test checks that the agent's whole tree is
//! gone at the end.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use deputy_host::{
    ApprovalContext, ApproveAll, Approver, ChannelApprover, Conversation, DenyAll, Ending, EventFilter,
    HostError, PeerConfig, PendingApproval,
};
use deputy_protocol::{EventMsg, ExecApprovalParams, Op, PatchApprovalParams, ReviewDecision};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_millis(500);

async fn spawn(args: &[&str], dir: &std::path::Path) -> Conversation {
    Conversation::spawn(fixture(args), config(dir), Arc::new(ApproveAll), CancellationToken::new())
        .await
        .expect("spawn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_child_cancel_is_graceful_and_inside_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let grandchild = dir.path().join("grandchild");
    let mut conv = spawn(
        &["--log", log.to_str().unwrap(), "--hang-turn", "--grandchild", grandchild.to_str().unwrap()],
        dir.path(),
    )
    .await;
    assert_eq!(conv.session_id(), "sess-1");
    assert_eq!(conv.rollout_path().unwrap().to_str(), Some("/tmp/rollout-sess-1.jsonl"));
    let grandchild = read_pid(&grandchild);
    conv.submit_with_id("turn-1", Op::text("hi")).await.unwrap();
    let started = next(&mut conv).await.unwrap();
    assert!(matches!(started.msg, EventMsg::TaskStarted { .. }), "{started:?}");

    let ending = conv.cancel().await;
    eprintln!("cooperative cancel: {ending:?}");
    let Ending::Graceful { status, elapsed } = ending else { panic!("not graceful: {ending:?}") };
    assert!(status.success(), "{status:?}");
    assert!(elapsed < DEADLINE, "{elapsed:?}");
    // The turn's end was read before the stream ended.
    let mut rest = Vec::new();
    while let Some(e) = next(&mut conv).await {
        rest.push(e.msg);
    }
    assert!(rest.iter().any(|m| matches!(m, EventMsg::TurnAborted { .. })), "{rest:?}");
    let log = read_log(&log);
    assert!(log.contains(&"submit interrupt -".to_owned()), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("submit shutdown deputy-host-shutdown-")), "{log:?}");
    // The grandchild (same group) did not outlive the agent.
    assert!(gone(grandchild));
    assert_tree_gone(conv.pid());
    // Idempotent.
    assert_eq!(conv.cancel().await, ending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stubborn_child_with_grandchildren_is_killed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let gc = dir.path().join("grandchild");
    let tool = dir.path().join("tool");
    let mut conv = spawn(
        &[
            "--stubborn",
            "--hang-turn",
            "--log",
            log.to_str().unwrap(),
            "--grandchild",
            gc.to_str().unwrap(),
            "--tool",
            tool.to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    let (gc, tool) = (read_pid(&gc), read_pid(&tool));
    let pid = conv.pid() as i32;
    // The tool is in a group of its own, but in the agent's session.
    assert_ne!(unsafe { libc::getpgid(tool) }, pid);
    assert_eq!(unsafe { libc::getsid(tool) }, pid);
    conv.submit(Op::text("hi")).await.unwrap();

    let start = Instant::now();
    let ending = conv.cancel().await;
    let took = start.elapsed();
    eprintln!("stubborn child killed: {ending:?}, cancel() returned after {took:?}");
    let Ending::Killed { status, elapsed } = ending else { panic!("not killed: {ending:?}") };
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // The agent had the drain window (the budget less the kill reserve) to
    // exit; the kill comes after it. (The upper bound, the budget itself, is
    // measured by `deputy-bench cancel`, not asserted on a shared machine.)
    let drain = DEADLINE - deputy_host::KILL_RESERVE;
    assert!(elapsed >= drain, "killed before the drain window ended: {elapsed:?}");
    assert!(took >= drain);
    assert!(gone(gc), "grandchild survived");
    assert!(gone(tool), "tool (own process group, same session) survived");
    // Group and session gone (zombies, waiting for init, do not count).
    assert!(tree_members(pid).is_empty());
    assert_tree_gone(conv.pid());
    let log = read_log(&log);
    assert!(log.contains(&"submit interrupt -".to_owned()), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("submit shutdown")), "{log:?}");
    assert!(log.contains(&"eof".to_owned()), "stdin was not closed after shutdown: {log:?}");
    // Stream ended.
    while next(&mut conv).await.is_some() {}
}

/// Port of the seed's test: the forwarder is blocked on a full channel (capacity
/// 1, pre-filled, nobody reading; the rpc's notification queue full too) when
/// the caller's token is cancelled. The shutdown must still complete, with
/// interrupt and shutdown seen by the child, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_cancelled_while_the_consumers_channel_is_full_still_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let parent = CancellationToken::new();
    let rpc = PeerConfig { notification_capacity: 1, ..PeerConfig::default() };
    let config = config(dir.path()).event_capacity(1).rpc(rpc);
    let mut conv = Conversation::spawn(
        fixture(&["--log", log.to_str().unwrap(), "--events", "200"]),
        config,
        Arc::new(ApproveAll),
        parent.clone(),
    )
    .await
    .unwrap();
    // Let the agent write its events: the channel fills and the forwarder blocks.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let start = Instant::now();
    parent.cancel(); // cascades to the conversation's child tokens
    let ending = conv.wait().await.unwrap();
    let took = start.elapsed();
    eprintln!("cancel with a full channel: {ending:?} in {took:?}");
    assert!(!ending.was_killed(), "{ending:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let log = read_log(&log);
    assert!(log.contains(&"submit interrupt -".to_owned()), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("submit shutdown")), "{log:?}");
    // The pre-filled event is still there; the stream ends.
    assert!(next(&mut conv).await.is_some());
    while next(&mut conv).await.is_some() {}
    assert_tree_gone(conv.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approvals_answered_out_of_order_reach_the_right_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (approver, mut requests) = ChannelApprover::new(8);
    let mut conv = Conversation::spawn(
        fixture(&["--log", log.to_str().unwrap(), "--approvals", "2"]),
        config(dir.path()),
        Arc::new(approver),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    conv.submit_with_id("turn-1", Op::text("go")).await.unwrap();
    // Both are outstanding at once (handed over in either order).
    let (first, second) = by_key(requests.recv().await.unwrap(), requests.recv().await.unwrap());
    assert_eq!((first.key(), second.key()), ("call-1", "call-2"));
    assert_eq!(first.request().turn_id(), "turn-1");
    assert!(second.respond(ReviewDecision::Denied));
    // Only once the agent has the answer to the second, answer the first.
    assert!(
        eventually(Duration::from_secs(5), || read_log(&log).iter().any(|l| l.starts_with("answer"))).await
    );
    assert!(first.respond(ReviewDecision::ApprovedForSession));
    // Approvals never surface as events; the turn completes.
    loop {
        let e = next(&mut conv).await.unwrap();
        assert!(!e.msg.kind().starts_with("approval"));
        if matches!(e.msg, EventMsg::TaskComplete { .. }) {
            assert_eq!(e.id, "turn-1");
            break;
        }
    }
    let log = read_log(&log);
    let answers: Vec<_> = log.iter().filter(|l| l.starts_with("answer")).cloned().collect();
    assert_eq!(answers, ["answer call-2 denied", "answer call-1 approved_for_session"]);
    assert!(conv.shutdown().await.unwrap().status().success());
    assert_tree_gone(conv.pid());
}

fn by_key(a: PendingApproval, b: PendingApproval) -> (PendingApproval, PendingApproval) {
    if a.key() <= b.key() { (a, b) } else { (b, a) }
}

/// Records what the conversation tells the approver.
#[derive(Default)]
struct Recorder {
    asked: Mutex<Vec<String>>,
    withdrawn: Mutex<Vec<String>>,
}

#[deputy_host::async_trait]
impl Approver for Recorder {
    async fn approve_exec(&self, params: ExecApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        self.asked.lock().unwrap().push(params.approval_key().to_owned());
        assert_eq!(cx.key(), params.approval_key());
        cx.cancelled().await;
        std::future::pending().await
    }
    async fn approve_patch(&self, _: PatchApprovalParams, _: ApprovalContext) -> ReviewDecision {
        ReviewDecision::Denied
    }
    fn cancelled(&self, key: &str) {
        self.withdrawn.lock().unwrap().push(key.to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_answers_pending_approvals_abort_and_tells_the_approver() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let recorder = Arc::new(Recorder::default());
    let mut conv = Conversation::spawn(
        fixture(&["--log", log.to_str().unwrap(), "--approvals", "2"]),
        config(dir.path()),
        recorder.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    conv.submit(Op::text("go")).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || recorder.asked.lock().unwrap().len() == 2).await);
    let ending = conv.cancel().await;
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    let mut withdrawn = recorder.withdrawn.lock().unwrap().clone();
    withdrawn.sort();
    assert_eq!(withdrawn, ["call-1", "call-2"]);
    let log = read_log(&log);
    let mut answers: Vec<_> = log.iter().filter(|l| l.starts_with("answer")).cloned().collect();
    answers.sort();
    assert_eq!(answers, ["answer call-1 abort", "answer call-2 abort"], "{log:?}");
    assert_tree_gone(conv.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_withdrawing_an_approval_cancels_the_approver_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (approver, mut requests) = ChannelApprover::new(8);
    let mut conv = Conversation::spawn(
        fixture(&["--log", log.to_str().unwrap(), "--approvals", "2", "--withdraw-approval"]),
        config(dir.path()),
        Arc::new(approver),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    conv.submit(Op::text("go")).await.unwrap();
    let (first, second) = by_key(requests.recv().await.unwrap(), requests.recv().await.unwrap());
    // The agent sends $/cancelRequest for call-1: its prompt is told.
    tokio::time::timeout(Duration::from_secs(5), first.cancelled()).await.expect("withdrawal not seen");
    assert!(!first.respond(ReviewDecision::Approved));
    assert!(!second.is_cancelled());
    assert!(second.respond(ReviewDecision::Approved));
    while let Some(e) = next(&mut conv).await {
        if e.msg.ends_turn() {
            break;
        }
    }
    let log = read_log(&log);
    assert!(log.contains(&"withdrew call-1".to_owned()), "{log:?}");
    assert!(log.contains(&"answer call-2 approved".to_owned()), "{log:?}");
    conv.shutdown().await.unwrap();
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn submission_ids_are_kept_and_rejections_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut conv = spawn(&["--log", log.to_str().unwrap(), "--hang-turn"], dir.path()).await;
    assert_eq!(conv.submit_with_id("mine-1", Op::text("a")).await.unwrap(), "mine-1");
    let e = next(&mut conv).await.unwrap();
    assert_eq!(e.id, "mine-1");
    // A second user input while the turn runs: the agent's error, typed.
    match conv.submit(Op::text("b")).await {
        Err(HostError::Rejected { method: "submit", error }) => assert_eq!(error.code, -32014),
        other => panic!("{other:?}"),
    }
    // A generated id comes back.
    let id = conv.submitter().submit(Op::Interrupt).await.unwrap();
    assert!(id.starts_with("gen-"), "{id}");
    let ending = conv.shutdown().await.unwrap();
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    assert!(read_log(&log).contains(&"submit user_input mine-1".to_owned()));
    // After the end: a clear error.
    assert!(matches!(conv.submit(Op::Interrupt).await, Err(HostError::Closed)));
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn token_usage_is_tracked_even_when_filtered_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut conv = spawn(&["--usage", "--deltas"], dir.path()).await;
    // From session_configured (restored on resume).
    assert_eq!(conv.token_usage().unwrap().total_token_usage.input_tokens, 7);
    conv.submit(Op::text("a")).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(e) = next(&mut conv).await {
        kinds.push(e.msg.kind());
        if e.msg.ends_turn() {
            break;
        }
    }
    assert_eq!(kinds, ["task_started", "agent_message", "task_complete"]);
    assert_eq!(conv.token_usage().unwrap().total_token_usage.input_tokens, 42);
    conv.shutdown().await.unwrap();
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn filter_all_passes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut conv = Conversation::spawn(
        fixture(&["--usage", "--deltas"]),
        config(dir.path()).event_filter(EventFilter::All),
        Arc::new(DenyAll),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    conv.submit(Op::text("a")).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(e) = next(&mut conv).await {
        kinds.push(e.msg.kind());
        if e.msg.ends_turn() {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "session_configured",
            "task_started",
            "agent_message_delta",
            "agent_message_delta",
            "agent_message",
            "token_count",
            "task_complete"
        ]
    );
    conv.shutdown().await.unwrap();
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn agent_dying_mid_conversation_fails_the_pending_submit_and_ends_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut conv = spawn(&["--crash-on-input", "5"], dir.path()).await;
    let err = conv.submit(Op::text("die")).await.unwrap_err();
    let HostError::AgentExited { status, stderr_tail } = &err else { panic!("{err:?}") };
    assert_eq!(status.code(), Some(5));
    assert!(stderr_tail.contains("fixture: dying mid-turn"), "{stderr_tail:?}");
    assert!(err.to_string().contains("exit status 5"), "{err}");
    assert!(next(&mut conv).await.is_none());
    assert!(matches!(conv.wait().await, Err(HostError::AgentExited { .. })));
    assert!(matches!(conv.error(), Some(HostError::AgentExited { .. })));
    assert!(matches!(conv.submit(Op::Interrupt).await, Err(HostError::AgentExited { .. })));
    assert_eq!(conv.cancel().await, Ending::Exited { status: *status });
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn stdout_closed_while_alive_is_an_error_and_the_agent_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut conv = spawn(&["--close-stdout-after-start"], dir.path()).await;
    let err = conv.wait().await.unwrap_err();
    assert!(matches!(err, HostError::StdoutClosed { .. }), "{err:?}");
    assert!(next(&mut conv).await.is_none());
    assert!(conv.cancel().await.was_killed());
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn drop_kills_the_tree_synchronously() {
    let dir = tempfile::tempdir().unwrap();
    let gc = dir.path().join("gc");
    let tool = dir.path().join("tool");
    let conv = spawn(
        &["--stubborn", "--grandchild", gc.to_str().unwrap(), "--tool", tool.to_str().unwrap()],
        dir.path(),
    )
    .await;
    let pid = conv.pid();
    let (gc, tool) = (read_pid(&gc), read_pid(&tool));
    drop(conv);
    // No await in between: the agent was killed and reaped inside drop (its
    // /proc entry is gone, not even a zombie)...
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "agent not reaped by drop");
    // ...and its tree was SIGKILLed (they die as soon as they are scheduled).
    assert!(gone(gc) && gone(tool));
    assert_tree_gone(pid);
}

#[test]
fn drop_in_a_runtime_that_shuts_down_still_kills() {
    let dir = tempfile::tempdir().unwrap();
    let gc = dir.path().join("gc");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let conv = rt.block_on(spawn(&["--stubborn", "--grandchild", gc.to_str().unwrap()], dir.path()));
    let pid = conv.pid();
    let gc = read_pid(&gc);
    drop(rt);
    drop(conv);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "agent not reaped by drop");
    assert!(gone(gc));
    assert_tree_gone(pid);
}

#[tokio::test]
async fn garbage_mid_conversation_fails_the_pending_submit_and_kills_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut conv = spawn(&["--garbage-on-input", "--stubborn"], dir.path()).await;
    let err = conv.submit(Op::text("go")).await.unwrap_err();
    let HostError::ProtocolViolation { detail, .. } = &err else { panic!("{err:?}") };
    assert!(detail.contains("Traceback"), "{detail}");
    assert!(next(&mut conv).await.is_none());
    assert!(matches!(conv.wait().await, Err(HostError::ProtocolViolation { .. })));
    assert!(conv.cancel().await.was_killed());
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn json_that_is_not_json_rpc_is_a_protocol_violation_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut conv = spawn(&["--not-rpc-on-input", "--stubborn"], dir.path()).await;
    let err = conv.submit(Op::text("go")).await.unwrap_err();
    let HostError::ProtocolViolation { detail, .. } = &err else { panic!("{err:?}") };
    assert!(detail.contains(r#"{"hello":1}"#), "{detail}");
    assert!(detail.contains("-32600"), "{detail}");
    assert!(err.to_string().contains(r#"{"hello":1}"#), "{err}");
    assert!(next(&mut conv).await.is_none());
    assert!(matches!(conv.wait().await, Err(HostError::ProtocolViolation { .. })));
    assert!(conv.cancel().await.was_killed());
    assert_tree_gone(conv.pid());
}

#[tokio::test]
async fn a_shutdown_op_submitted_by_the_caller_ends_without_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut conv = spawn(&[], dir.path()).await;
    assert_eq!(conv.submit_with_id("bye", Op::Shutdown).await.unwrap(), "bye");
    let last = next(&mut conv).await.unwrap();
    assert!(matches!(last.msg, EventMsg::ShutdownComplete), "{last:?}");
    assert!(next(&mut conv).await.is_none());
    let ending = conv.wait().await.unwrap();
    assert!(matches!(ending, Ending::Exited { .. }) && ending.status().success(), "{ending:?}");
    assert_tree_gone(conv.pid());
}

#[test]
fn handles_and_futures_are_send() {
    fn is_send<T: Send>(_: &T) {}
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Conversation>();
    is_send_sync::<deputy_host::OneShot>();
    is_send_sync::<deputy_host::Submitter>();
    is_send_sync::<HostError>();
    let dir = std::path::Path::new("/");
    let spawn =
        Conversation::spawn(fixture(&[]), config(dir), Arc::new(ApproveAll), CancellationToken::new());
    is_send(&spawn);
    let one = deputy_host::OneShot::run(
        fixture(&[]),
        config(dir),
        Arc::new(ApproveAll),
        vec![],
        CancellationToken::new(),
    );
    is_send(&one);
}
