//! Exit statuses of `deputy exec` and `deputy chat` that scripts rely on, and
//! what happens when the reader of our output goes away (a broken pipe).

mod common;

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(5);

#[test]
fn a_turn_that_ends_with_an_error_event_exits_4() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A scenario with no turns: the agent reports `error` and completes the turn.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    deputy(home.path())
        .args(["exec", "--scenario"])
        .arg(&empty)
        .arg("hi")
        .assert()
        .code(4)
        .stderr(contains("error:").and(contains("no turn 1")));
}

#[test]
fn an_unreachable_model_server_exits_4() {
    let home = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let agent = format!("{} agent --model-retry-backoff 10ms", deputy_bin().display());
    let out = deputy(home.path())
        .args(["exec", "--agent", &agent, "--model", "openai:test-model", "--base-url"])
        .arg(format!("http://127.0.0.1:{port}/v1"))
        .arg("hello")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
}

#[test]
fn every_request_denied_exits_5_and_one_allowed_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let patch = "*** Begin Patch\n*** Add File: a.txt\n+a\n*** End Patch\n";
    // A patch denied by --approve exec: nothing was allowed.
    deputy(home.path())
        .args(["exec", "--approve", "exec", "--cwd"])
        .arg(work.path())
        .arg(patch)
        .assert()
        .code(5)
        .stderr(contains("denied"));
    assert!(!work.path().join("a.txt").exists());
    // One command allowed, one patch denied: something ran, so 0.
    deputy(home.path())
        .args(["exec", "--approve", "exec", "--cwd"])
        .arg(work.path())
        .arg(format!("$ echo ran\n{patch}"))
        .assert()
        .code(0)
        .stdout(contains("ran"));
    // No request at all is not "all denied".
    deputy(home.path()).args(["exec", "--approve", "never", "just a message"]).assert().code(0);
}

#[test]
fn chat_exits_with_the_last_turns_status() {
    let home = tempfile::tempdir().unwrap();
    deputy(home.path())
        .args(["chat", "--approve", "never"])
        .write_stdin("$ echo one\n")
        .timeout(Duration::from_secs(30))
        .assert()
        .code(5)
        .stderr(contains("resume it with").and(contains("deputy exec --resume")));
    deputy(home.path())
        .args(["chat", "--approve", "exec"])
        .write_stdin("$ touch /nonexistent-dir/x\n$ echo two\n")
        .timeout(Duration::from_secs(30))
        .assert()
        .code(0);
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario(dir.path(), &[json!({"steps": [{"type": "message", "text": "one"}]})]);
    // The second turn has no scenario line: an error event.
    deputy(home.path())
        .args(["chat", "--scenario"])
        .arg(&scenario)
        .write_stdin("first\nsecond\n")
        .timeout(Duration::from_secs(30))
        .assert()
        .code(4);
    // No turn at all.
    deputy(home.path()).args(["chat"]).write_stdin("").timeout(Duration::from_secs(30)).assert().code(0);
}

/// stdout and stderr as the write end of a pipe whose reader is gone.
fn closed_pipe() -> OwnedFd {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    writer
}

/// Runs `deputy ARGS` with stdout (and stderr, if `both`) on a closed pipe and
/// stdin from `input`; returns the status and how long it took.
fn with_closed_output(
    home: &std::path::Path,
    args: &[&str],
    both: bool,
    input: &[u8],
) -> (Option<i32>, Duration) {
    let pipe = closed_pipe();
    let stdin_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stdin_file.path(), input).unwrap();
    let mut cmd = deputy_std(home);
    cmd.args(args)
        .stdin(std::fs::File::open(stdin_file.path()).unwrap())
        .stdout(Stdio::from(pipe.try_clone().unwrap()))
        .stderr(if both { Stdio::from(pipe) } else { Stdio::null() });
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("deputy {args:?} still runs after {PATIENCE:?} with its output closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), started.elapsed())
}

#[test]
fn a_closed_pipe_ends_exec_and_chat_with_141_and_no_panic() {
    let home = tempfile::tempdir().unwrap();
    for (args, both, input) in [
        (&["exec", "--approve", "never", "$ echo hi"][..], true, &b""[..]),
        (&["exec", "--approve", "exec", "$ echo hi"], false, b""),
        (&["exec", "--json", "--approve", "exec", "$ echo hi"], false, b""),
        (&["chat", "--approve", "exec"], false, b"$ echo one\n$ echo two\n"),
        (&["chat", "--approve", "exec"], true, b"$ echo one\n"),
    ] {
        let (code, took) = with_closed_output(home.path(), args, both, input);
        // 101 would be a panic.
        assert_eq!(code, Some(141), "deputy {args:?} (stderr closed too: {both})");
        eprintln!("deputy {args:?}: exit 141 after {took:?}");
    }
}

#[test]
fn sessions_list_and_show_on_a_closed_pipe_exit_141() {
    let home = tempfile::tempdir().unwrap();
    let first =
        deputy(home.path()).args(["exec", "--json", "--approve", "exec", "$ echo one"]).output().unwrap();
    let line = String::from_utf8(first.stdout).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let id = event["msg"]["session_id"].as_str().unwrap().to_owned();
    for args in [&["sessions", "list"][..], &["sessions", "list", "--json"], &["sessions", "show", &id]] {
        let (code, _) = with_closed_output(home.path(), args, true, b"");
        assert_eq!(code, Some(141), "deputy {args:?}");
    }
}

/// The pipelines from the issue, through a real shell: they end in time, and
/// the status is the honest one (the reader may exit before or after we write).
#[test]
fn shell_pipelines_into_true_end_quickly() {
    let home = tempfile::tempdir().unwrap();
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), "$ echo one\n$ echo two\n").unwrap();
    for (line, allowed) in [
        ("\"$DEPUTY\" exec --approve never '$ echo hi' 2>&1 | true", &[5, 141][..]),
        ("\"$DEPUTY\" sessions list | true", &[0, 141]),
        ("\"$DEPUTY\" chat --approve exec < \"$INPUT\" | true", &[0, 141]),
    ] {
        let started = Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{line}; echo \"status=${{PIPESTATUS[0]}}\""))
            .env("DEPUTY", deputy_bin())
            .env("INPUT", input.path())
            .env("DEPUTY_HOME", home.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        let code: i32 = text.trim().strip_prefix("status=").and_then(|c| c.parse().ok()).unwrap_or(-1);
        assert!(
            allowed.contains(&code),
            "{line}: status {code}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took < PATIENCE, "{line} took {took:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{line}");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef deputy"), ("fish", "complete -c deputy")]
    {
        deputy(home.path())
            .args(["completions", shell])
            .assert()
            .success()
            .stdout(contains(marker).and(contains("exec")).and(contains("sessions")));
    }
    deputy(home.path()).args(["completions", "tcsh"]).assert().code(2);
}
