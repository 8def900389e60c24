//! The kit against real processes: the scripted agent (the test executable
//! itself, re-run as an agent) driven by the protocol driver and by
//! `deputy-host`, and the driver's own checks (stdout problems, leftovers,
//! errors that say what happened).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deputy_host::{ApproveAll, CancellationToken, Conversation, ConversationConfig, DenyAll, OneShot};
use deputy_protocol::{EventMsg, InputItem, Op, ReviewDecision, SessionStartParams, TurnAbortReason};
use deputy_testkit::{AgentUnderTest, ErrorKind, Options, ScriptedAgent};

fn session(dir: &tempfile::TempDir) -> SessionStartParams {
    SessionStartParams::new(dir.path().canonicalize().unwrap())
}

#[test]
fn the_driver_plays_a_scripted_turn_with_an_approval() {
    let dir = tempfile::tempdir().unwrap();
    let script = ScriptedAgent::new()
        .reasoning("thinking")
        .message_in_chunks("hello", 2)
        .exec_with_reason(["touch", "made"], "make it")
        .token_count(3, 4)
        .message("done");
    let mut agent = AgentUnderTest::spawn(script.command()).unwrap();
    let init = agent.initialize().unwrap();
    assert_eq!(init.protocol_version, 1);
    agent.start_session(session(&dir)).unwrap();
    let configured = agent.expect_event("", "session_configured").unwrap();
    assert!(matches!(configured.msg, EventMsg::SessionConfigured { ref model, .. } if model == "script"));
    let turn = agent.submit_text("go").unwrap();
    let approval = agent.expect_approval().unwrap();
    assert_eq!(approval.method, "approval/exec");
    assert_eq!(approval.command().unwrap(), ["touch", "made"]);
    assert_eq!(approval.params["reason"], "make it");
    agent.answer_approval(&approval, ReviewDecision::Approved).unwrap();
    let end = agent.expect_event(&turn, "exec_command_end").unwrap();
    assert!(matches!(end.msg, EventMsg::ExecCommandEnd { exit_code: 0, .. }), "{end:?}");
    let done = agent.expect_turn_end(&turn).unwrap();
    assert!(
        matches!(done.msg, EventMsg::TaskComplete { ref last_agent_message, .. } if last_agent_message.as_deref() == Some("done"))
    );
    assert!(dir.path().join("made").exists());
    agent.shutdown().unwrap();
    assert!(agent.wait_exit().unwrap().success());
    agent.assert_no_process_left().unwrap();
    assert!(agent.stdout_problems().is_empty());
    assert!(agent.transcript().len() > 10);
}

#[test]
fn turns_play_in_order_and_wait_for_interrupt_waits() {
    let dir = tempfile::tempdir().unwrap();
    let script = ScriptedAgent::new().message("first").next_turn().wait_for_interrupt();
    let mut agent = AgentUnderTest::spawn(script.command()).unwrap();
    agent.initialize().unwrap();
    agent.start_session(session(&dir)).unwrap();
    let one = agent.submit_text("1").unwrap();
    agent.expect_event(&one, "task_complete").unwrap();
    let two = agent.submit_text("2").unwrap();
    agent.expect_event(&two, "task_started").unwrap();
    assert!(
        agent
            .wait_message(Duration::from_millis(200), |m| m["params"]["msg"]["type"] == "turn_aborted")
            .is_none()
    );
    let started = Instant::now();
    agent.interrupt().unwrap();
    let end = agent.expect_turn_end(&two).unwrap();
    assert!(matches!(end.msg, EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. }), "{end:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    agent.close_stdin();
    assert!(agent.wait_exit().unwrap().success());
    agent.assert_no_process_left().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_host_runs_the_scripted_agent_as_its_agent_command() {
    let dir = tempfile::tempdir().unwrap();
    let script = ScriptedAgent::new().message("hi").exec(["true"]).message("bye");
    let mut turn = OneShot::run(
        script.agent_command(),
        ConversationConfig::new(session(&dir)),
        Arc::new(DenyAll),
        vec![InputItem::Text { text: "go".into() }],
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while let Some(event) = turn.next_event().await {
        kinds.push(event.msg.kind());
    }
    assert!(kinds.contains(&"agent_message"), "{kinds:?}");
    assert!(!kinds.contains(&"exec_command_begin"), "denied, so nothing ran: {kinds:?}");
    assert_eq!(kinds.last(), Some(&"task_complete"), "{kinds:?}");
    turn.wait().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_host_cancels_a_hanging_scripted_agent_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let script = ScriptedAgent::new().hang();
    let cancel = CancellationToken::new();
    let mut conversation = Conversation::spawn(
        script.agent_command(),
        ConversationConfig::new(session(&dir)),
        Arc::new(ApproveAll),
        cancel,
    )
    .await
    .unwrap();
    let turn = conversation.submit_with_id("t", Op::text("go")).await.unwrap();
    // The hang step starts once the turn runs: wait for its first event.
    while let Some(event) = conversation.next_event().await {
        if event.id == turn && matches!(event.msg, EventMsg::TaskStarted { .. }) {
            break;
        }
    }
    let started = Instant::now();
    let ending = conversation.cancel().await;
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    assert!(format!("{ending:?}").contains("Killed"), "{ending:?}");
}

#[test]
fn an_exit_step_ends_the_agent_with_its_code_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent =
        AgentUnderTest::spawn(ScriptedAgent::new().exit_with_stderr(7, "boom").command()).unwrap();
    agent.initialize().unwrap();
    agent.start_session(session(&dir)).unwrap();
    agent.submit_text("go").unwrap();
    let status = agent.wait_exit().unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(agent.wait_stderr_closed(Duration::from_secs(5)));
    assert!(agent.stderr_tail().contains("boom"), "{}", agent.stderr_tail());
}

#[test]
fn a_private_home_is_removed_and_a_named_one_kept() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agent =
        AgentUnderTest::spawn(ScriptedAgent::new().message("x").home(home.path()).command()).unwrap();
    agent.initialize().unwrap();
    agent.start_session(session(&dir)).unwrap();
    let turn = agent.submit_text("go").unwrap();
    agent.expect_turn_end(&turn).unwrap();
    agent.close_stdin();
    agent.wait_exit().unwrap();
    let sessions = home.path().join("sessions");
    assert!(
        walk(&sessions).iter().any(|p| p.extension().is_some_and(|e| e == "jsonl")),
        "no rollout under {sessions:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A tiny "agent" in sh: it prints what we give it, then waits for EOF.
fn sh_agent(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    cmd
}

#[test]
fn lines_that_are_not_messages_are_reported_with_the_reason() {
    let mut agent = AgentUnderTest::spawn(sh_agent(
        r#"echo 'starting up'; echo '{"jsonrpc":"2.0","method":"event","params":{}}'; printf 'partial'"#,
    ))
    .unwrap();
    agent.wait_exit().unwrap();
    agent.drain();
    let problems: Vec<String> = agent.stdout_problems().iter().map(|e| e.problem.clone().unwrap()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("not JSON"), "{problems:?}");
    assert!(problems[1].starts_with("a partial line"), "{problems:?}");
    assert_eq!(agent.pending().count(), 1);
}

#[test]
fn errors_say_what_was_awaited_and_show_the_conversation() {
    let mut agent = AgentUnderTest::spawn(sh_agent("echo 'on stderr' >&2; read line; sleep 5")).unwrap();
    agent.set_timeout(Duration::from_millis(300));
    let e = agent.initialize().unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Timeout { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("timed out after 300 ms waiting for the answer to request 1"), "{text}");
    assert!(text.contains("> ") && text.contains("\"method\":\"initialize\""), "{text}");
    assert!(text.contains("on stderr"), "{text}");

    let mut gone = AgentUnderTest::spawn(sh_agent("exit 3")).unwrap();
    let e = gone.initialize().unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Closed { .. } | ErrorKind::Io(_)), "{e}");
}

#[test]
fn a_process_left_in_the_agents_session_is_found_and_killed() {
    let marker = format!("sleep 60.{}", std::process::id());
    let mut agent = AgentUnderTest::spawn(sh_agent(&format!("{marker} & exit 0"))).unwrap();
    agent.wait_exit().unwrap();
    let e = agent.assert_no_process_left().unwrap_err();
    let ErrorKind::Leftovers(list) = e.kind() else { panic!("{e}") };
    assert!(list.iter().any(|l| l.cmdline == marker), "{list:?}");
    assert!(e.to_string().contains(&marker));
    // Reported means killed.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && agent.leftovers().iter().any(|l| l.cmdline == marker) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(agent.leftovers().is_empty(), "{:?}", agent.leftovers());
}

#[test]
fn asserting_on_a_running_agent_is_an_error_and_drop_kills_it() {
    let mut agent = AgentUnderTest::spawn_with(sh_agent("sleep 60"), Options::default()).unwrap();
    let pid = agent.pid();
    let e = agent.assert_no_process_left().unwrap_err();
    assert!(e.to_string().contains("still running"), "{e}");
    drop(agent);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
}

fn scratch_dirs(tmp: &std::path::Path, pid: u32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with(&format!("deputy-testkit-agent-{pid}-"))
        })
        .collect()
}

#[test]
fn a_killed_agents_private_home_is_swept_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = ScriptedAgent::new().hang().command();
    cmd.env("TMPDIR", tmp.path());
    let mut first = AgentUnderTest::spawn(cmd).unwrap();
    first.initialize().unwrap();
    let pid = first.pid();
    assert_eq!(scratch_dirs(tmp.path(), pid).len(), 1);
    first.kill();
    assert_eq!(scratch_dirs(tmp.path(), pid).len(), 1, "a killed agent cannot clean up");

    let mut cmd = ScriptedAgent::new().command();
    cmd.env("TMPDIR", tmp.path());
    let mut second = AgentUnderTest::spawn(cmd).unwrap();
    second.initialize().unwrap();
    assert!(scratch_dirs(tmp.path(), pid).is_empty(), "swept when the next agent started");
    let pid2 = second.pid();
    second.close_stdin();
    second.wait_exit().unwrap();
    assert!(scratch_dirs(tmp.path(), pid2).is_empty(), "removed at a clean exit");
}
