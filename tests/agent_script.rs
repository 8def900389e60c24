//! The `script` brain: scenario steps, end to end.

mod agent_support;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_support::*;
use serde_json::{Value, json};

fn write_scenario(dir: &Path, turns: &[Value]) -> std::path::PathBuf {
    let path = dir.join("scenario.jsonl");
    let text: Vec<String> = turns.iter().map(|t| t.to_string()).collect();
    std::fs::write(&path, text.join("\n\n") + "\n").unwrap();
    path
}

fn script_agent(turns: &[Value]) -> Agent {
    let s = Spawn::new();
    let scenario = write_scenario(&s.cwd(), turns);
    s.arg("--model").arg("script").arg("--scenario").arg(scenario).spawn()
}

#[test]
fn plays_messages_reasoning_tokens_and_exec() {
    let mut a = script_agent(&[
        json!({"steps": [
            {"type": "reasoning", "text": "thinking"},
            {"type": "message", "text": "hello world", "chunk_chars": 4},
            {"type": "token_count", "input_tokens": 10, "output_tokens": 5},
            {"type": "exec", "command": ["touch", "made"], "reason": "make it"},
            {"type": "sleep", "ms": 10},
            {"type": "message", "text": "done"}
        ]}),
        json!({"steps": [{"type": "message", "text": "second"}]}),
    ]);
    let configured = a.start(json!({}));
    assert_eq!(configured["model"], "script");
    let id = a.say("t1", "go");
    a.result(id);
    assert_eq!(a.event("agent_reasoning")["msg"]["text"], "thinking");
    let deltas: Vec<String> =
        (0..3).map(|_| a.event("agent_message_delta")["msg"]["delta"].as_str().unwrap().to_owned()).collect();
    assert_eq!(deltas, ["hell", "o wo", "rld"]);
    assert_eq!(a.event("agent_message")["msg"]["message"], "hello world");
    let tc = a.event("token_count");
    assert_eq!(tc["msg"]["info"]["last_token_usage"]["total_tokens"], 15);
    let req = a.approval();
    assert_eq!(req["params"]["reason"], "make it");
    a.answer(&req, "approved");
    assert_eq!(a.event("exec_command_end")["msg"]["exit_code"], 0);
    let end = a.turn_end("t1");
    assert_eq!(end["last_agent_message"], "done");
    assert!(a.cwd.join("made").exists());
    let id = a.say("t2", "again");
    a.result(id);
    assert_eq!(a.turn_end("t2")["last_agent_message"], "second");
    // More turns than lines.
    let id = a.say("t3", "and again");
    a.result(id);
    let err = a.event("error");
    assert_eq!(err["msg"]["message"], "scenario has no turn 3");
    assert_eq!(a.turn_end("t3")["type"], "task_complete");
    a.shutdown_and_wait();
}

#[test]
fn flood_streams_n_small_deltas() {
    let mut a = script_agent(&[json!({"steps": [{"type": "flood", "n": 5000}]})]);
    a.start(json!({}));
    let id = a.say("t1", "go");
    a.result(id);
    a.turn_end("t1");
    let deltas: Vec<&String> = a.lines.iter().filter(|l| l.contains("agent_message_delta")).collect();
    assert_eq!(deltas.len(), 5000);
    let len = deltas[0].len() + 1;
    assert!((130..=170).contains(&len), "an event line is {len} bytes");
    a.shutdown_and_wait();
}

#[test]
fn ask_approval_only_counts_decisions() {
    let mut a = script_agent(&[json!({"steps": [{"type": "ask_approval_only", "n": 5}]})]);
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", "go");
    a.result(id);
    let mut call_ids = Vec::new();
    for i in 0..5 {
        let req = a.approval();
        assert_eq!(req["params"]["command"], json!(["true"]));
        call_ids.push(req["params"]["call_id"].clone());
        a.answer(&req, if i < 3 { "approved" } else { "denied" });
    }
    call_ids.dedup();
    assert_eq!(call_ids.len(), 5, "each round trip has its own call id");
    let end = a.turn_end("t1");
    let msg = end["last_agent_message"].as_str().unwrap();
    assert!(msg.contains("5 round trips: 3 approved, 2 denied"), "{msg}");
    assert!(!a.lines.iter().any(|l| l.contains("exec_command_begin")));
    a.shutdown_and_wait();
}

#[test]
fn ask_approval_only_keeps_in_flight_requests_outstanding() {
    let mut a = script_agent(&[json!({"steps": [{"type": "ask_approval_only", "n": 7, "in_flight": 3}]})]);
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", "go");
    a.result(id);
    // Three requests arrive before any is answered; each answer lets one more out.
    let mut outstanding: Vec<Value> = (0..3).map(|_| a.approval()).collect();
    let mut seen = outstanding.iter().map(|r| r["params"]["call_id"].clone()).collect::<Vec<_>>();
    while let Some(req) = outstanding.pop() {
        a.answer(&req, "approved");
        if seen.len() < 7 {
            let next = a.approval();
            seen.push(next["params"]["call_id"].clone());
            outstanding.insert(0, next);
        }
    }
    seen.sort_by_key(|id| id.to_string());
    seen.dedup();
    assert_eq!(seen.len(), 7, "each round trip has its own call id");
    let msg = a.turn_end("t1")["last_agent_message"].as_str().unwrap().to_owned();
    assert!(msg.contains("7 round trips: 7 approved, 0 denied"), "{msg}");
    assert!(msg.contains("3 in flight, round trip p50 "), "{msg}");
    a.shutdown_and_wait();
}

#[test]
fn wait_for_interrupt_and_sleep_are_interruptible() {
    let mut a = script_agent(&[
        json!({"steps": [{"type": "message", "text": "waiting"}, {"type": "wait_for_interrupt"}]}),
        json!({"steps": [{"type": "sleep", "ms": 60000}]}),
    ]);
    a.start(json!({}));
    for turn in ["t1", "t2"] {
        let id = a.say(turn, "go");
        a.result(id);
        a.event("task_started");
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        a.interrupt(&format!("stop-{turn}"));
        let end = a.turn_end(turn);
        assert_eq!(end["reason"], "interrupted");
        assert!(t.elapsed() < Duration::from_millis(250), "{:?}", t.elapsed());
    }
    a.shutdown_and_wait();
}

#[test]
fn exit_step_exits_with_its_code_after_flushing() {
    let mut a = script_agent(&[json!({"steps": [
        {"type": "message", "text": "last words"},
        {"type": "exit", "code": 3, "stderr": "simulated crash\n"}
    ]})]);
    a.start(json!({}));
    let id = a.say("t1", "go");
    a.result(id);
    assert_eq!(a.event("agent_message")["msg"]["message"], "last words");
    let status = a.wait_exit(Duration::from_secs(3)).expect("exits");
    assert_eq!(status.code(), Some(3));
    std::thread::sleep(Duration::from_millis(50));
    assert!(a.stderr().contains("simulated crash"), "{}", a.stderr());
}

fn children_of(pid: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_owned();
        let ppid: u32 = stat[close + 2..].split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == pid {
            out.push((p, comm));
        }
    }
    out
}

#[test]
fn hang_ignores_everything_until_the_group_is_killed() {
    let mut s = Spawn::new();
    let scenario = write_scenario(&s.cwd(), &[json!({"steps": [{"type": "hang"}]})]);
    s.cmd.process_group(0);
    let mut a = s.arg("--model").arg("script").arg("--scenario").arg(scenario).spawn();
    /// Kills the agent's process group even if the test fails half-way.
    struct GroupKill(u32);
    impl Drop for GroupKill {
        fn drop(&mut self) {
            let _ =
                std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).status();
        }
    }
    let _group = GroupKill(a.pid());
    a.start(json!({}));
    let id = a.say("t1", "go");
    a.result(id);
    a.event("task_started");
    let pid = a.pid();
    let deadline = Instant::now() + TIMEOUT;
    let sleeper = loop {
        if let Some((p, _)) = children_of(pid).into_iter().find(|(_, c)| c == "sleep") {
            break p;
        }
        assert!(Instant::now() < deadline, "no sleeping grandchild");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Interrupt and shutdown go unanswered; SIGTERM and EOF are ignored.
    let int = a.interrupt("stop");
    let shut = a.shutdown("bye");
    assert!(a.try_find(Duration::from_millis(200), |m| m["id"] == int || m["id"] == shut).is_none());
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    a.close_stdin();
    assert!(a.wait_exit(Duration::from_millis(300)).is_none(), "a hung agent does not exit");
    // Only a group kill ends it, grandchild included.
    let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
    assert!(a.wait_exit(Duration::from_secs(2)).is_some());
    assert!(wait_gone(sleeper, Duration::from_secs(2)), "the grandchild survived the group kill");
}

#[test]
fn a_malformed_scenario_fails_session_start() {
    let mut a = spawn();
    std::fs::write(a.cwd.join("bad.jsonl"), "{\"steps\":[]}\n{\"steps\":[{\"type\":\"dance\"}]}\n").unwrap();
    a.initialize();
    let cwd = a.cwd.clone();
    let id = a.request(
        "session/start",
        json!({"cwd": cwd, "model": {"name": "script", "scenario": cwd.join("bad.jsonl")}}),
    );
    let e = a.error(id);
    assert_eq!(e["code"], -32013);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("line 2") && msg.contains("unknown variant `dance`"), "{msg}");
    let id = a.request("session/start", json!({"cwd": cwd, "model": {"name": "script"}}));
    assert_eq!(a.error(id)["code"], -32013);
    a.close_stdin();
    assert!(a.wait_exit(Duration::from_secs(2)).unwrap().success());
}
