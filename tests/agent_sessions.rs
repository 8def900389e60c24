//! `deputy agent` sessions: rollouts, resume, fork, torn files.

mod agent_support;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use agent_support::*;
use serde_json::{Value, json};

/// Runs one session with two turns (text, then an approved command); returns
/// (session id, rollout path, last token usage).
fn first_session(home: &Path) -> (String, PathBuf, Value) {
    let mut a = Spawn::new().with_home(home).spawn();
    let configured = a.start(json!({"source": {"subagent": "review"}}));
    let id = a.say("t1", "hello, remember me");
    a.result(id);
    a.event("token_count");
    a.turn_end("t1");
    let id = a.say("t2", "$ touch made\nand run this");
    a.result(id);
    let req = a.approval();
    a.answer(&req, "approved");
    let usage = a.event("token_count")["msg"]["info"].clone();
    assert_eq!(a.turn_end("t2")["type"], "task_complete");
    a.shutdown_and_wait();
    let path = PathBuf::from(configured["rollout_path"].as_str().unwrap());
    (configured["session_id"].as_str().unwrap().to_owned(), path, usage)
}

#[test]
fn the_rollout_records_the_conversation() {
    let home = tempfile::tempdir().unwrap();
    let (id, path, _) = first_session(home.path());
    // Layout: HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl
    let rel = path.strip_prefix(home.path().join("sessions")).unwrap();
    let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    assert_eq!(parts.len(), 4, "{rel:?}");
    assert!(parts[3].starts_with("rollout-") && parts[3].ends_with(&format!("-{id}.jsonl")), "{rel:?}");
    let types = rollout_types(&path);
    assert_eq!(
        types,
        [
            "session_meta",
            "user_input",
            "agent_message",
            "token_count",
            "turn_complete",
            "user_input",
            "agent_message",
            "tool_call",
            "token_count",
            "approval",
            "tool_result",
            "turn_complete"
        ]
    );
    let first: Value =
        serde_json::from_str(std::fs::read_to_string(&path).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["session_id"], id.as_str());
    assert_eq!(first["source"], json!({"subagent": "review"}));
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn resume_restores_history_and_token_usage() {
    let home = tempfile::tempdir().unwrap();
    let (id, path, usage) = first_session(home.path());
    let before = rollout_types(&path).len();

    // By session id: same id, same file appended, last usage reported.
    let mut a = Spawn::new().with_home(home.path()).spawn();
    let configured = a.start(json!({"initial_history": {"type": "resumed", "from": {"session_id": id}}}));
    assert_eq!(configured["session_id"], id.as_str());
    assert_eq!(configured["rollout_path"], json!(path));
    assert_eq!(configured["history_len"], (before - 1) as u64);
    assert_eq!(configured["token_usage"], usage);
    // The running total continues from the restored usage.
    let id2 = a.say("t3", "more");
    a.result(id2);
    let info = a.event("token_count")["msg"]["info"].clone();
    let prev = usage["total_token_usage"]["total_tokens"].as_u64().unwrap();
    let last = info["last_token_usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(info["total_token_usage"]["total_tokens"].as_u64().unwrap(), prev + last);
    a.turn_end("t3");
    a.shutdown_and_wait();
    let types = rollout_types(&path);
    assert_eq!(types.iter().filter(|t| *t == "session_meta").count(), 1);
    assert!(types.len() > before);

    // By path works too.
    let mut a = Spawn::new().with_home(home.path()).spawn();
    let configured = a.start(json!({"initial_history": {"type": "resumed", "from": {"rollout_path": path}}}));
    assert_eq!(configured["session_id"], id.as_str());
    a.shutdown_and_wait();
}

#[test]
fn a_torn_rollout_still_loads() {
    let home = tempfile::tempdir().unwrap();
    let (id, path, usage) = first_session(home.path());
    let complete = rollout_types(&path).len();
    // The agent was killed mid-write: half a line, no newline.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"timestamp":"2026-11-24T03:40:00.000Z","type":"token_count","info":{"total_tok"#)
        .unwrap();
    let mut a = Spawn::new().with_home(home.path()).spawn();
    let configured = a.start(json!({"initial_history": {"type": "resumed", "from": {"session_id": id}}}));
    assert_eq!(configured["history_len"], (complete - 1) as u64);
    assert_eq!(configured["token_usage"], usage);
    let id = a.say("t3", "after the crash");
    a.result(id);
    a.turn_end("t3");
    a.shutdown_and_wait();
    // The torn bytes were cut: every line parses again.
    let types = rollout_types(&path);
    assert!(types.len() > complete);
}

#[test]
fn fork_starts_a_new_session_from_a_history() {
    let home = tempfile::tempdir().unwrap();
    let (id, path, usage) = first_session(home.path());
    let items = rollout_types(&path).len() - 1;
    let mut a = Spawn::new().with_home(home.path()).spawn();
    let configured = a.start(json!({"initial_history": {"type": "forked", "from": {"session_id": id}}}));
    assert_ne!(configured["session_id"], id.as_str());
    assert_eq!(configured["forked_from"], id.as_str());
    assert_eq!(configured["history_len"], items as u64);
    assert_eq!(configured["token_usage"], usage);
    let new_path = PathBuf::from(configured["rollout_path"].as_str().unwrap());
    assert_ne!(new_path, path);
    a.shutdown_and_wait();
    let types = rollout_types(&new_path);
    assert_eq!(types.len(), items + 1, "the fork holds a copy of the history");
    let meta: Value =
        serde_json::from_str(std::fs::read_to_string(&new_path).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(meta["forked_from"], id.as_str());
    // The original is untouched.
    assert_eq!(rollout_types(&path).len(), items + 1);

    // Fork from inline items.
    let mut a = Spawn::new().with_home(home.path()).spawn();
    let inline = json!([{"type": "user_input", "turn_id": "x", "items": [{"type": "text", "text": "hi"}]}]);
    let configured = a.start(json!({"initial_history": {"type": "forked", "from": {"items": inline}}}));
    assert_eq!(configured["history_len"], 1);
    assert!(configured.get("forked_from").is_none());
    a.shutdown_and_wait();
}

#[test]
fn unknown_histories_are_unavailable() {
    let mut a = spawn();
    a.initialize();
    let cwd = a.cwd.clone();
    for from in [
        json!({"type": "resumed", "from": {"session_id": "no-such-session"}}),
        json!({"type": "resumed", "from": {"rollout_path": "/nonexistent/rollout.jsonl"}}),
        json!({"type": "resumed", "from": {"items": []}}),
    ] {
        let id = a.request("session/start", json!({"cwd": cwd, "initial_history": from}));
        let e = a.error(id);
        assert_eq!(e["code"], -32012, "{e}");
    }
    a.close_stdin();
    assert!(a.wait_exit(std::time::Duration::from_secs(2)).unwrap().success());
}
