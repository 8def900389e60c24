//! deputy-host driving the real foreign agents as sub-agents: Codex's
//! app-server (`AgentProtocol::Codex`), Claude Code (`AgentProtocol::Claude`)
//! and codex-acp (through the ACP dialect), against the model mocks of
//! `tests/peers_support/mock.rs`, with the same `Conversation` API,
//! approver and cancel ladder as Deputy's own agent — and the ladder's
//! promise: on cancel every process of the agent is gone within the budget,
//! also the commands these agents start in sessions of their own.
//!
//! `tests/peer_codex.rs` and `tests/peer_claude.rs` test the mappers line
//! by line against the same programs; these test the host around them.
//! `DEPUTY_SKIP_PEER_TESTS=1` skips them (the installs: `tests/peers_support`).

mod common;
mod peers_support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deputy_host::{
    AgentCommand, AgentProtocol, ApprovalRequest, ApproveAll, CancellationToken, ChannelApprover,
    Conversation, ConversationConfig, DenyAll, Ending, EventFilter,
};
use deputy_protocol::{
    EventMsg, FileChange, HistorySource, InitialHistory, Op, SessionStartParams, TurnAbortReason,
};
use peers_support::mock::{Api, EXEC_OUTPUT, MESSAGE, ModelMock};
use peers_support::{
    RunDir, claude_bin, claude_command, cmdline, codex_acp_bin, codex_bin, codex_command, skip,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    Codex,
    Claude,
    CodexAcp,
}

/// One real agent in a private folder, against its own mock.
struct Agent {
    which: Which,
    run: RunDir,
    mock: ModelMock,
}

/// The variables `cmd` sets (the peers' helpers clear the rest).
fn set_vars(cmd: &Command) -> impl Iterator<Item = (&std::ffi::OsStr, &std::ffi::OsStr)> {
    cmd.get_envs().filter_map(|(key, value)| Some((key, value?)))
}

/// `cmd` (as the peers' helpers build it) as the host's command.
fn host_command(cmd: &Command) -> AgentCommand {
    let mut agent = AgentCommand::new(cmd.get_program());
    agent.args(cmd.get_args()).env_clear().envs(set_vars(cmd));
    if let Some(dir) = cmd.get_current_dir() {
        agent.current_dir(dir);
    }
    agent
}

impl Agent {
    fn new(which: Which) -> Agent {
        let run = RunDir::new();
        std::fs::write(run.work().join("notes.txt"), "old line\nsecond\n").unwrap();
        let api = if which == Which::Claude { Api::Messages } else { Api::Responses };
        let mock = ModelMock::start(api, &run.work());
        Agent { which, run, mock }
    }

    fn command(&self) -> AgentCommand {
        host_command(&match self.which {
            Which::Codex => codex_command(codex_bin(), &["app-server"], &self.run, self.mock.port),
            // The host adds Claude's protocol flags and its session.
            Which::Claude => claude_command(claude_bin(), &[], &self.run, self.mock.port),
            Which::CodexAcp => codex_command(codex_acp_bin(), &[], &self.run, self.mock.port),
        })
    }

    fn config(&self) -> ConversationConfig {
        let protocol = match self.which {
            Which::Codex => AgentProtocol::Codex,
            Which::Claude => AgentProtocol::Claude,
            Which::CodexAcp => AgentProtocol::Acp,
        };
        ConversationConfig::new(SessionStartParams::new(self.run.work()))
            .protocol(protocol)
            .event_filter(EventFilter::All)
            .handshake_timeout(Duration::from_secs(60))
    }

    async fn spawn(&self, approver: Arc<dyn deputy_host::Approver>) -> Conversation {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG"))
            .with_test_writer()
            .try_init();
        Conversation::spawn(self.command(), self.config(), approver, CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{:?} did not start: {e}", self.which))
    }
}

/// How long one event may take.
const EVENT_WAIT: Duration = Duration::from_secs(60);

async fn next(conv: &mut Conversation) -> deputy_protocol::Event {
    common::conversation::next_within(conv, EVENT_WAIT).await
}

/// Events until the turn `turn` ends (that event included).
async fn turn_events(conv: &mut Conversation, turn: &str) -> Vec<EventMsg> {
    common::conversation::turn_events_within(conv, turn, EVENT_WAIT).await
}

async fn turn(conv: &mut Conversation, prompt: &str) -> Vec<EventMsg> {
    let id = conv.submit(Op::text(prompt)).await.unwrap();
    turn_events(conv, &id).await
}

fn kinds(events: &[EventMsg]) -> Vec<&'static str> {
    events.iter().map(EventMsg::kind).collect()
}

/// Every process under the agent now, remembered in `seen`.
fn tree(conv: &Conversation, seen: &mut HashSet<u32>) -> Vec<u32> {
    let pids = common::descendants(conv.pid());
    seen.extend(pids.iter().copied());
    pids
}

/// Waits until the agent runs the `sleep` scenario's command (`sh -c 'sleep
/// 30; echo done'` and its `sleep`): their pids.
fn command_tree(conv: &Conversation, seen: &mut HashSet<u32>) -> Vec<u32> {
    let mut hits = Vec::new();
    let found = common::wait_until(Duration::from_secs(30), || {
        hits = tree(conv, seen).into_iter().filter(|&p| cmdline(p).contains("sleep 30")).collect();
        hits.len() >= 2
    });
    assert!(found, "the command did not start: {hits:?}");
    hits
}

// ---------------------------------------------------------------------------
// The flows, the same for each agent.

async fn message_turn_and_graceful_shutdown(which: Which) {
    let agent = Agent::new(which);
    // A long budget: this is about the graceful path (stdin closed once no
    // turn runs, the agent exits by itself), not its speed — Claude may
    // take more than the default drain window to exit on a loaded machine.
    let config = agent.config().shutdown_deadline(Duration::from_secs(10));
    let mut conv = Conversation::spawn(agent.command(), config, Arc::new(DenyAll), CancellationToken::new())
        .await
        .unwrap();
    // Codex warns first (no bubblewrap here): its warnings come as events.
    let configured = loop {
        let event = next(&mut conv).await;
        match event.msg {
            EventMsg::SessionConfigured { .. } => break event.msg,
            EventMsg::Warning { .. } | EventMsg::BackgroundEvent { .. } => {}
            other => panic!("before session_configured: {other:?}"),
        }
    };
    let EventMsg::SessionConfigured { session_id, cwd, .. } = &configured else { unreachable!() };
    assert_eq!(session_id, conv.session_id());
    assert_eq!(cwd, &agent.run.work());
    let events = turn(&mut conv, "[scenario:message] say hello").await;
    assert!(
        matches!(events.last(), Some(EventMsg::TaskComplete { last_agent_message: Some(m), .. }) if m == MESSAGE),
        "{events:?}"
    );
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            EventMsg::AgentMessageDelta { delta } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, MESSAGE, "the deltas add up to the message");
    let ending = conv.shutdown().await.unwrap();
    assert!(matches!(ending, Ending::Graceful { .. }), "{which:?}: {ending:?}");
    let mut rest = Vec::new();
    while let Some(e) = conv.next_event().await {
        rest.push(e.msg);
    }
    assert_eq!(rest.last(), Some(&EventMsg::ShutdownComplete), "{rest:?}");
}

async fn approved_command_runs(which: Which) {
    let agent = Agent::new(which);
    let mut conv = agent.spawn(Arc::new(ApproveAll)).await;
    let events = turn(&mut conv, "[scenario:exec] make a marker").await;
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })), "{events:?}");
    let output = events.iter().find_map(|e| match e {
        EventMsg::ExecCommandEnd { exit_code: 0, output, .. } => Some(output.clone()),
        _ => None,
    });
    assert!(output.is_some_and(|o| o.contains(EXEC_OUTPUT)), "{events:?}");
    let begin = kinds(&events).iter().position(|k| *k == "exec_command_begin");
    let end = kinds(&events).iter().position(|k| *k == "exec_command_end");
    assert!(begin.is_some() && begin < end, "{:?}", kinds(&events));
    assert!(agent.run.work().join("ran.txt").exists(), "the approved command ran");
    conv.shutdown().await.unwrap();
}

async fn denied_command_never_runs(which: Which) {
    let agent = Agent::new(which);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let approver = deputy_host::FnApprover::new(move |request: &ApprovalRequest| {
        log.lock().unwrap().push(request.clone());
        deputy_protocol::ReviewDecision::Denied
    });
    let mut conv = agent.spawn(Arc::new(approver)).await;
    let events = turn(&mut conv, "[scenario:exec] make a marker").await;
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })), "the turn goes on: {events:?}");
    assert!(matches!(asked.lock().unwrap().as_slice(), [ApprovalRequest::Exec(_)]), "asked once");
    assert!(!kinds(&events).contains(&"exec_command_begin"), "a denied command has no events");
    assert!(!agent.run.work().join("ran.txt").exists(), "the denied command ran");
    conv.shutdown().await.unwrap();
}

async fn edit_approval_shows_the_diff(which: Which) {
    let agent = Agent::new(which);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let approver = deputy_host::FnApprover::new(move |request: &ApprovalRequest| {
        log.lock().unwrap().push(request.clone());
        deputy_protocol::ReviewDecision::Approved
    });
    let mut conv = agent.spawn(Arc::new(approver)).await;
    let events = turn(&mut conv, "[scenario:edit] fix notes.txt").await;
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })), "{events:?}");
    let asked = asked.lock().unwrap().clone();
    let Some(ApprovalRequest::Patch(p)) = asked.first() else { panic!("{asked:?}") };
    assert_eq!(
        p.changes.get("notes.txt"),
        Some(&FileChange::update("@@ -1,2 +1,2 @@\n-old line\n+new line\n second\n", None)),
        "the approver sees the diff"
    );
    assert_eq!(std::fs::read_to_string(agent.run.work().join("notes.txt")).unwrap(), "new line\nsecond\n");
    assert!(kinds(&events).contains(&"patch_apply_end"), "{:?}", kinds(&events));
    conv.shutdown().await.unwrap();
}

async fn interrupt_during_a_command(which: Which) {
    let agent = Agent::new(which);
    let mut conv = agent.spawn(Arc::new(ApproveAll)).await;
    let id = conv.submit(Op::text("[scenario:sleep] wait")).await.unwrap();
    let mut seen = HashSet::new();
    let command = command_tree(&conv, &mut seen);
    conv.submit(Op::Interrupt).await.unwrap();
    let events = turn_events(&mut conv, &id).await;
    assert!(
        matches!(events.last(), Some(EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. })),
        "{events:?}"
    );
    let begins = kinds(&events).iter().filter(|k| **k == "exec_command_begin").count();
    let ends = kinds(&events).iter().filter(|k| **k == "exec_command_end").count();
    assert_eq!((begins, ends), (1, 1), "every begin has its end before the turn's end: {:?}", kinds(&events));
    assert!(
        common::wait_until(Duration::from_secs(5), || command.iter().all(|&p| !common::alive(p))),
        "{which:?}: the interrupted command outlived its turn: {command:?}"
    );
    // The session goes on.
    let events = turn(&mut conv, "[scenario:message] still there?").await;
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })), "{events:?}");
    conv.shutdown().await.unwrap();
}

async fn cancel_with_a_pending_approval(which: Which) {
    let agent = Agent::new(which);
    let (approver, mut approvals) = ChannelApprover::new(4);
    let mut conv = agent.spawn(Arc::new(approver)).await;
    conv.submit(Op::text("[scenario:exec] make a marker")).await.unwrap();
    let pending = tokio::time::timeout(Duration::from_secs(60), approvals.recv()).await.unwrap().unwrap();
    assert!(matches!(pending.request(), ApprovalRequest::Exec(_)), "{:?}", pending.request());
    let mut seen = HashSet::new();
    tree(&conv, &mut seen);
    let agent_pid = conv.pid();
    conv.cancel().await;
    assert!(pending.token().is_cancelled(), "the approver is told");
    assert!(!pending.respond(deputy_protocol::ReviewDecision::Approved), "a late answer is dropped");
    assert!(!common::alive(agent_pid));
    let left: Vec<u32> = seen.iter().copied().filter(|&p| common::alive(p)).collect();
    assert!(left.is_empty(), "{which:?}: left after cancel: {left:?}");
    // Lower bound: nothing ran in the time a command would have needed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!agent.run.work().join("ran.txt").exists(), "the command ran");
}

/// Cancel while a command runs: the tree — the agent, its helpers, the
/// command in its own session — is dead and reaped when `cancel` returns.
/// Prints the time (the bound is the benchmark's; here: the outcome).
async fn cancel_during_a_command(which: Which) {
    let agent = Agent::new(which);
    let mut conv = agent.spawn(Arc::new(ApproveAll)).await;
    let _turn = conv.submit(Op::text("[scenario:sleep] wait")).await.unwrap();
    let mut seen = HashSet::new();
    let command = command_tree(&conv, &mut seen);
    tree(&conv, &mut seen);
    let agent_pid = conv.pid();
    let started = Instant::now();
    let ending = conv.cancel().await;
    let took = started.elapsed();
    assert!(!common::alive(agent_pid), "{which:?}: the agent survived");
    let left: Vec<(u32, String)> =
        seen.iter().copied().filter(|&p| common::alive(p)).map(|p| (p, cmdline(p))).collect();
    assert!(left.is_empty(), "{which:?}: alive after cancel returned: {left:?} (command {command:?})");
    eprintln!("{which:?}: cancel with a command running → every process gone in {took:?} ({ending:?})");
}

/// A session shut down, then resumed by its id: the same session id, and
/// the agent still knows the conversation (the mock sees the first turn's
/// prompt in the resumed turn's request).
async fn resume_by_session_id(which: Which) {
    let agent = Agent::new(which);
    let mut conv = agent.spawn(Arc::new(DenyAll)).await;
    let first = turn(&mut conv, "[scenario:message] remember the word pelican").await;
    assert!(matches!(first.last(), Some(EventMsg::TaskComplete { .. })), "{first:?}");
    let id = conv.session_id().to_owned();
    conv.shutdown().await.unwrap();

    let mut config = agent.config();
    config.session.initial_history = InitialHistory::Resumed { from: HistorySource::SessionId(id.clone()) };
    let mut conv = Conversation::spawn(agent.command(), config, Arc::new(DenyAll), CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("{which:?} did not resume: {e}"));
    assert_eq!(conv.session_id(), id);
    let before = agent.mock.requests().len();
    let events = turn(&mut conv, "[scenario:message] what was the word?").await;
    assert!(matches!(events.last(), Some(EventMsg::TaskComplete { .. })), "{events:?}");
    let requests = agent.mock.requests();
    let resumed = requests[before..].iter().any(|(_, body)| body.to_string().contains("pelican"));
    assert!(resumed, "{which:?}: the resumed turn's model call lacks the first turn");
    conv.shutdown().await.unwrap();
}

macro_rules! for_each_agent {
    ($($flow:ident),* $(,)?) => {
        mod codex {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $flow() {
                    if crate::skip() {
                        return;
                    }
                    crate::$flow(crate::Which::Codex).await;
                }
            )*
        }
        mod claude {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $flow() {
                    if crate::skip() {
                        return;
                    }
                    crate::$flow(crate::Which::Claude).await;
                }
            )*
        }
    };
}

for_each_agent!(
    message_turn_and_graceful_shutdown,
    approved_command_runs,
    denied_command_never_runs,
    edit_approval_shows_the_diff,
    interrupt_during_a_command,
    cancel_with_a_pending_approval,
    cancel_during_a_command,
    resume_by_session_id,
);

mod codex_acp {
    /// codex-acp, a third-party ACP agent, through the ACP dialect: an
    /// approved command runs and its output comes as events.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn approved_command_runs() {
        if crate::skip() {
            return;
        }
        let agent = crate::Agent::new(crate::Which::CodexAcp);
        let mut conv = agent.spawn(std::sync::Arc::new(deputy_host::ApproveAll)).await;
        let events = crate::turn(&mut conv, "[scenario:exec] make a marker").await;
        assert!(matches!(events.last(), Some(deputy_protocol::EventMsg::TaskComplete { .. })), "{events:?}");
        assert!(agent.run.work().join("ran.txt").exists(), "the approved command ran");
        conv.cancel().await;
    }

    /// It never exits on EOF: the ladder's kill ends it, with the command.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_during_a_command() {
        if crate::skip() {
            return;
        }
        crate::cancel_during_a_command(crate::Which::CodexAcp).await;
    }
}

// ---------------------------------------------------------------------------
// The command line.

/// `deputy exec --agent-protocol codex|claude --json …` with the agent
/// found on `PATH` under its usual name (the default command): Deputy's own
/// events on stdout, each valid against `Event.json`, and the approved
/// command ran.
fn exec_json_with_the_agent_from_path(which: Which) {
    let agent = Agent::new(which);
    let (name, bin, protocol) = match which {
        Which::Codex => ("codex", codex_bin(), "codex"),
        Which::Claude => ("claude", claude_bin(), "claude"),
        Which::CodexAcp => unreachable!(),
    };
    let bin_dir = agent.run.path("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(bin, bin_dir.join(name)).unwrap();
    // The agent's environment, as the helpers make it, reaches it through deputy.
    let template = match which {
        Which::Codex => codex_command(bin, &[], &agent.run, agent.mock.port),
        _ => claude_command(bin, &[], &agent.run, agent.mock.port),
    };
    let home = agent.run.path("deputy_home");
    let mut cmd = common::deputy_std(&home);
    cmd.env_clear().envs(set_vars(&template));
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    cmd.env("PATH", path).env("DEPUTY_HOME", &home).env("NO_COLOR", "1");
    let out = cmd
        .args(["exec", "--agent-protocol", protocol, "--json", "--approve", "exec"])
        .arg("[scenario:exec] make a marker")
        .current_dir(agent.run.work())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{which:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let validator = common::schema_validator("Event");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
    for event in &events {
        assert!(validator.is_valid(event), "not a valid Deputy event: {event}");
        serde_json::from_value::<deputy_protocol::Event>(event.clone()).unwrap();
    }
    let types: Vec<&str> = events.iter().filter_map(|e| e["msg"]["type"].as_str()).collect();
    for kind in
        ["session_configured", "task_started", "exec_command_begin", "exec_command_end", "task_complete"]
    {
        assert!(types.contains(&kind), "{which:?}: no {kind} in {types:?}");
    }
    assert!(agent.run.work().join("ran.txt").exists(), "the approved command ran");
}

mod cli {
    #[test]
    fn codex_exec_json_with_the_agent_from_path() {
        if crate::skip() {
            return;
        }
        crate::exec_json_with_the_agent_from_path(crate::Which::Codex);
    }

    #[test]
    fn claude_exec_json_with_the_agent_from_path() {
        if crate::skip() {
            return;
        }
        crate::exec_json_with_the_agent_from_path(crate::Which::Claude);
    }
}
