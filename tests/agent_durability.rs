//! `deputy agent` when the world is unkind: a full disk under the Deputy
//! home, SIGTERM and SIGHUP, end of input with an approval pending.

mod agent_support;

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use agent_support::*;
use serde_json::json;

/// Whether this test process may make a mount namespace with a tmpfs in it.
fn can_mount_tmpfs() -> Result<(), String> {
    // /proc/self belongs to this process's effective user.
    let uid =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").map_err(|e| e.to_string())?);
    if uid != 0 {
        return Err("not root".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ok = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs \"$1\"", "sh"])
        .arg(dir.path())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if ok.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&ok.stderr).trim().to_owned()) }
}

/// A full `DEPUTY_HOME` used to cut the rollout off silently (exit 0, no
/// word to anyone). The first failed write becomes a `warning` event, once
/// per kind of failure, and the session goes on.
#[test]
fn a_full_deputy_home_gives_one_warning_event() {
    if let Err(why) = can_mount_tmpfs() {
        eprintln!("SKIPPED: needs `unshare -m` and a tmpfs mount (root): {why}");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut s = Spawn::new();
    // The agent runs in a mount namespace of its own where its home is a
    // 1 MiB tmpfs (`unshare` execs: the agent keeps this pid).
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs -o size=1m tmpfs \"$1\" && exec \"$2\" agent --home \"$1\"",
        "sh",
    ])
    .arg(home.path())
    .arg(bin())
    .env_remove("RUST_LOG")
    .env_remove("DEPUTY_HOME");
    s.cmd = cmd;
    let mut a = s.spawn();
    let configured = a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", "before the disk is full");
    a.result(id);
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    assert!(!a.lines.iter().any(|l| l.contains("\"type\":\"warning\"")), "{:?}", a.lines);

    // Fill the tmpfs, seen through the agent's own root.
    let fill = format!("/proc/{}/root{}/fill", a.pid(), home.path().display());
    let mut f = std::fs::File::create(&fill).unwrap_or_else(|e| panic!("{fill}: {e}"));
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let mut small = vec![0u8; 512];
    while f.write_all(&small).is_ok() {}
    small.truncate(1);
    while f.write_all(&small).is_ok() {}
    drop(f);

    // Items bigger than what is left of the rollout's last page.
    let big = "x".repeat(16 * 1024);
    for turn in ["t2", "t3"] {
        let id = a.say(turn, &big);
        a.result(id);
        assert_eq!(a.turn_end(turn)["type"], "task_complete", "the session goes on");
    }
    let warnings: Vec<&String> = a.lines.iter().filter(|l| l.contains("\"type\":\"warning\"")).collect();
    assert_eq!(warnings.len(), 1, "once per kind of failure: {warnings:?}");
    assert!(warnings[0].contains("cannot write the rollout"), "{}", warnings[0]);
    assert!(warnings[0].contains(configured["rollout_path"].as_str().unwrap()), "{}", warnings[0]);
    a.shutdown_and_wait();
}

/// SIGTERM used to kill the agent at once: no turn end, no rollout sync, no
/// `shutdown_complete`. It is a graceful shutdown now, like end of input:
/// the running command is killed (and ends), the turn is aborted, the
/// rollout records it, `shutdown_complete` is the last line, exit 0.
#[test]
fn sigterm_and_sighup_shut_down_gracefully_and_sync_the_rollout() {
    use nix::sys::signal::{Signal, kill};
    for signal in [Signal::SIGTERM, Signal::SIGHUP] {
        let mut a = spawn();
        let configured = a.start(json!({"approval_policy": "never_ask"}));
        let id = a.say("t1", "$ sh -c 'echo $$ > tool.pid; sleep 30'");
        a.result(id);
        a.event("exec_command_begin");
        let tool = read_pid(&a.cwd.join("tool.pid"));
        kill(nix::unistd::Pid::from_raw(a.pid() as i32), signal).unwrap();
        let status = a.wait_exit(Duration::from_secs(5)).expect("exits after the signal");
        assert!(status.success(), "signal {signal:?}: {status:?}\nstderr:\n{}", a.stderr());
        a.drain();
        assert_protocol_lines(&a.lines);
        let end = a.event("exec_command_end");
        assert_eq!(end["msg"]["interrupted"], true);
        let aborted = a.turn_end("t1");
        assert_eq!(aborted["type"], "turn_aborted", "signal {signal:?}");
        assert_eq!(aborted["reason"], "shutdown");
        assert_eq!(a.event("shutdown_complete")["id"], "");
        assert!(a.lines.last().unwrap().contains("shutdown_complete"));
        assert!(wait_gone(tool, Duration::from_secs(1)), "the tool {tool} survived");
        let types = rollout_types(std::path::Path::new(configured["rollout_path"].as_str().unwrap()));
        assert_eq!(types.last().map(String::as_str), Some("turn_aborted"), "signal {signal:?}: {types:?}");
    }
}

/// End of input with an approval pending: the host can no longer answer,
/// but it may still be showing the question; `$/cancelRequest` tells it to
/// close it, as interrupt and shutdown do (deputy-rpc sends it for every
/// request left unanswerable by the end of input).
#[test]
fn eof_with_a_pending_approval_sends_cancel_request() {
    let mut a = spawn();
    a.start(json!({}));
    let id = a.say("t1", "$ touch never");
    a.result(id);
    let req = a.approval();
    a.close_stdin();
    assert!(a.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()));
    a.drain();
    let cancel = a.find("$/cancelRequest", |m| m["method"] == "$/cancelRequest");
    assert_eq!(cancel["params"]["id"], req["id"]);
    assert!(!a.cwd.join("never").exists());
}
