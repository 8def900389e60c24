//! Misbehaving agents during spawn and handshake, and the one-shot.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use deputy_host::{AgentCommand, ApproveAll, Conversation, Ending, HostError, OneShot, STDERR_TAIL_BYTES};
use deputy_protocol::{EventMsg, InputItem, Op};
use tokio_util::sync::CancellationToken;

async fn next_one(one: &mut OneShot) -> Option<deputy_protocol::Event> {
    tokio::time::timeout(Duration::from_secs(10), one.next_event()).await.expect("no event within 10 s")
}

async fn spawn_err(args: &[&str], config: deputy_host::ConversationConfig) -> HostError {
    let err = Conversation::spawn(fixture(args), config, Arc::new(ApproveAll), CancellationToken::new())
        .await
        .expect_err("spawn should fail");
    eprintln!("{err}");
    err
}

/// The fixture's pid cannot be seen from a failed spawn: check that no
/// fixture child of this test process is left (alive or zombie).
fn assert_no_fixture_left(marker: &str) {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains("fixtures/agent.py") || !cmdline.contains(marker) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        assert!(!status.contains(&format!("PPid:\t{me}\n")), "fixture left behind: {cmdline}\n{status}");
    }
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Conversation::spawn(
        AgentCommand::new("/nonexistent/deputy-agent"),
        config(dir.path()),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HostError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/deputy-agent"), "{err}");
}

#[tokio::test]
async fn crash_during_the_handshake_is_agent_exited_with_the_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let err = spawn_err(&["--crash-after-init", "3", "--events", "1"], config(dir.path())).await;
    let HostError::AgentExited { status, stderr_tail } = &err else { panic!("{err:?}") };
    assert_eq!(status.code(), Some(3));
    assert!(stderr_tail.contains("crashing on purpose"));
    assert!(err.to_string().contains("crashing on purpose"));
    assert_no_fixture_left("--crash-after-init");
}

/// The garbage line comes before the `session/start` answer on the pipe, so
/// spawn must fail every time, whichever task the scheduler runs first.
/// `tag` tells this test's fixtures from those of tests running beside it.
async fn garbage_during_the_handshake_fails_spawn(runs: usize, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    for run in 0..runs {
        let err = spawn_err(&["--garbage-after-init", "--tag", tag], config(dir.path())).await;
        let HostError::ProtocolViolation { detail, .. } = &err else { panic!("run {run}: {err:?}") };
        assert!(detail.contains("this is not json"), "run {run}: {detail}");
        assert_no_fixture_left(&format!("--tag {tag}"));
    }
}

#[tokio::test]
async fn garbage_on_stdout_is_a_protocol_violation() {
    garbage_during_the_handshake_fails_spawn(20, "garbage-current-thread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_stdout_is_a_protocol_violation_on_a_multi_thread_runtime() {
    garbage_during_the_handshake_fails_spawn(20, "garbage-multi-thread").await;
}

/// `cargo test -p deputy-host --test faults -- --ignored`: the same, 200 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stress: 200 spawns"]
async fn garbage_on_stdout_is_a_protocol_violation_stress() {
    garbage_during_the_handshake_fails_spawn(200, "garbage-stress").await;
}

#[tokio::test]
async fn never_answering_initialize_times_out_and_the_child_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = spawn_err(
        &["--no-init", "--stubborn"],
        config(dir.path()).handshake_timeout(Duration::from_millis(300)),
    )
    .await;
    assert!(matches!(err, HostError::HandshakeTimeout { .. }), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_no_fixture_left("--no-init");
}

#[tokio::test]
async fn cancelling_during_the_handshake_returns_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        canceller.cancel();
    });
    let start = Instant::now();
    let err = Conversation::spawn(
        fixture(&["--no-init", "--stubborn", "--cancel-marker"]),
        config(dir.path()),
        Arc::new(ApproveAll),
        cancel,
    )
    .await
    .unwrap_err();
    let took = start.elapsed();
    eprintln!("cancelled during handshake after {took:?}");
    assert!(matches!(err, HostError::Cancelled), "{err:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_no_fixture_left("--cancel-marker");
    // Already cancelled: not even spawned.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = Conversation::spawn(fixture(&[]), config(dir.path()), Arc::new(ApproveAll), cancel)
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::Cancelled));
}

#[tokio::test]
async fn rejected_session_start_is_a_handshake_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = spawn_err(&["--reject-start"], config(dir.path())).await;
    let HostError::Handshake { method, error, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*method, "session/start");
    assert_eq!(error.code, -32013);
    assert_no_fixture_left("--reject-start");
}

#[tokio::test]
async fn other_protocol_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = spawn_err(&["--version", "99"], config(dir.path())).await;
    assert!(matches!(err, HostError::ProtocolVersion { host: 1, agent: 99 }), "{err:?}");
    assert_no_fixture_left("--version");
}

#[tokio::test]
async fn stderr_flood_is_drained_and_the_tail_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB before answering: an undrained pipe (64 KiB) would block the child.
    let mut conv = Conversation::spawn(
        fixture(&["--stderr-flood", "1048576"]),
        config(dir.path()),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    conv.shutdown().await.unwrap();
    assert_tree_gone(conv.pid());

    let err = spawn_err(&["--stderr-flood", "1048576", "--crash-after-init", "4"], config(dir.path())).await;
    let tail = err.stderr_tail().unwrap();
    assert!(tail.len() <= STDERR_TAIL_BYTES, "{}", tail.len());
    assert!(tail.len() > STDERR_TAIL_BYTES - 1024, "{}", tail.len());
    assert!(
        tail.ends_with("fixture: flood done\nfixture: crashing on purpose\n"),
        "{:?}",
        &tail[tail.len() - 100..]
    );
    // The message shows only the end of it.
    assert!(err.to_string().len() < 8 * 1024);
}

#[tokio::test]
async fn one_shot_runs_one_turn_then_shuts_down_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut one = OneShot::run(
        fixture(&["--log", log.to_str().unwrap(), "--usage"]),
        config(dir.path()),
        Arc::new(ApproveAll),
        vec![InputItem::Text { text: "hello".into() }],
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let turn = one.submission_id().to_owned();
    let mut kinds = Vec::new();
    while let Some(e) = next_one(&mut one).await {
        assert_eq!(e.id, turn);
        kinds.push(e.msg.kind());
    }
    assert_eq!(kinds, ["task_started", "agent_message", "task_complete"]);
    assert!(matches!(one.submit(Op::Interrupt).await, Err(HostError::SubmissionsClosed)));
    assert_eq!(one.token_usage().unwrap().total_token_usage.input_tokens, 42);
    let pid = one.pid();
    let ending = one.wait().await.unwrap();
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    assert!(ending.status().success());
    let log = read_log(&log);
    assert!(log.iter().any(|l| l.starts_with("submit shutdown")), "{log:?}");
    assert_tree_gone(pid);
}

#[tokio::test]
async fn one_shot_wait_without_reading_events_does_not_wedge() {
    let dir = tempfile::tempdir().unwrap();
    let one = OneShot::run(
        fixture(&["--events", "100"]),
        config(dir.path()).event_capacity(1),
        Arc::new(ApproveAll),
        vec![InputItem::Text { text: "hello".into() }],
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let pid = one.pid();
    let ending = tokio::time::timeout(Duration::from_secs(5), one.wait()).await.unwrap().unwrap();
    assert!(!ending.was_killed(), "{ending:?}");
    assert_tree_gone(pid);
}

#[tokio::test]
async fn one_shot_cancel_runs_the_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let mut one = OneShot::run(
        fixture(&["--hang-turn"]),
        config(dir.path()),
        Arc::new(ApproveAll),
        vec![InputItem::Text { text: "hello".into() }],
        cancel.clone(),
    )
    .await
    .unwrap();
    let pid = one.pid();
    assert!(matches!(next_one(&mut one).await.unwrap().msg, EventMsg::TaskStarted { .. }));
    cancel.cancel();
    // The aborted turn's event is forwarded, then the stream ends.
    let mut last = None;
    while let Some(e) = next_one(&mut one).await {
        last = Some(e.msg);
    }
    assert!(matches!(last, Some(EventMsg::TurnAborted { .. }) | None), "{last:?}");
    let ending = one.wait().await.unwrap();
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    assert_tree_gone(pid);
}
