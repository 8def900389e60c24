//! deputy-host against the real `deputy agent`: a turn with an approval, the
//! cancel ladder (cooperative, and against the `hang` fault scenario), a crash,
//! resume restoring the token usage, and a one-shot. Every test checks that
//! the agent's session is empty at the end.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deputy_host::HostError;
use deputy_host::{
    AgentCommand, ApproveAll, CancellationToken, ChannelApprover, Conversation, ConversationConfig, Ending,
    OneShot,
};
use deputy_protocol::{
    ApprovalPolicy, EventMsg, HistorySource, InitialHistory, InputItem, ModelSelection, Op, ReviewDecision,
    SessionStartParams, TurnAbortReason,
};

fn agent(home: &Path) -> AgentCommand {
    let mut cmd = AgentCommand::new(env!("CARGO_BIN_EXE_deputy"));
    cmd.arg("agent").arg("--home").arg(home).env_remove("RUST_LOG").env_remove("DEPUTY_HOME");
    cmd
}

fn config(cwd: &Path) -> ConversationConfig {
    let mut session = SessionStartParams::new(cwd.canonicalize().unwrap());
    session.approval_policy = ApprovalPolicy::AskAlways;
    ConversationConfig::new(session)
}

/// Live (non-zombie) processes whose session is `sid`.
fn session_members(sid: u32) -> Vec<u32> {
    deputy_proctree::snapshot()
        .iter()
        .filter(|p| p.session as u32 == sid && !p.is_zombie())
        .map(|p| p.pid as u32)
        .collect()
}

fn assert_session_gone(sid: u32) {
    let start = Instant::now();
    while !session_members(sid).is_empty() && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(session_members(sid), Vec::<u32>::new(), "processes left in the agent's session");
}

async fn next(conv: &mut Conversation) -> Option<deputy_protocol::Event> {
    tokio::time::timeout(Duration::from_secs(10), conv.next_event()).await.expect("no event within 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_runs_a_turn_with_an_approval_and_shuts_down_gracefully() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let (approver, mut approvals) = ChannelApprover::new(4);
    let mut conv = Conversation::spawn(
        agent(home.path()),
        config(cwd.path()),
        Arc::new(approver),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!conv.session_id().is_empty());
    assert!(conv.rollout_path().is_some());
    conv.submit_with_id("turn-1", Op::text("$ echo hello-from-host")).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(10), approvals.recv()).await.unwrap().unwrap();
    assert_eq!(pending.request().turn_id(), "turn-1");
    assert!(pending.respond(ReviewDecision::Approved));
    let mut output = String::new();
    loop {
        let e = next(&mut conv).await.expect("stream ended early");
        assert_eq!(e.id, "turn-1");
        match e.msg {
            EventMsg::ExecCommandEnd { output: o, exit_code, .. } => {
                assert_eq!(exit_code, 0);
                output = o;
            }
            EventMsg::TaskComplete { .. } => break,
            EventMsg::TurnAborted { .. } => panic!("turn aborted"),
            _ => {}
        }
    }
    assert!(output.contains("hello-from-host"), "{output:?}");
    let pid = conv.pid();
    let ending = conv.shutdown().await.unwrap();
    eprintln!("deputy agent shutdown: {ending:?}");
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    assert!(ending.status().success());
    assert_session_gone(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_cancel_while_a_command_runs_kills_the_tool_and_ends_in_time() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut conv = Conversation::spawn(
        agent(home.path()),
        config(cwd.path()),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    conv.submit_with_id("turn-1", Op::text("$ sleep 30")).await.unwrap();
    loop {
        let e = next(&mut conv).await.expect("stream ended early");
        if matches!(e.msg, EventMsg::ExecCommandBegin { .. }) {
            break;
        }
    }
    let pid = conv.pid();
    // The tool runs in the agent's session (in a process group of its own).
    assert!(session_members(pid).len() >= 2, "{:?}", session_members(pid));
    let start = Instant::now();
    let ending = conv.cancel().await;
    eprintln!("deputy agent cancel with a running command: {ending:?} (cancel() took {:?})", start.elapsed());
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    // The agent answers the ladder's `interrupt` and `shutdown` even though
    // its stdin is closed right after them: the turn's end is not lost.
    let mut rest = Vec::new();
    while let Some(e) = next(&mut conv).await {
        rest.push(e);
    }
    let aborted: Vec<_> = rest.iter().filter(|e| matches!(e.msg, EventMsg::TurnAborted { .. })).collect();
    assert_eq!(aborted.len(), 1, "{rest:?}");
    assert_eq!(aborted[0].id, "turn-1");
    assert!(
        matches!(aborted[0].msg, EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. }),
        "{rest:?}"
    );
    assert!(matches!(rest.last().map(|e| &e.msg), Some(EventMsg::ShutdownComplete)), "{rest:?}");
    assert!(conv.error().is_none(), "{:?}", conv.error());
    assert_session_gone(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_one_shot_runs_one_turn() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut one = OneShot::run(
        agent(home.path()),
        config(cwd.path()),
        Arc::new(ApproveAll),
        vec![InputItem::Text { text: "$ echo one-shot".into() }],
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(10), one.next_event()).await.unwrap() {
        kinds.push(e.msg.kind());
    }
    assert_eq!(kinds.last(), Some(&"task_complete"), "{kinds:?}");
    assert!(kinds.contains(&"exec_command_end"), "{kinds:?}");
    let pid = one.pid();
    let ending = one.wait().await.unwrap();
    assert!(ending.status().success(), "{ending:?}");
    assert_session_gone(pid);
}

/// A session playing `scenario` (JSON lines, one turn per line).
fn scripted(cwd: &Path, scenario: &str) -> ConversationConfig {
    let path = cwd.join("scenario.jsonl");
    std::fs::write(&path, scenario).unwrap();
    let mut config = config(cwd);
    config.session.model = Some(ModelSelection { scenario: Some(path), ..ModelSelection::named("script") });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_hanging_agent_is_killed_at_the_deadline_with_its_grandchild() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let config = scripted(cwd.path(), "{\"steps\":[{\"type\":\"hang\"}]}\n");
    let mut conv =
        Conversation::spawn(agent(home.path()), config, Arc::new(ApproveAll), CancellationToken::new())
            .await
            .unwrap();
    let pid = conv.pid();
    conv.submit(Op::text("hang")).await.unwrap();
    // Wait for the grandchild `sleep 3600`.
    let start = Instant::now();
    while session_members(pid).len() < 2 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(session_members(pid).len() >= 2);
    let ending = conv.cancel().await;
    eprintln!("hanging deputy agent: {ending:?}");
    let Ending::Killed { elapsed, .. } = ending else { panic!("{ending:?}") };
    // Killed once the drain window (budget less the kill reserve) is over.
    assert!(elapsed >= Duration::from_millis(500) - deputy_host::KILL_RESERVE, "{elapsed:?}");
    assert_session_gone(pid);
    while next(&mut conv).await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_crashing_agent_is_a_typed_error_with_the_stderr_tail() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let config =
        scripted(cwd.path(), "{\"steps\":[{\"type\":\"exit\",\"code\":7,\"stderr\":\"boom-from-agent\"}]}\n");
    let mut conv =
        Conversation::spawn(agent(home.path()), config, Arc::new(ApproveAll), CancellationToken::new())
            .await
            .unwrap();
    let pid = conv.pid();
    let _ = conv.submit(Op::text("crash")).await;
    while next(&mut conv).await.is_some() {}
    let err = conv.wait().await.unwrap_err();
    let HostError::AgentExited { status, stderr_tail } = &err else { panic!("{err:?}") };
    assert_eq!(status.code(), Some(7));
    assert!(stderr_tail.contains("boom-from-agent"), "{stderr_tail:?}");
    assert_session_gone(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_resume_restores_the_token_usage() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let scenario = "{\"steps\":[{\"type\":\"token_count\",\"input_tokens\":120,\"output_tokens\":30}]}\n";
    let mut conv = Conversation::spawn(
        agent(home.path()),
        scripted(cwd.path(), scenario),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(conv.token_usage(), None);
    conv.submit(Op::text("count")).await.unwrap();
    while let Some(e) = next(&mut conv).await {
        // token_count is filtered out by default, but tracked.
        assert!(!matches!(e.msg, EventMsg::TokenCount { .. }));
        if e.msg.ends_turn() {
            break;
        }
    }
    let usage = conv.token_usage().expect("token usage tracked");
    assert_eq!(usage.total_token_usage.input_tokens, 120);
    let session_id = conv.session_id().to_owned();
    conv.shutdown().await.unwrap();

    let mut config = scripted(cwd.path(), scenario);
    config.session.initial_history =
        InitialHistory::Resumed { from: HistorySource::SessionId(session_id.clone()) };
    let mut resumed =
        Conversation::spawn(agent(home.path()), config, Arc::new(ApproveAll), CancellationToken::new())
            .await
            .unwrap();
    assert_eq!(resumed.session_id(), session_id);
    assert_eq!(resumed.token_usage(), Some(usage), "restored from session_configured");
    resumed.shutdown().await.unwrap();
    assert_session_gone(resumed.pid());
}
