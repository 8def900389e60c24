//! `deputy agent` at end of stdin, driven like a shell script would drive it:
//! every request is written at once and stdin is closed right after. Every
//! request read before EOF is answered, the turn's end and
//! `shutdown_complete` are written, the agent exits 0 and leaves no process
//! behind (PROTOCOL.md §2, "End of stdin").

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::*;
use serde_json::{Value, json};

/// Writes `requests` in one go, closes stdin, waits for the exit and reads
/// the rest of stdout. Returns every stdout message and how long the agent
/// took to exit after EOF.
fn pipe(a: &mut Agent, requests: &[Value]) -> (Vec<Value>, Duration) {
    let script: Vec<String> = requests.iter().map(Value::to_string).collect();
    a.send_raw(&script.join("\n"));
    a.close_stdin();
    let eof = Instant::now();
    let status = a.wait_exit(Duration::from_secs(5)).unwrap_or_else(|| {
        panic!("the agent did not exit after EOF\nstdout:\n{}\nstderr:\n{}", a.lines.join("\n"), a.stderr())
    });
    let took = eof.elapsed();
    assert!(status.success(), "{status:?}\nstderr:\n{}", a.stderr());
    a.drain();
    assert_protocol_lines(&a.lines);
    let messages = a.lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    (messages, took)
}

fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
           "params": {"protocol_version": 1, "client_info": {"name": "script"}}})
}

fn session_start(id: i64, cwd: &std::path::Path, policy: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "session/start",
           "params": {"cwd": cwd, "approval_policy": policy}})
}

fn submit(id: i64, sub_id: &str, op: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "submit", "params": {"id": sub_id, "op": op}})
}

fn say(text: &str) -> Value {
    json!({"type": "user_input", "items": [{"type": "text", "text": text}]})
}

/// The one response to request `id`.
fn response(messages: &[Value], id: i64) -> &Value {
    let found: Vec<&Value> = messages.iter().filter(|m| m["id"] == id && m.get("method").is_none()).collect();
    assert_eq!(found.len(), 1, "responses to {id}: {found:?}\nall: {messages:#?}");
    found[0]
}

fn result(messages: &[Value], id: i64) -> &Value {
    let r = response(messages, id);
    assert!(r.get("error").is_none(), "request {id} failed: {r}");
    &r["result"]
}

/// The `Event`s (`{id, msg}`) of this type, in order.
fn events<'a>(messages: &'a [Value], kind: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| is_event(m, kind)).map(|m| &m["params"]).collect()
}

/// Live processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(marker) && !process_gone(pid) {
            found.push(pid);
        }
    }
    found
}

/// The script the host's cancel ladder amounts to: a command runs, then
/// `interrupt` and `shutdown` back to back and EOF at once. It used to lose
/// the answers and the last events about 8 times in 20.
#[test]
fn interrupt_shutdown_then_eof_at_once_loses_nothing_20_times() {
    let mut slowest = Duration::ZERO;
    for run in 0..20 {
        let mut a = spawn();
        // A unique duration, so the test can look for its own `sleep` afterwards.
        let sleep = format!("5.{:07}{run:02}1", std::process::id());
        let cwd = a.cwd.clone();
        let (messages, took) = pipe(
            &mut a,
            &[
                initialize(1),
                session_start(2, &cwd, "never_ask"),
                submit(3, "t1", say(&format!("$ sleep {sleep}"))),
                submit(4, "stop", json!({"type": "interrupt"})),
                submit(5, "bye", json!({"type": "shutdown"})),
            ],
        );
        slowest = slowest.max(took);
        let context = || format!("run {run}: {messages:#?}\nstderr:\n{}", a.stderr());
        assert_eq!(result(&messages, 1)["protocol_version"], 1, "{}", context());
        assert!(result(&messages, 2)["session_id"].is_string(), "{}", context());
        assert_eq!(result(&messages, 3)["id"], "t1", "{}", context());
        assert_eq!(result(&messages, 4)["id"], "stop", "{}", context());
        assert_eq!(result(&messages, 5)["id"], "bye", "{}", context());
        let aborted = events(&messages, "turn_aborted");
        assert_eq!(aborted.len(), 1, "{}", context());
        assert_eq!(aborted[0]["id"], "t1");
        assert_eq!(aborted[0]["msg"]["reason"], "interrupted", "{}", context());
        assert!(events(&messages, "task_complete").is_empty(), "{}", context());
        let done = events(&messages, "shutdown_complete");
        assert_eq!(done.len(), 1, "{}", context());
        assert_eq!(done[0]["id"], "bye");
        assert!(is_event(messages.last().unwrap(), "shutdown_complete"), "{}", context());
        let left = processes_with(&format!("sleep {sleep}"));
        assert!(
            left.iter().all(|&pid| wait_gone(pid, Duration::from_secs(1))),
            "run {run}: the command outlived the agent: {left:?}"
        );
    }
    eprintln!("slowest exit after EOF: {slowest:?}");
}

/// A script that does not wait for its turn: EOF aborts it (the parent is
/// presumed gone), unless it had already finished by the time the agent saw
/// EOF. Either way it ends with exactly one end event, then
/// `shutdown_complete` with id `""`, and the rollout agrees.
#[test]
fn eof_right_after_a_user_input_ends_the_turn_then_shuts_down() {
    let mut a = spawn();
    let cwd = a.cwd.clone();
    let (messages, _) = pipe(
        &mut a,
        &[initialize(1), session_start(2, &cwd, "never_ask"), submit(3, "t1", say("$ echo hi"))],
    );
    result(&messages, 1);
    let rollout = result(&messages, 2)["rollout_path"].as_str().unwrap().to_owned();
    assert_eq!(result(&messages, 3)["id"], "t1");
    let ends: Vec<&Value> = messages
        .iter()
        .filter(|m| is_event(m, "task_complete") || is_event(m, "turn_aborted"))
        .map(|m| &m["params"])
        .collect();
    assert_eq!(ends.len(), 1, "{messages:#?}");
    assert_eq!(ends[0]["id"], "t1");
    let end = &ends[0]["msg"];
    eprintln!("the turn ended with {end}");
    if end["type"] == "turn_aborted" {
        assert_eq!(end["reason"], "shutdown");
    }
    let done = events(&messages, "shutdown_complete");
    assert_eq!(done.len(), 1, "{messages:#?}");
    assert_eq!(done[0]["id"], "");
    assert!(is_event(messages.last().unwrap(), "shutdown_complete"));
    // The rollout was synced with the same ending.
    let types = rollout_types(std::path::Path::new(&rollout));
    let expected = if end["type"] == "turn_aborted" { "turn_aborted" } else { "turn_complete" };
    assert_eq!(types.last().map(String::as_str), Some(expected), "{types:?}");
}

/// EOF while the turn waits for an approval: nobody can answer it any more,
/// which is not a denial. The turn is aborted and the command never runs.
#[test]
fn eof_during_a_pending_approval_aborts_the_turn_and_runs_nothing() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "ask_always"}));
    let id = a.say("t1", "$ touch never");
    a.result(id);
    let approval = a.approval();
    assert_eq!(approval["method"], "approval/exec");
    a.close_stdin();
    let status = a.wait_exit(Duration::from_secs(5)).expect("exits after EOF");
    assert!(status.success(), "{status:?}");
    a.drain();
    let aborted = a.event("turn_aborted");
    assert_eq!(aborted["id"], "t1");
    assert_eq!(aborted["msg"]["reason"], "shutdown");
    assert_eq!(a.event("shutdown_complete")["id"], "");
    assert!(a.lines.last().unwrap().contains("shutdown_complete"), "{:?}", a.lines);
    assert!(!a.lines.iter().any(|l| l.contains("exec_command_begin")), "{:?}", a.lines);
    assert!(!a.cwd.join("never").exists());
}
