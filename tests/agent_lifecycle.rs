//! `deputy agent` lifecycle: handshake errors, turn rules, shutdown, end of
//! input, stdout purity, start-up failures.

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::*;
use serde_json::{Value, json};

#[test]
fn lifecycle_errors_are_clear() {
    let mut a = spawn();
    // Before initialize: everything is -32002, even with bad params or an unknown method.
    let id = a.say("t0", "hi");
    assert_eq!(a.error(id)["code"], -32002);
    let id = a.request("session/start", json!({"cwd": "relative"}));
    assert_eq!(a.error(id)["code"], -32002);
    let id = a.request("frobnicate", json!({}));
    assert_eq!(a.error(id)["code"], -32002);
    // Unsupported version.
    let id = a.request("initialize", json!({"protocol_version": 99, "client_info": {"name": "t"}}));
    let e = a.error(id);
    assert_eq!(e["code"], -32004);
    assert_eq!(e["data"], json!({"supported": [1]}));
    a.initialize();
    let id = a.request("initialize", json!({"protocol_version": 1, "client_info": {"name": "t"}}));
    assert_eq!(a.error(id)["code"], -32003);
    let id = a.request("frobnicate", json!({}));
    assert_eq!(a.error(id)["code"], -32601);
    // Before session/start.
    let id = a.say("t0", "hi");
    assert_eq!(a.error(id)["code"], -32010);
    let id = a.request("session/start", json!({"cwd": "relative/dir"}));
    let e = a.error(id);
    assert_eq!(e["code"], -32602);
    assert!(e["message"].as_str().unwrap().contains("absolute"), "{e}");
    let id = a.request("session/start", json!({"cwd": a.cwd, "model": {"name": "gpt-9"}}));
    let e = a.error(id);
    assert_eq!(e["code"], -32013);
    assert!(e["message"].as_str().unwrap().contains("gpt-9"), "{e}");
    // A failed start can be retried; a second success cannot.
    let id = a.request("session/start", json!({"cwd": a.cwd}));
    a.result(id);
    let id = a.request("session/start", json!({"cwd": a.cwd}));
    assert_eq!(a.error(id)["code"], -32011);
    // Unknown op.
    let id = a.submit("x", json!({"type": "compact"}));
    let e = a.error(id);
    assert_eq!(e["code"], -32602);
    assert!(e["data"].as_str().unwrap().contains("unknown variant `compact`"), "{e}");
    a.shutdown_and_wait();
}

#[test]
fn session_configured_precedes_the_start_response() {
    let mut a = spawn();
    a.initialize();
    let id = a.request("session/start", json!({"cwd": a.cwd, "approval_policy": "never_ask"}));
    let _ = a.result(id);
    let configured = a.lines.iter().position(|l| l.contains("\"session_configured\"")).unwrap();
    let response = a.lines.iter().position(|l| l.contains(&format!("\"id\":{id}"))).unwrap();
    assert!(configured < response);
    let ev: Value = serde_json::from_str(&a.lines[configured]).unwrap();
    let msg = &ev["params"]["msg"];
    assert_eq!(ev["params"]["id"], "");
    assert_eq!(msg["model"], "shell");
    assert_eq!(msg["history_len"], 0);
    assert_eq!(msg["approval_policy"], "never_ask");
    assert!(std::path::Path::new(msg["rollout_path"].as_str().unwrap()).starts_with(&a.home));
    a.shutdown_and_wait();
}

#[test]
fn a_turn_runs_and_submissions_get_ids() {
    let mut a = spawn();
    a.start(json!({}));
    // No id: the agent makes one up and uses it for the events.
    let id = a.request(
        "submit",
        json!({"op": {"type": "user_input", "items": [{"type": "text", "text": "hello there"}]}}),
    );
    let sub = a.result(id)["id"].as_str().unwrap().to_owned();
    assert!(!sub.is_empty());
    let started = a.event("task_started");
    assert_eq!(started["id"], sub.as_str());
    assert_eq!(started["msg"]["turn_id"], sub.as_str());
    let msg = a.event("agent_message");
    assert_eq!(msg["msg"]["message"], "hello there");
    let tokens = a.event("token_count");
    assert!(tokens["msg"]["info"]["last_token_usage"]["input_tokens"].as_u64().unwrap() > 0);
    let end = a.turn_end(&sub);
    assert_eq!(end["type"], "task_complete");
    assert_eq!(end["last_agent_message"], "hello there");
    // Interrupt with no turn running: answered, no event.
    let id = a.interrupt("idle");
    assert_eq!(a.result(id)["id"], "idle");
    assert!(a.no_event("turn_aborted", Duration::from_millis(100)));
    a.shutdown_and_wait();
}

#[test]
fn user_input_during_a_turn_is_rejected() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "ask_always"}));
    let id = a.say("t1", "$ touch x");
    a.result(id);
    let _approval = a.approval();
    let id = a.say("t2", "hello");
    let e = a.error(id);
    assert_eq!(e["code"], -32014);
    assert!(e["message"].as_str().unwrap().contains("t1"), "{e}");
    let id = a.interrupt("stop");
    a.result(id);
    assert_eq!(a.turn_end("t1")["reason"], "interrupted");
    // Right after the turn's last event a new turn is accepted.
    let id = a.say("t3", "again");
    a.result(id);
    assert_eq!(a.turn_end("t3")["type"], "task_complete");
    a.shutdown_and_wait();
}

#[test]
fn shutdown_aborts_the_turn_flushes_and_exits_0() {
    let mut a = spawn();
    let configured = a.start(json!({}));
    let id = a.say("t1", "$ touch never");
    a.result(id);
    let approval = a.approval();
    let id = a.shutdown("bye");
    a.result(id);
    let cancel = a.find("$/cancelRequest", |m| m["method"] == "$/cancelRequest");
    assert_eq!(cancel["params"]["id"], approval["id"]);
    let aborted = a.event("turn_aborted");
    assert_eq!(aborted["id"], "t1");
    assert_eq!(aborted["msg"]["reason"], "shutdown");
    let done = a.event("shutdown_complete");
    assert_eq!(done["id"], "bye");
    let status = a.wait_exit(Duration::from_secs(2)).expect("exits");
    assert!(status.success());
    a.drain();
    // shutdown_complete is the last line.
    assert!(a.lines.last().unwrap().contains("shutdown_complete"), "{:?}", a.lines);
    assert!(!a.cwd.join("never").exists());
    let rollout = std::path::PathBuf::from(configured["rollout_path"].as_str().unwrap());
    let types = rollout_types(&rollout);
    assert_eq!(types.first().map(String::as_str), Some("session_meta"));
    assert_eq!(types.last().map(String::as_str), Some("turn_aborted"), "{types:?}");
}

#[test]
fn stdin_eof_exits_promptly_and_leaves_no_process() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", "$ sh -c 'echo $$ > tool.pid; sleep 30 & echo $! > bg.pid; wait'");
    a.result(id);
    a.event("exec_command_begin");
    let tool = read_pid(&a.cwd.join("tool.pid"));
    let bg = read_pid(&a.cwd.join("bg.pid"));
    let t = Instant::now();
    a.close_stdin();
    let status = a.wait_exit(Duration::from_secs(1)).expect("exits within 1 s of EOF");
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(wait_gone(tool, Duration::from_millis(500)), "tool {tool} still running");
    assert!(wait_gone(bg, Duration::from_millis(500)), "background job {bg} still running");
}

#[test]
fn eof_before_any_session_exits_0() {
    let mut a = spawn();
    a.initialize();
    a.close_stdin();
    assert!(a.wait_exit(Duration::from_secs(1)).expect("exits").success());
}

#[test]
fn stdout_carries_only_protocol_lines_under_trace_logging() {
    let mut a = Spawn::new().env("RUST_LOG", "trace").spawn();
    a.start(json!({"approval_policy": "ask_always"}));
    // A tool that writes to stdout and stderr, a patch, text: all must stay off our stdout.
    let id = a.say(
        "t1",
        "say something\n$ sh -c 'echo TOOL-STDOUT; echo TOOL-STDERR >&2'\n*** Begin Patch\n*** Add File: p.txt\n+x\n*** End Patch",
    );
    a.result(id);
    for _ in 0..2 {
        let req = a.approval();
        a.answer(&req, "approved");
    }
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    // Garbage in: answered with a JSON-RPC error, never echoed raw.
    a.send_raw("this is not json");
    a.find("parse error", |m| m["error"]["code"] == -32700);
    a.shutdown_and_wait();
    a.drain();
    assert_protocol_lines(&a.lines);
    assert!(a.lines.iter().any(|l| l.contains("TOOL-STDOUT")), "tool output travels inside events");
    assert!(!a.lines.iter().any(|l| l.starts_with("TOOL")));
    let stderr = a.stderr();
    assert!(stderr.contains("TRACE") || stderr.contains("DEBUG"), "logs go to stderr: {stderr}");
}

#[test]
fn json_logs_go_to_stderr() {
    let mut a = Spawn::new().env("RUST_LOG", "debug").arg("--log-format").arg("json").spawn();
    a.start(json!({}));
    a.shutdown_and_wait();
    a.drain();
    assert_protocol_lines(&a.lines);
    let stderr = a.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l}"));
        assert!(v["level"].is_string(), "{l}");
    }
}

#[test]
fn deputy_home_env_sets_the_home() {
    let mut a = Spawn::new().home_from_env().spawn();
    let configured = a.start(json!({}));
    let rollout = std::path::PathBuf::from(configured["rollout_path"].as_str().unwrap());
    assert!(rollout.starts_with(a.home.join("sessions")), "{rollout:?} not under {:?}", a.home);
    a.shutdown_and_wait();
}

#[test]
fn unusable_home_fails_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = std::process::Command::new(bin())
        .args(["agent", "--home"])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unusable home"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn help_documents_flags_and_examples() {
    let out = std::process::Command::new(bin()).args(["agent", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["--home", "DEPUTY_HOME", "--model", "--scenario", "--log-format", "RUST_LOG", "Examples:"]
    {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
}
