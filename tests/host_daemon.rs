//! deputy-host and a daemonising grandchild (fork, setsid, fork): a process
//! that neither the agent's session nor its group nor, once its parent has
//! exited, its parent links lead to from outside.
//!
//! - Under the real `deputy agent` (a child subreaper, so the daemon is
//!   re-parented to it): gone after `Conversation::cancel` and after dropping
//!   the `Conversation`.
//! - Under a third-party agent (the fixture `crates/deputy-host/tests/fixtures/agent.py
//!   --daemon`, which is not a subreaper) run with `AgentCommand::reaped_by`:
//!   gone after a cooperative cancel and after the ladder's kill.
//! - The same fixture without the reaper: the daemon survives the tree kill.
//!   That is the documented limit the reaper exists for; the test keeps the
//!   reaper tests honest (they would pass vacuously if the daemon died anyway).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deputy_host::{AgentCommand, ApproveAll, CancellationToken, Conversation, ConversationConfig, Ending};
use deputy_protocol::{ApprovalPolicy, EventMsg, Op, SessionStartParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getpgid, getsid};

/// How long a killed daemon may take to be gone.
const GONE: Duration = Duration::from_secs(2);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deputy_agent(home: &Path) -> AgentCommand {
    let mut cmd = AgentCommand::new(env!("CARGO_BIN_EXE_deputy"));
    cmd.arg("agent").arg("--home").arg(home).env_remove("RUST_LOG").env_remove("DEPUTY_HOME");
    cmd
}

/// The third-party fixture agent, starting a daemon that writes its pid to `pidfile`.
fn fixture(pidfile: &Path, extra: &[&str]) -> AgentCommand {
    let mut cmd = AgentCommand::new("python3");
    cmd.arg("-S")
        .arg(repo().join("crates/deputy-host/tests/fixtures/agent.py"))
        .arg("--daemon")
        .arg(repo().join("tests/fixtures/daemonize.py"))
        .arg("--daemon-pidfile")
        .arg(pidfile)
        .args(extra);
    cmd
}

fn config(cwd: &Path) -> ConversationConfig {
    let mut session = SessionStartParams::new(cwd.canonicalize().unwrap());
    session.approval_policy = ApprovalPolicy::NeverAsk;
    ConversationConfig::new(session).handshake_timeout(Duration::from_secs(10))
}

async fn spawn(cmd: AgentCommand, cwd: &Path) -> Conversation {
    Conversation::spawn(cmd, config(cwd), Arc::new(ApproveAll), CancellationToken::new())
        .await
        .expect("spawn")
}

/// Whether a process is gone (no such pid, or a zombie).
fn process_gone(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => deputy_proctree::parse_stat(&stat).is_some_and(|p| p.is_zombie()),
    }
}

/// The daemon's pid; kills it when dropped, so a failing test (or the
/// survival test) leaves nothing behind (only if it is still our `sleep`).
struct Daemon(i32);

impl Daemon {
    /// Waits for the pid file, which is written once the daemon is an orphan
    /// alone in its own session.
    async fn from_file(path: &Path) -> Daemon {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read_to_string(path)
                && let Ok(pid) = s.trim().parse()
            {
                let d = Daemon(pid);
                let p = Pid::from_raw(pid);
                assert_eq!(getsid(Some(p)), getpgid(Some(p)), "daemon {pid} is not alone in its session");
                return d;
            }
            assert!(Instant::now() < deadline, "no pid in {}", path.display());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn gone(&self) -> bool {
        let deadline = Instant::now() + GONE;
        while !process_gone(self.0) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn parent(&self) -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.0)).unwrap_or_default();
        if comm.trim() == "sleep" && !process_gone(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

fn daemonize_command() -> String {
    format!("$ python3 -S {} daemon.pid stay", repo().join("tests/fixtures/daemonize.py").display())
}

/// Runs a turn whose command daemonises and stays running; returns the
/// daemon once `deputy agent` has adopted it.
async fn agent_with_a_daemon(home: &Path, cwd: &Path) -> (Conversation, Daemon) {
    let conv = spawn(deputy_agent(home), cwd).await;
    conv.submit_with_id("turn-1", Op::text(daemonize_command())).await.unwrap();
    let daemon = Daemon::from_file(&cwd.join("daemon.pid")).await;
    assert_eq!(daemon.parent(), Some(conv.pid() as i32), "deputy agent (a subreaper) adopts the daemon");
    (conv, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_cancel_kills_a_daemon_of_deputy_agent() {
    let (home, cwd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut conv, daemon) = agent_with_a_daemon(home.path(), cwd.path()).await;
    let ending = conv.cancel().await;
    eprintln!("cancel: {ending:?}");
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    assert!(daemon.gone().await, "daemon {} survived the cancel", daemon.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_conversation_kills_a_daemon_of_deputy_agent() {
    let (home, cwd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (conv, daemon) = agent_with_a_daemon(home.path(), cwd.path()).await;
    // The agent gets no chance to clean up: it is SIGKILLed in drop, so only
    // the host's kill of the agent's descendants reaches the daemon.
    drop(conv);
    assert!(daemon.gone().await, "daemon {} survived dropping the conversation", daemon.0);
}

/// The fixture agent with a daemon, in a turn that hangs; the daemon's
/// parent is the reaper if `reaped`, else not the agent (it was orphaned).
async fn fixture_with_a_daemon(cmd: AgentCommand, dir: &Path, reaped: bool) -> (Conversation, Daemon) {
    let mut conv = spawn(cmd, dir).await;
    let daemon = Daemon::from_file(&dir.join("daemon.pid")).await;
    let parent = daemon.parent();
    if reaped {
        assert_eq!(parent, Some(conv.pid() as i32), "the reaper adopts the daemon");
    } else {
        assert_ne!(parent, Some(conv.pid() as i32));
    }
    conv.submit_with_id("turn-1", Op::text("hi")).await.unwrap();
    let started = tokio::time::timeout(Duration::from_secs(10), conv.next_event()).await.unwrap();
    assert!(matches!(started.map(|e| e.msg), Some(EventMsg::TaskStarted { .. })));
    (conv, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaped_third_party_agent_cancel_kills_its_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("daemon.pid");
    let mut cmd = fixture(&pidfile, &["--hang-turn"]);
    cmd.reaped_by(env!("CARGO_BIN_EXE_deputy"));
    let (mut conv, daemon) = fixture_with_a_daemon(cmd, dir.path(), true).await;
    let ending = conv.cancel().await;
    eprintln!("reaped cooperative fixture: {ending:?}");
    assert!(matches!(ending, Ending::Graceful { .. }), "{ending:?}");
    assert!(daemon.gone().await, "daemon {} survived the cancel", daemon.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaped_stubborn_third_party_agent_is_killed_with_its_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("daemon.pid");
    let mut cmd = fixture(&pidfile, &["--hang-turn", "--stubborn"]);
    cmd.reaped_by(env!("CARGO_BIN_EXE_deputy"));
    let (mut conv, daemon) = fixture_with_a_daemon(cmd, dir.path(), true).await;
    let ending = conv.cancel().await;
    eprintln!("reaped stubborn fixture: {ending:?}");
    assert!(matches!(ending, Ending::Killed { .. }), "{ending:?}");
    assert!(daemon.gone().await, "daemon {} survived the kill", daemon.0);
}

/// The limit the reaper is for: a plain third-party agent's daemon is
/// re-parented away (to init, or to whichever subreaper is above the test)
/// and nothing the host can see from the agent leads to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_reaper_a_third_party_agents_daemon_survives_the_tree_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("daemon.pid");
    let cmd = fixture(&pidfile, &["--hang-turn", "--stubborn"]);
    let (mut conv, daemon) = fixture_with_a_daemon(cmd, dir.path(), false).await;
    let ending = conv.cancel().await;
    assert!(matches!(ending, Ending::Killed { .. }), "{ending:?}");
    // Lower bound on survival: still there well after the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!process_gone(daemon.0), "daemon {} was killed without the reaper", daemon.0);
    // `daemon` is killed by its guard.
}
