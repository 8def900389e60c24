//! deputy-host's ACP dialect, and `deputy exec --agent-protocol acp`,
//! driving real ACP agents: an agent written with the official TypeScript
//! SDK (`tests/fixtures/acp/agent.mjs`, with a stubborn variant), and
//! Deputy's own ACP face (`deputy agent --protocol acp`).
//!
//! Needs node and npm (the SDK is installed once into the test cache, see
//! `common/npm.rs`); `DEPUTY_SKIP_NODE_TESTS=1` skips these tests and says so.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::npm::{acp_sdk_entry, skip_node_tests};
use common::*;
use deputy_host::{
    AgentCommand, AgentProtocol, ApprovalRequest, ApproveAll, Approver, CancellationToken, ChannelApprover,
    Conversation, ConversationConfig, DenyAll, Ending, EventFilter, FnApprover, HostError,
};
use deputy_protocol::{
    Event, EventMsg, FileChange, HistorySource, InitialHistory, ModelSelection, Op, ReviewDecision,
    SessionStartParams, TurnAbortReason,
};
use serde_json::Value;

fn fixture_agent(extra: &[&str]) -> AgentCommand {
    let mut cmd = AgentCommand::new("node");
    cmd.arg(repo_root().join("tests/fixtures/acp/agent.mjs")).args(extra).env("ACP_SDK", acp_sdk_entry());
    cmd
}

fn deputy_acp_face(home: &Path) -> AgentCommand {
    let mut cmd = AgentCommand::new(deputy_bin());
    cmd.args(["agent", "--protocol", "acp", "--home"])
        .arg(home)
        .env_remove("RUST_LOG")
        .env_remove("DEPUTY_HOME");
    cmd
}

fn config(cwd: &Path) -> ConversationConfig {
    ConversationConfig::new(SessionStartParams::new(cwd.canonicalize().unwrap()))
        .protocol(AgentProtocol::Acp)
        .event_filter(EventFilter::All)
}

/// The fixture agent, spawned with the default config in `cwd`.
async fn spawn_fixture(cwd: &Path, approver: impl Approver + 'static) -> Conversation {
    Conversation::spawn(fixture_agent(&[]), config(cwd), Arc::new(approver), CancellationToken::new())
        .await
        .unwrap()
}

/// How long one event may take.
const EVENT_WAIT: Duration = Duration::from_secs(20);

async fn next(conv: &mut Conversation) -> Event {
    common::conversation::next_within(conv, EVENT_WAIT).await
}

/// Events until the turn `turn` ends (that event included).
async fn turn_events(conv: &mut Conversation, turn: &str) -> Vec<EventMsg> {
    common::conversation::turn_events_within(conv, turn, EVENT_WAIT).await
}

fn exec_output(events: &[EventMsg]) -> Option<(i32, String)> {
    events.iter().find_map(|e| match e {
        EventMsg::ExecCommandEnd { exit_code, output, .. } => Some((*exit_code, output.clone())),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_runs_turns_with_approvals_against_the_sdk_agent() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let approver = FnApprover::new(|r: &ApprovalRequest| match r {
        ApprovalRequest::Exec(p) if p.command.join(" ").contains("touch") => ReviewDecision::Denied,
        _ => ReviewDecision::Approved,
    });
    let mut conv = spawn_fixture(cwd.path(), approver).await;
    assert_eq!(conv.session_id(), "fixture-1");
    assert_eq!(conv.agent_info().agent_info.name, "deputy-acp-fixture");

    // A message: streamed deltas, then the whole message, then the turn's end.
    let turn = conv.submit_with_id("t1", Op::text("hello from the host")).await.unwrap();
    assert_eq!(turn, "t1");
    let events = turn_events(&mut conv, "t1").await;
    assert!(
        matches!(&events[0], EventMsg::SessionConfigured { session_id, .. } if session_id == "fixture-1"),
        "{events:?}"
    );
    assert!(matches!(&events[1], EventMsg::TaskStarted { turn_id, .. } if turn_id == "t1"), "{events:?}");
    assert!(
        events.contains(&EventMsg::AgentMessage { message: "echo: hello from the host".into() }),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(EventMsg::TaskComplete { last_agent_message: Some(m), .. }) if m == "echo: hello from the host")
    );

    // An approved command: its argv, output and exit code.
    let turn = conv.submit(Op::text("run echo approved-output; exit 3")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    let begin = events.iter().find_map(|e| match e {
        EventMsg::ExecCommandBegin { command, .. } => Some(command.clone()),
        _ => None,
    });
    assert_eq!(begin, Some(vec!["sh".into(), "-c".into(), "echo approved-output; exit 3".into()]));
    assert_eq!(exec_output(&events), Some((3, "approved-output\n".into())));

    // A denied command never runs, and shows no exec events.
    let turn = conv.submit(Op::text("run touch sentinel")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    assert!(!events.iter().any(|e| matches!(e, EventMsg::ExecCommandBegin { .. })), "{events:?}");
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })));
    assert!(!cwd.path().join("sentinel").exists(), "a denied command ran");

    // An approved edit: a patch with the change, and the file written.
    std::fs::write(cwd.path().join("notes.txt"), "old line\n").unwrap();
    let turn = conv.submit(Op::text("edit notes.txt new line")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    let changes = events.iter().find_map(|e| match e {
        EventMsg::PatchApplyBegin { changes, auto_approved: false, .. } => Some(changes.clone()),
        _ => None,
    });
    match changes.as_ref().and_then(|c| c.get("notes.txt")) {
        Some(FileChange::Update { unified_diff, .. }) => {
            assert!(unified_diff.contains("-old line\n+new line\n"), "{unified_diff}")
        }
        other => panic!("no update of notes.txt in {events:?}: {other:?}"),
    }
    assert!(events.iter().any(|e| matches!(e, EventMsg::PatchApplyEnd { success: true, .. })));
    assert_eq!(std::fs::read_to_string(cwd.path().join("notes.txt")).unwrap(), "new line\n");

    // Another kind of tool: a generic approval, shown as a background event.
    let turn = conv.submit(Op::text("fetch https://example.invalid/")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    assert!(
        events.contains(&EventMsg::BackgroundEvent {
            message: "fetch `Fetch https://example.invalid/`: completed".into()
        }),
        "{events:?}"
    );

    let ending = conv.shutdown().await.unwrap();
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_all_selects_a_reject_option_and_other_tools_are_denied_by_default() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let log = cwd.path().join("answers.jsonl");
    let mut agent = fixture_agent(&[]);
    agent.env("ACP_LOG", &log);
    let mut conv =
        Conversation::spawn(agent, config(cwd.path()), Arc::new(DenyAll), CancellationToken::new())
            .await
            .unwrap();
    let turn = conv.submit(Op::text("run touch sentinel")).await.unwrap();
    turn_events(&mut conv, &turn).await;
    // An approver that knows nothing of other tools denies them.
    struct ExecOnly;
    #[deputy_host::async_trait]
    impl deputy_host::Approver for ExecOnly {
        async fn approve_exec(
            &self,
            _: deputy_protocol::ExecApprovalParams,
            _: deputy_host::ApprovalContext,
        ) -> ReviewDecision {
            ReviewDecision::Approved
        }
        async fn approve_patch(
            &self,
            _: deputy_protocol::PatchApprovalParams,
            _: deputy_host::ApprovalContext,
        ) -> ReviewDecision {
            ReviewDecision::Approved
        }
    }
    conv.shutdown().await.unwrap();
    let mut agent = fixture_agent(&[]);
    agent.env("ACP_LOG", &log);
    let mut conv =
        Conversation::spawn(agent, config(cwd.path()), Arc::new(ExecOnly), CancellationToken::new())
            .await
            .unwrap();
    let turn = conv.submit(Op::text("fetch https://example.invalid/")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    // Refused, it never ran: nothing but the turn's start and end.
    assert!(!events.iter().any(|e| matches!(e, EventMsg::BackgroundEvent { .. })), "{events:?}");
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })), "{events:?}");
    conv.shutdown().await.unwrap();
    let answers: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Denials select the reject option: the `cancelled` outcome would end the turn.
    assert_eq!(
        answers,
        vec![
            serde_json::json!({ "outcome": { "outcome": "selected", "optionId": "no" } }),
            serde_json::json!({ "outcome": { "outcome": "selected", "optionId": "no" } }),
        ]
    );
    assert!(!cwd.path().join("sentinel").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_with_a_pending_permission_answers_cancelled_and_tells_the_approver() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let log = cwd.path().join("answers.jsonl");
    let mut agent = fixture_agent(&[]);
    agent.env("ACP_LOG", &log);
    let (approver, mut approvals) = ChannelApprover::new(4);
    let mut conv =
        Conversation::spawn(agent, config(cwd.path()), Arc::new(approver), CancellationToken::new())
            .await
            .unwrap();
    let turn = conv.submit(Op::text("run touch sentinel")).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(20), approvals.recv()).await.unwrap().unwrap();
    assert!(
        matches!(pending.request(), ApprovalRequest::Exec(p) if p.command.last().unwrap() == "touch sentinel")
    );
    conv.submit(Op::Interrupt).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), pending.cancelled())
        .await
        .expect("the approver was not told");
    let events = turn_events(&mut conv, &turn).await;
    assert!(
        matches!(events.last(), Some(EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. })),
        "{events:?}"
    );
    conv.shutdown().await.unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), r#"{"outcome":{"outcome":"cancelled"}}"#);
    assert!(!cwd.path().join("sentinel").exists());
}

/// A caller that reads no events until its approval came still gets it:
/// the room for events is counted in events (512 by default), not in
/// batches, so twenty updates written one by one before the permission
/// request (handed over in order after them) do not stall the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_after_many_small_writes_reaches_a_caller_that_reads_no_events_yet() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let (approver, mut approvals) = ChannelApprover::new(4);
    let mut conv = spawn_fixture(cwd.path(), approver).await;
    let turn = conv.submit(Op::text("chatty 20 echo after-the-chatter")).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(20), approvals.recv())
        .await
        .expect("the approval never came while the events were unread")
        .unwrap();
    assert!(pending.respond(ReviewDecision::Approved));
    let events = turn_events(&mut conv, &turn).await;
    let chunks = events.iter().filter(|e| matches!(e, EventMsg::AgentMessageDelta { .. })).count();
    assert_eq!(chunks, 20, "{events:?}");
    assert_eq!(exec_output(&events), Some((0, "after-the-chatter\n".to_owned())));
    conv.shutdown().await.unwrap();
}

/// The pid of a live `sleep SECONDS` under `root`.
fn find_sleep(root: u32, seconds: &str) -> Option<u32> {
    descendants(root).into_iter().find(|&pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c == format!("sleep\0{seconds}\0").as_bytes())
    })
}

/// Starts a turn running `sleep 30` and waits until it runs: its turn id
/// and the sleep's pid.
async fn start_sleep_30(conv: &mut Conversation) -> (String, u32) {
    let turn = conv.submit(Op::text("run sleep 30")).await.unwrap();
    while !matches!(next(conv).await.msg, EventMsg::ExecCommandBegin { .. }) {}
    let mut sleep = None;
    assert!(wait_until(Duration::from_secs(10), || {
        sleep = find_sleep(conv.pid(), "30");
        sleep.is_some()
    }));
    (turn, sleep.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_during_a_command_aborts_the_turn_and_the_command_dies() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let mut conv = spawn_fixture(cwd.path(), ApproveAll).await;
    let (turn, sleep) = start_sleep_30(&mut conv).await;
    conv.submit(Op::Interrupt).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    assert!(events.iter().any(|e| matches!(e, EventMsg::ExecCommandEnd { .. })), "{events:?}");
    assert!(matches!(events.last(), Some(EventMsg::TurnAborted { .. })), "{events:?}");
    assert!(wait_until(Duration::from_secs(5), || !alive(sleep)), "the command outlived the interrupt");
    // The session goes on.
    let turn = conv.submit(Op::text("still here?")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })), "{events:?}");
    conv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stubborn_agent_is_killed_with_its_tree_within_the_budget() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let pidfile = cwd.path().join("grandchild.pid");
    let mut agent = fixture_agent(&["--stubborn"]);
    agent.env("ACP_PIDFILE", &pidfile);
    let mut conv =
        Conversation::spawn(agent, config(cwd.path()), Arc::new(ApproveAll), CancellationToken::new())
            .await
            .unwrap();
    let agent_pid = conv.pid();
    let (_turn, sleep) = start_sleep_30(&mut conv).await;
    let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(alive(grandchild));
    let started = Instant::now();
    let ending = conv.cancel().await;
    let took = started.elapsed();
    // It ignores session/cancel, the EOF and SIGTERM: only the kill ends it.
    assert!(ending.was_killed(), "{ending:?}");
    assert!(took >= Duration::from_millis(200), "killed before the drain window ended: {took:?}");
    assert!(!alive(agent_pid), "the agent survived");
    assert!(!alive(grandchild), "the agent's grandchild (its own session) survived");
    assert!(!alive(sleep), "the running command survived");
    eprintln!("stubborn ACP agent: tree dead and reaped {took:?} after cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_drives_deputys_own_acp_face_and_resumes_by_session_id() {
    if skip_node_tests() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut conv = Conversation::spawn(
        deputy_acp_face(home.path()),
        config(cwd.path()),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let session_id = conv.session_id().to_owned();
    let turn = conv.submit(Op::text("$ echo via-acp")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    assert_eq!(exec_output(&events).map(|(c, o)| (c, o.trim().to_owned())), Some((0, "via-acp".into())));
    let patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello from a patch\n*** End Patch";
    let turn = conv.submit(Op::text(patch)).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    assert!(
        events.iter().any(
            |e| matches!(e, EventMsg::PatchApplyBegin { changes, .. } if changes.contains_key("hello.txt"))
        ),
        "{events:?}"
    );
    assert_eq!(std::fs::read_to_string(cwd.path().join("hello.txt")).unwrap(), "hello from a patch\n");
    conv.shutdown().await.unwrap();

    // Resume it in a new process: session/load, the same id, and it goes on.
    let mut config = config(cwd.path());
    config.session.initial_history =
        InitialHistory::Resumed { from: HistorySource::SessionId(session_id.clone()) };
    let mut conv = Conversation::spawn(
        deputy_acp_face(home.path()),
        config,
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(conv.session_id(), session_id);
    let turn = conv.submit(Op::text("after the resume")).await.unwrap();
    let events = turn_events(&mut conv, &turn).await;
    // Nothing of the replay is shown as this turn's events.
    assert!(exec_output(&events).is_none(), "{events:?}");
    assert!(events.contains(&EventMsg::AgentMessage { message: "after the resume".into() }), "{events:?}");
    conv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_acp_cannot_carry_are_refused_before_anything_is_sent_after_initialize() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let mut config = config(cwd.path());
    config.session.model = Some(ModelSelection::named("shell"));
    let err = Conversation::spawn(fixture_agent(&[]), config, Arc::new(ApproveAll), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(&err, HostError::Unsupported { what, .. } if what.contains("model")), "{err}");
    // The fixture offers no session/load.
    let mut config = self::config(cwd.path());
    config.session.initial_history = InitialHistory::Resumed { from: HistorySource::SessionId("x".into()) };
    let err = Conversation::spawn(fixture_agent(&[]), config, Arc::new(ApproveAll), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(&err, HostError::Unsupported { what, .. } if what.contains("session/load")), "{err}");
}

// ---------------------------------------------------------------------------
// The command line.

fn exec_acp(home: &Path, work: &Path, agent: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = deputy_std(home);
    cmd.args(["exec", "--agent-protocol", "acp"]).current_dir(work).env("ACP_SDK", acp_sdk_entry());
    if let Some(agent) = agent {
        cmd.args(["--agent", agent]);
    }
    cmd.args(args).output().unwrap()
}

fn fixture_command_line(extra: &str) -> String {
    format!("node {} {extra}", repo_root().join("tests/fixtures/acp/agent.mjs").display())
}

#[test]
fn exec_json_prints_deputys_events_whatever_the_agent_speaks() {
    if skip_node_tests() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let validator = schema_validator("Event");
    let agent = fixture_command_line("");
    let out = exec_acp(
        home.path(),
        work.path(),
        Some(&agent),
        &["--json", "--approve", "exec", "run echo from-cli"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    for event in &events {
        assert!(validator.is_valid(event), "not a valid Deputy event: {event}");
        serde_json::from_value::<Event>(event.clone()).unwrap();
    }
    let types: Vec<&str> = events.iter().map(|e| e["msg"]["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["session_configured", "task_started", "exec_command_begin", "exec_command_end", "task_complete"]
    );
    assert_eq!(events[3]["msg"]["output"], "from-cli\n");

    // Denied by --approve: exit 5, nothing ran.
    let out = exec_acp(home.path(), work.path(), Some(&agent), &["--approve", "never", "run touch sentinel"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!work.path().join("sentinel").exists());

    // Deputy's own agent in ACP mode, the default without --agent.
    let out = exec_acp(home.path(), work.path(), None, &["--approve", "exec", "$ echo from-the-face"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-the-face"));
}

#[test]
fn exec_refuses_flags_acp_cannot_carry_and_reports_an_agent_that_exits_at_once() {
    if skip_node_tests() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let agent = fixture_command_line("");
    let out = exec_acp(home.path(), work.path(), Some(&agent), &["--model", "shell", "hello"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ACP agents cannot be given a model selection"));

    let out =
        exec_acp(home.path(), work.path(), Some("sh -c 'echo no-such-agent-here >&2; exit 3'"), &["hello"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-agent-here"), "the agent's stderr tail is missing: {stderr}");
}

#[test]
fn exec_ctrl_c_ends_a_stubborn_agent_and_its_tree() {
    if skip_node_tests() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let pidfile: PathBuf = work.path().join("grandchild.pid");
    let mut child = deputy_std(home.path())
        .args(["exec", "--agent-protocol", "acp", "--approve", "exec", "--agent"])
        .arg(fixture_command_line("--stubborn"))
        .arg("run sleep 30")
        .current_dir(work.path())
        .env("ACP_SDK", acp_sdk_entry())
        .env("ACP_PIDFILE", &pidfile)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exec_pid = child.id();
    let mut sleep = None;
    assert!(wait_until(Duration::from_secs(20), || {
        sleep = find_sleep(exec_pid, "30");
        sleep.is_some()
    }));
    let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(exec_pid as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!alive(grandchild), "the stubborn agent's grandchild survived");
    assert!(!alive(sleep.unwrap()), "the command survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_is_not_reading_events_can_still_submit() {
    if skip_node_tests() {
        return;
    }
    let cwd = tempfile::tempdir().unwrap();
    let mut conv = Conversation::spawn(
        fixture_agent(&[]),
        config(cwd.path()).event_capacity(1),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // The channel fills with the first turn's events; nobody reads them.
    conv.submit_with_id("t1", Op::text("flood 50")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A submission never waits for the caller to read: it is taken, or
    // refused because the first turn has not ended yet as far as the
    // caller's events go.
    let second = tokio::time::timeout(Duration::from_secs(5), conv.submit_with_id("t2", Op::text("again")))
        .await
        .expect("submit waited for the caller to read events");
    let events = turn_events(&mut conv, "t1").await;
    assert_eq!(events.iter().filter(|e| matches!(e, EventMsg::AgentMessageDelta { .. })).count(), 50);
    match second {
        Ok(_) => {
            assert!(matches!(turn_events(&mut conv, "t2").await.last(), Some(EventMsg::TaskComplete { .. })))
        }
        Err(HostError::Rejected { error, .. }) => {
            assert_eq!(error.code, deputy_protocol::error_codes::TURN_IN_PROGRESS)
        }
        Err(e) => panic!("{e}"),
    }
    conv.shutdown().await.unwrap();
}
