//! A command that daemonises (fork, setsid, fork: tests/fixtures/daemonize.py)
//! leaves a process that neither its group, nor its session, nor its parent
//! links lead to. `deputy agent` is a child subreaper, so the daemon is
//! re-parented to it, and it must be gone however the command ends: on its
//! own, by interrupt, by shutdown, at stdin EOF, and under `deputy exec`'s
//! Ctrl-C.

mod agent_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_support::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getpgid, getsid};
use serde_json::json;

/// How long a killed daemon may take to be gone (SIGKILL is delivered at
/// once; another core may have to schedule the exit).
const GONE: Duration = Duration::from_secs(2);

fn daemonize_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/daemonize.py")
}

/// The scripted model's line that runs the daemonising command.
fn daemonize(mode: &str) -> String {
    format!("$ python3 -S {} daemon.pid {mode}", daemonize_script().display())
}

/// The daemon's pid; kills it when dropped, so a failing test leaves nothing
/// behind (only if it is still our `sleep`, not a recycled pid).
struct Daemon(i32);

impl Daemon {
    fn from_file(path: &Path) -> Daemon {
        let d = Daemon(read_pid(path));
        // The fixture publishes the pid of a real orphan in a session of its own.
        let pid = Pid::from_raw(d.0);
        assert_eq!(getsid(Some(pid)), getpgid(Some(pid)), "daemon {} is not alone in its session", d.0);
        d
    }

    fn gone(&self) -> bool {
        wait_gone(self.0, GONE)
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

/// The daemon's parent: the agent, once the middle process has exited.
fn ppid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse().ok())
}

#[test]
fn a_daemon_left_by_a_command_that_ended_is_killed_with_the_command() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", &daemonize("exit"));
    a.result(id);
    let end = a.event("exec_command_end");
    assert_eq!(end["msg"]["exit_code"], 0, "{end}");
    assert!(end["msg"]["output"].as_str().unwrap().contains("daemon started"), "{end}");
    let daemon = Daemon::from_file(&a.cwd.join("daemon.pid"));
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    assert!(daemon.gone(), "daemon {} outlived its command (parent {:?})", daemon.0, ppid(daemon.0));
    // The agent is fine afterwards.
    let id = a.say("t2", "$ true");
    a.result(id);
    assert_eq!(a.turn_end("t2")["type"], "task_complete");
    a.shutdown_and_wait();
}

/// The sloppy daemon of a shell one-liner (the issue's `setsid sleep 300 &`):
/// a session of its own, and the command's output pipes still open, so the
/// command's output only ends when the daemon is killed.
#[test]
fn a_shell_daemon_holding_the_output_pipes_is_killed_and_the_turn_ends() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask"}));
    // The outer shell waits for the pid file, so the daemon exists (and has
    // been written down) before the command ends.
    let id = a.say(
        "t1",
        r#"$ sh -c 'setsid sh -c "sleep 300 & echo \$! > d.tmp && mv d.tmp daemon.pid; wait" & while [ ! -f daemon.pid ]; do sleep 0.01; done'"#,
    );
    a.result(id);
    let daemon = Daemon(read_pid(&a.cwd.join("daemon.pid")));
    let end = a.event("exec_command_end");
    assert_eq!(end["msg"]["exit_code"], 0, "{end}");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    assert!(daemon.gone(), "daemon {} outlived its command (parent {:?})", daemon.0, ppid(daemon.0));
    a.shutdown_and_wait();
}

/// Starts a turn whose command daemonises and keeps running; returns the
/// daemon, re-parented to the agent.
fn running_daemon(a: &mut Agent) -> Daemon {
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", &daemonize("stay"));
    a.result(id);
    a.event("exec_command_begin");
    let daemon = Daemon::from_file(&a.cwd.join("daemon.pid"));
    assert_eq!(ppid(daemon.0), Some(a.pid() as i32), "the agent (a subreaper) adopts the daemon");
    daemon
}

#[test]
fn a_daemon_is_killed_on_interrupt() {
    let mut a = spawn();
    let daemon = running_daemon(&mut a);
    let id = a.interrupt("stop");
    a.result(id);
    assert_eq!(a.turn_end("t1")["reason"], "interrupted");
    assert!(daemon.gone(), "daemon {} survived the interrupt", daemon.0);
    a.shutdown_and_wait();
}

#[test]
fn a_daemon_is_killed_on_shutdown() {
    let mut a = spawn();
    let daemon = running_daemon(&mut a);
    a.shutdown_and_wait();
    assert!(daemon.gone(), "daemon {} survived the shutdown", daemon.0);
}

#[test]
fn a_daemon_is_killed_at_stdin_eof() {
    let mut a = spawn();
    let daemon = running_daemon(&mut a);
    a.close_stdin();
    let status = a.wait_exit(Duration::from_secs(5)).expect("exits at EOF");
    assert!(status.success(), "{status:?}\nstderr:\n{}", a.stderr());
    assert!(daemon.gone(), "daemon {} survived the agent's exit at EOF", daemon.0);
}

#[test]
fn deputy_exec_ctrl_c_kills_a_daemon() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["exec", "--json", "--approve", "exec", &daemonize("stay")])
        .env("DEPUTY_HOME", home.path())
        .env_remove("RUST_LOG")
        .env_remove("DEPUTY_BIN")
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon::from_file(&cwd.path().join("daemon.pid"));
    let sent = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    eprintln!("ctrl-c to exit: {:?}", sent.elapsed());
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(daemon.gone(), "daemon {} survived deputy exec's Ctrl-C", daemon.0);
}

/// SIGTERM (a host's polite kill) ends the session gracefully, and the
/// agent's exit path kills what its commands left.
#[test]
fn a_daemon_is_killed_when_the_agent_is_terminated() {
    let mut a = spawn();
    let daemon = running_daemon(&mut a);
    kill(Pid::from_raw(a.pid() as i32), Signal::SIGTERM).unwrap();
    let status = a.wait_exit(Duration::from_secs(5)).expect("exits on SIGTERM");
    assert!(status.code().is_some(), "killed by a signal instead of exiting: {status:?}");
    assert!(daemon.gone(), "daemon {} survived the agent's SIGTERM", daemon.0);
}
