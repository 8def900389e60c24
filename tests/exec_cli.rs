//! `deputy exec` end to end: the real binary runs the real `deputy agent`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use predicates::prelude::*;
use predicates::str::contains;
use serde_json::{Value, json};

fn events(stdout: &[u8]) -> Vec<Value> {
    let validator = schema_validator("Event");
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|line| {
            let event: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
            let errors: Vec<String> = validator.iter_errors(&event).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{line} does not match the Event schema: {errors:?}");
            event
        })
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["msg"]["type"].as_str().unwrap()).collect()
}

#[test]
fn approve_exec_runs_the_command_and_exits_0() {
    let home = tempfile::tempdir().unwrap();
    deputy(home.path())
        .args(["exec", "--approve", "exec", "$ echo hello from a sub-agent"])
        .assert()
        .success()
        .stdout(contains("hello from a sub-agent"))
        .stdout(contains("exit 0"));
}

#[test]
fn json_output_is_only_schema_valid_events() {
    let home = tempfile::tempdir().unwrap();
    let out = deputy(home.path()).args(["exec", "--json", "--approve", "all", "$ echo hi"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let events = events(&out.stdout);
    let kinds = types(&events);
    assert_eq!(kinds.first(), Some(&"session_configured"), "{kinds:?}");
    assert!(kinds.contains(&"exec_command_begin") && kinds.contains(&"exec_command_end"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"task_complete"), "{kinds:?}");
    let end = events.iter().find(|e| e["msg"]["type"] == "exec_command_end").unwrap();
    assert_eq!(end["msg"]["exit_code"], 0);
    assert!(end["msg"]["output"].as_str().unwrap().contains("hi"));
}

#[test]
fn approve_never_denies_and_the_command_never_runs() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    deputy(home.path())
        .args(["exec", "--approve", "never", "--cwd"])
        .arg(work.path())
        .arg(format!("$ touch {}", sentinel.display()))
        .assert()
        .code(5)
        .stderr(contains("denied").and(contains("nothing the agent asked for was allowed")));
    assert!(!sentinel.exists());
}

#[test]
fn without_a_terminal_or_approve_it_denies_and_says_how_to_allow() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    deputy(home.path())
        .args(["exec", "--cwd"])
        .arg(work.path())
        .arg(format!("$ touch {}", sentinel.display()))
        .write_stdin("")
        .assert()
        .code(5)
        .stderr(contains("--approve exec"));
    assert!(!sentinel.exists());
}

#[test]
fn approve_patch_applies_patches_but_not_commands() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let prompt = format!(
        "$ touch {}\n*** Begin Patch\n*** Add File: hello.txt\n+hi there\n*** End Patch\n",
        work.path().join("sentinel").display()
    );
    deputy(home.path())
        .args(["exec", "--approve", "patch", "--cwd"])
        .arg(work.path())
        .arg(prompt)
        .assert()
        .success()
        .stdout(contains("hello.txt"));
    assert_eq!(std::fs::read_to_string(work.path().join("hello.txt")).unwrap(), "hi there\n");
    assert!(!work.path().join("sentinel").exists());
}

#[test]
fn prompt_from_stdin() {
    let home = tempfile::tempdir().unwrap();
    deputy(home.path())
        .args(["exec", "--approve", "exec", "-"])
        .write_stdin("$ echo from-stdin\n")
        .assert()
        .success()
        .stdout(contains("from-stdin"));
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().unwrap();
    deputy(home.path()).args(["exec", "--approve", "sometimes", "x"]).assert().code(2);
    deputy(home.path()).args(["exec", "--timeout", "soon", "x"]).assert().code(2);
    deputy(home.path()).args(["exec", "   "]).assert().code(2).stderr(contains("empty"));
    deputy(home.path())
        .args(["exec", "--cwd", "/definitely/not/here", "x"])
        .assert()
        .code(2)
        .stderr(contains("--cwd"));
    deputy(home.path()).args(["exec", "--resume", "a", "--fork", "b", "x"]).assert().code(2);
}

#[test]
fn a_bad_agent_command_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    deputy(home.path())
        .args(["exec", "--agent", "/no/such/agent --flag", "hi"])
        .assert()
        .code(1)
        .stderr(contains("failed to start the agent").and(contains("/no/such/agent")));
    deputy(home.path()).args(["exec", "--agent", "'unbalanced", "hi"]).assert().code(2);
}

#[test]
fn an_agent_that_crashes_mid_turn_reports_its_stderr() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario(
        dir.path(),
        &[json!({"steps": [
            {"type": "message", "text": "about to crash"},
            {"type": "exit", "code": 7, "stderr": "the scripted agent fell over"}
        ]})],
    );
    deputy(home.path())
        .args(["exec", "--scenario"])
        .arg(&scenario)
        .arg("go")
        .assert()
        .code(1)
        .stderr(contains("the scripted agent fell over"))
        .stderr(contains("exit"));
}

/// On a terminal, approvals are asked: `y` runs the command, `b` aborts the
/// turn (exit 3) and the command never runs.
#[test]
fn on_a_terminal_approvals_are_asked() {
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("import pty")
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("skipped: python3 with pty is not available");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    let drive = |answer: &str| {
        std::process::Command::new("python3")
            .arg(repo_root().join("tests/fixtures/pty_drive.py"))
            .arg(answer)
            .arg(deputy_bin())
            .args(["exec", "--cwd"])
            .arg(work.path())
            .arg(format!("$ touch {}", sentinel.display()))
            .env("DEPUTY_HOME", home.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let out = drive("b");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("allow `touch"), "{text}");
    assert!(!sentinel.exists());

    let out = drive("y");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(sentinel.exists(), "{text}");
}

#[test]
fn timeout_cancels_through_the_ladder_and_exits_124() {
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    deputy(home.path())
        .args(["exec", "--approve", "exec", "--timeout", "1s", "$ sleep 30"])
        .timeout(Duration::from_secs(20))
        .assert()
        .code(124)
        .stderr(contains("timed out"));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[test]
fn resume_and_fork_continue_a_session() {
    let home = tempfile::tempdir().unwrap();
    let first =
        deputy(home.path()).args(["exec", "--json", "--approve", "exec", "$ echo one"]).output().unwrap();
    assert!(first.status.success());
    let first = events(&first.stdout);
    let session_id = first[0]["msg"]["session_id"].as_str().unwrap().to_owned();
    assert_eq!(first[0]["msg"]["history_len"], 0);

    let resumed = deputy(home.path())
        .args(["exec", "--json", "--approve", "exec", "--resume", &session_id, "$ echo two"])
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let resumed = events(&resumed.stdout);
    assert_eq!(resumed[0]["msg"]["session_id"], session_id.as_str());
    assert!(resumed[0]["msg"]["history_len"].as_u64().unwrap() > 0);
    assert!(resumed[0]["msg"]["token_usage"].is_object(), "token usage restored: {}", resumed[0]);

    let forked = deputy(home.path())
        .args(["exec", "--json", "--approve", "exec", "--fork", &session_id, "$ echo three"])
        .output()
        .unwrap();
    assert!(forked.status.success(), "{}", String::from_utf8_lossy(&forked.stderr));
    let forked = events(&forked.stdout);
    assert_ne!(forked[0]["msg"]["session_id"], session_id.as_str());
    assert_eq!(forked[0]["msg"]["forked_from"], session_id.as_str());

    deputy(home.path())
        .args(["exec", "--resume", "no-such-session", "hi"])
        .assert()
        .code(1)
        .stderr(contains("no-such-session"));

    // Both sessions are listed, newest first, and the first one shows its turns.
    deputy(home.path())
        .args(["sessions", "list"])
        .assert()
        .success()
        .stdout(contains(session_id.as_str()))
        .stdout(predicate::function(|s: &str| s.lines().count() == 2));
    deputy(home.path())
        .args(["sessions", "show", &session_id])
        .assert()
        .success()
        .stdout(contains("echo one").and(contains("echo two")));
    deputy(home.path()).args(["sessions", "show", "nope"]).assert().code(1).stderr(contains("no session"));
}

#[test]
fn ctrl_c_cancels_and_leaves_no_process_behind() {
    let home = tempfile::tempdir().unwrap();
    let mut child = deputy_std(home.path())
        .args(["exec", "--json", "--approve", "exec", "$ sleep 30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the command runs.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "exec ended early");
        if line.contains("exec_command_begin") {
            break;
        }
    }
    let tree = descendants(pid);
    assert!(tree.len() >= 2, "agent and sleep should be running: {tree:?}");
    let sent = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    let elapsed = sent.elapsed();
    assert_eq!(status.code(), Some(130));
    assert!(wait_until(Duration::from_secs(2), || tree.iter().all(|&p| !alive(p))), "left behind: {tree:?}");
    eprintln!("ctrl-c to exit: {elapsed:?}");
}

/// `--approve patch` (and `all`) used to approve a patch writing anywhere
/// (`../x`, `~/.bashrc`) and print only "✓ patch applied". Leaving the
/// workspace needs `--allow-outside-cwd`, and is announced when it happens.
#[test]
fn approve_patch_does_not_cover_writes_outside_the_workspace() {
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let outside = root.path().join("outside.txt");
    let patch = "*** Begin Patch\n*** Add File: ../outside.txt\n+x\n*** End Patch";
    for mode in ["patch", "all"] {
        let out = deputy(home.path())
            .args(["exec", "--approve", mode, "--cwd"])
            .arg(&work)
            .arg(patch)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("outside the workspace") && stderr.contains("--allow-outside-cwd"),
            "{stderr}"
        );
        assert!(!outside.exists(), "--approve {mode} wrote outside the workspace");
    }
    let out = deputy(home.path())
        .args(["exec", "--approve", "patch", "--allow-outside-cwd", "--cwd"])
        .arg(&work)
        .arg(patch)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning:") && stderr.contains("OUTSIDE the workspace"), "{stderr}");
    assert!(stderr.contains(&outside.canonicalize().unwrap().display().to_string()), "{stderr}");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x\n");
    // A patch inside the workspace is still approved by --approve patch alone.
    deputy(home.path())
        .args(["exec", "--approve", "patch", "--cwd"])
        .arg(&work)
        .arg("*** Begin Patch\n*** Add File: inside.txt\n+y\n*** End Patch")
        .assert()
        .success()
        .stdout(contains("patch applied"));
    assert!(work.join("inside.txt").exists());
}

/// A prompt over the agent's announced `max_line_bytes` (16 MiB for `deputy
/// agent`) is refused before anything is sent: a usage error naming the
/// limit, never a hang.
#[test]
fn a_prompt_over_the_agents_line_limit_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let prompt = "x".repeat(17 * 1024 * 1024);
    let start = Instant::now();
    deputy(home.path())
        .args(["exec", "--approve", "exec", "-"])
        .write_stdin(prompt)
        .timeout(Duration::from_secs(60))
        .assert()
        .code(2)
        .stderr(contains("limit of 16777216 bytes"));
    assert!(start.elapsed() < Duration::from_secs(60));
}
