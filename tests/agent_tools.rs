//! `deputy agent` tools: exec and apply_patch through the approval flow,
//! interrupts, patches and their confinement.

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::*;
use serde_json::{Value, json};

/// Generous bound for "prompt" in a loaded CI box; the measured figure is printed.
const PROMPT: Duration = Duration::from_millis(250);

#[test]
fn approved_command_runs() {
    let mut a = Spawn::new().env("DEPUTY_TEST_API_KEY", "hunter2").spawn();
    a.start(json!({"approval_policy": "ask_always"}));
    let id = a.say("t1", "$ sh -c 'touch sentinel; echo key=${DEPUTY_TEST_API_KEY:-scrubbed}'");
    a.result(id);
    let req = a.approval();
    assert_eq!(req["method"], "approval/exec");
    let p = &req["params"];
    assert_eq!(p["turn_id"], "t1");
    assert_eq!(
        p["command"],
        json!(["sh", "-c", "touch sentinel; echo key=${DEPUTY_TEST_API_KEY:-scrubbed}"])
    );
    assert_eq!(p["cwd"], json!(a.cwd));
    let call_id = p["call_id"].as_str().unwrap().to_owned();
    assert!(!a.cwd.join("sentinel").exists(), "nothing runs before the answer");
    a.answer(&req, "approved");
    let begin = a.event("exec_command_begin");
    assert_eq!(begin["msg"]["call_id"], call_id.as_str());
    assert_eq!(begin["id"], "t1");
    let delta = a.event("exec_command_output_delta");
    assert_eq!(delta["msg"]["stream"], "stdout");
    let end = a.event("exec_command_end");
    assert_eq!(end["msg"]["call_id"], call_id.as_str());
    assert_eq!(end["msg"]["exit_code"], 0);
    assert_eq!(end["msg"]["output"], "key=scrubbed\n", "secret env removed by default");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    assert!(a.cwd.join("sentinel").exists());
    a.shutdown_and_wait();
}

#[test]
fn denied_and_aborted_commands_never_run() {
    let mut a = spawn();
    let configured = a.start(json!({}));
    // denied: the turn goes on and completes.
    let id = a.say("t1", "$ touch denied\nafter");
    a.result(id);
    let req = a.approval();
    a.answer(&req, "denied");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    // abort: the turn ends as aborted.
    let id = a.say("t2", "$ touch aborted");
    a.result(id);
    let req = a.approval();
    a.answer(&req, "abort");
    let end = a.turn_end("t2");
    assert_eq!(end["type"], "turn_aborted");
    assert_eq!(end["reason"], "interrupted");
    // A JSON-RPC error and a malformed answer both count as denied (fail closed).
    let id = a.say("t3", "$ touch errored");
    a.result(id);
    let req = a.approval();
    a.send(json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32000, "message": "no UI"}}));
    assert_eq!(a.turn_end("t3")["type"], "task_complete");
    let id = a.say("t4", "$ touch malformed");
    a.result(id);
    let req = a.approval();
    a.send(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"decision": "sure, why not"}}));
    assert_eq!(a.turn_end("t4")["type"], "task_complete");
    a.shutdown_and_wait();
    for f in ["denied", "aborted", "errored", "malformed"] {
        assert!(!a.cwd.join(f).exists(), "{f} ran");
    }
    assert!(!a.lines.iter().any(|l| l.contains("exec_command_begin")));
    // The rollout records the decisions.
    let rollout = std::fs::read_to_string(configured["rollout_path"].as_str().unwrap()).unwrap();
    let decisions: Vec<String> = rollout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "approval")
        .map(|v| v["decision"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(decisions, ["denied", "abort", "denied", "denied"]);
}

#[test]
fn approvals_of_one_response_are_outstanding_together_and_keyed_by_call_id() {
    let mut a = spawn();
    a.start(json!({}));
    let id = a.say("t1", "$ touch first\n$ touch second");
    a.result(id);
    let r1 = a.approval();
    let r2 = a.approval();
    assert_ne!(r1["params"]["call_id"], r2["params"]["call_id"]);
    assert_eq!(r1["params"]["command"], json!(["touch", "first"]));
    // Answer the second first: it waits for the first call (calls run in order).
    a.answer(&r2, "approved");
    std::thread::sleep(Duration::from_millis(50));
    assert!(!a.cwd.join("second").exists());
    a.answer(&r1, "denied");
    let begin = a.event("exec_command_begin");
    assert_eq!(begin["msg"]["call_id"], r2["params"]["call_id"]);
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    assert!(a.cwd.join("second").exists());
    assert!(!a.cwd.join("first").exists());
    a.shutdown_and_wait();
}

#[test]
fn approved_for_session_and_read_only_skip_asking() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "ask_unless_read_only"}));
    let id = a.say("t1", "$ touch s");
    a.result(id);
    let req = a.approval();
    a.answer(&req, "approved_for_session");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    // Same argv again, and a read-only command: no approval request.
    let id = a.say("t2", "$ touch s\n$ ls");
    a.result(id);
    assert_eq!(a.turn_end("t2")["type"], "task_complete");
    let begins = a.lines.iter().filter(|l| l.contains("exec_command_begin")).count();
    assert_eq!(begins, 3);
    let asked = a.lines.iter().filter(|l| l.contains("\"approval/exec\"")).count();
    assert_eq!(asked, 1);
    // A different argv still asks.
    let id = a.say("t3", "$ touch other");
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["command"], json!(["touch", "other"]));
    a.answer(&req, "denied");
    a.turn_end("t3");
    a.shutdown_and_wait();
}

#[test]
fn interrupt_during_a_running_command_kills_its_group_promptly() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", "$ sh -c 'echo $$ > tool.pid; sleep 30 & echo $! > bg.pid; wait'");
    a.result(id);
    a.event("exec_command_begin");
    let tool = read_pid(&a.cwd.join("tool.pid"));
    let bg = read_pid(&a.cwd.join("bg.pid"));
    let t = Instant::now();
    let id = a.interrupt("stop");
    let aborted = a.event("turn_aborted");
    let latency = t.elapsed();
    eprintln!("interrupt → turn_aborted during a command: {latency:?}");
    assert!(latency < PROMPT, "{latency:?}");
    assert_eq!(aborted["id"], "t1", "turn_aborted carries the turn's id");
    assert_eq!(aborted["msg"]["reason"], "interrupted");
    assert_eq!(a.result(id)["id"], "stop");
    assert!(wait_gone(tool, Duration::from_secs(1)), "tool {tool} survived");
    assert!(wait_gone(bg, Duration::from_secs(1)), "background job {bg} survived");
    a.shutdown_and_wait();
}

#[test]
fn interrupt_during_a_pending_approval_withdraws_it() {
    let mut a = spawn();
    a.start(json!({}));
    let id = a.say("t1", "$ touch late");
    a.result(id);
    let req = a.approval();
    let t = Instant::now();
    a.interrupt("stop");
    let aborted = a.event("turn_aborted");
    let latency = t.elapsed();
    eprintln!("interrupt → turn_aborted during an approval: {latency:?}");
    assert!(latency < PROMPT, "{latency:?}");
    assert_eq!(aborted["id"], "t1");
    let cancel = a.find("$/cancelRequest", |m| m["method"] == "$/cancelRequest");
    assert_eq!(cancel["params"]["id"], req["id"]);
    // A late answer is ignored.
    a.answer(&req, "approved");
    let id = a.say("t2", "next");
    a.result(id);
    assert_eq!(a.turn_end("t2")["type"], "task_complete");
    assert!(!a.cwd.join("late").exists());
    a.shutdown_and_wait();
}

const PATCH: &str = "\
*** Begin Patch
*** Add File: added/new.txt
+hello
+world
*** Update File: update.txt
@@
 one
-two
+TWO
 three
*** Delete File: delete.txt
*** Update File: move.txt
*** Move to: moved/there.txt
@@
-m
+M
*** End Patch";

#[test]
fn patch_add_update_delete_move() {
    let mut a = spawn();
    std::fs::write(a.cwd.join("update.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(a.cwd.join("delete.txt"), "bye\n").unwrap();
    std::fs::write(a.cwd.join("move.txt"), "m\n").unwrap();
    a.start(json!({}));
    let id = a.say("t1", PATCH);
    a.result(id);
    let req = a.approval();
    assert_eq!(req["method"], "approval/patch");
    let changes = &req["params"]["changes"];
    assert_eq!(changes["added/new.txt"], json!({"type": "add", "content": "hello\nworld\n"}));
    assert_eq!(changes["delete.txt"], json!({"type": "delete", "content": "bye\n"}));
    assert_eq!(changes["update.txt"]["type"], "update");
    assert_eq!(changes["update.txt"]["unified_diff"], "@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n");
    assert_eq!(changes["move.txt"]["move_path"], "moved/there.txt");
    assert!(req["params"].get("grant_root").is_none());
    // Nothing is touched before the answer.
    assert!(!a.cwd.join("added").exists());
    a.answer(&req, "approved");
    let begin = a.event("patch_apply_begin");
    assert_eq!(begin["msg"]["auto_approved"], false);
    assert_eq!(&begin["msg"]["changes"], changes);
    let end = a.event("patch_apply_end");
    assert_eq!(end["msg"]["success"], true, "{end}");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    let read = |p: &str| std::fs::read_to_string(a.cwd.join(p)).unwrap();
    assert_eq!(read("added/new.txt"), "hello\nworld\n");
    assert_eq!(read("update.txt"), "one\nTWO\nthree\n");
    assert_eq!(read("moved/there.txt"), "M\n");
    assert!(!a.cwd.join("delete.txt").exists());
    assert!(!a.cwd.join("move.txt").exists());
    a.shutdown_and_wait();
}

#[test]
fn a_patch_that_does_not_apply_changes_nothing_and_is_not_asked() {
    let mut a = spawn();
    std::fs::write(a.cwd.join("update.txt"), "something else\n").unwrap();
    a.start(json!({}));
    let id = a.say("t1", PATCH);
    a.result(id);
    let err = a.event("error");
    assert!(err["msg"]["message"].as_str().unwrap().contains("cannot update update.txt"), "{err}");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    assert!(!a.lines.iter().any(|l| l.contains("approval/patch")));
    assert!(!a.cwd.join("added").exists());
    assert_eq!(std::fs::read_to_string(a.cwd.join("update.txt")).unwrap(), "something else\n");
    a.shutdown_and_wait();
}

#[test]
fn patch_escapes_are_refused_unless_a_root_is_granted() {
    let outside = tempfile::tempdir().unwrap();
    let outside_dir = outside.path().canonicalize().unwrap();
    let mut a = spawn();
    std::os::unix::fs::symlink(&outside_dir, a.cwd.join("link")).unwrap();
    a.start(json!({}));
    let add = |p: &str| format!("*** Begin Patch\n*** Add File: {p}\n+x\n*** End Patch");

    // `..` escape: asked with a grant_root; denied → nothing written.
    let id = a.say("t1", &add("../escape.txt"));
    a.result(id);
    let req = a.approval();
    let parent = a.cwd.parent().unwrap().to_path_buf();
    assert_eq!(req["params"]["grant_root"], json!(parent));
    a.answer(&req, "denied");
    a.turn_end("t1");
    assert!(!parent.join("escape.txt").exists());

    // Symlink escape: refused outright, even before asking.
    let id = a.say("t2", &add("link/evil.txt"));
    a.result(id);
    let err = a.event("error");
    assert!(err["msg"]["message"].as_str().unwrap().contains("symlink"), "{err}");
    a.turn_end("t2");
    assert!(!outside_dir.join("evil.txt").exists());

    // Absolute path elsewhere, approved: the approval grants that root.
    let target = outside_dir.join("granted.txt");
    let id = a.say("t3", &add(target.to_str().unwrap()));
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["grant_root"], json!(outside_dir));
    a.answer(&req, "approved");
    assert_eq!(a.event("patch_apply_end")["msg"]["success"], true);
    a.turn_end("t3");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "x\n");
    let asked = a.lines.iter().filter(|l| l.contains("\"approval/patch\"")).count();
    assert_eq!(asked, 2);
    a.shutdown_and_wait();

    // never_ask cannot grant a root: refused with a clear error.
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", &add("../never.txt"));
    a.result(id);
    let err = a.event("error");
    assert!(err["msg"]["message"].as_str().unwrap().contains("outside the writable roots"), "{err}");
    a.turn_end("t1");
    assert!(!a.cwd.parent().unwrap().join("never.txt").exists());
    a.shutdown_and_wait();
}

#[test]
fn patch_approved_for_session_is_not_asked_again() {
    let mut a = spawn();
    a.start(json!({}));
    let add = "*** Begin Patch\n*** Add File: notes.txt\n+one\n*** End Patch";
    let id = a.say("t1", add);
    a.result(id);
    let req = a.approval();
    a.answer(&req, "approved_for_session");
    assert_eq!(a.event("patch_apply_begin")["msg"]["auto_approved"], false);
    a.turn_end("t1");
    let update = "*** Begin Patch\n*** Update File: notes.txt\n@@\n-one\n+two\n*** End Patch";
    let id = a.say("t2", update);
    a.result(id);
    assert_eq!(a.event("patch_apply_begin")["msg"]["auto_approved"], true);
    assert_eq!(a.event("patch_apply_end")["msg"]["success"], true);
    a.turn_end("t2");
    assert_eq!(std::fs::read_to_string(a.cwd.join("notes.txt")).unwrap(), "two\n");
    assert_eq!(a.lines.iter().filter(|l| l.contains("\"approval/patch\"")).count(), 1);
    a.shutdown_and_wait();
}

#[test]
fn commands_time_out_per_session_settings() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask", "exec": {"timeout_ms": 200}}));
    let t = Instant::now();
    let id = a.say("t1", "$ sleep 30");
    a.result(id);
    let end = a.event("exec_command_end");
    assert_eq!(end["msg"]["timed_out"], true);
    assert_eq!(end["msg"]["exit_code"], 128 + 9);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    a.shutdown_and_wait();
}
