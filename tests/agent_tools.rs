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

// ---------------------------------------------------------------------------
// Issue 13: what is approved is exactly what happens.

fn add_patch(path: &str) -> String {
    format!("*** Begin Patch\n*** Add File: {path}\n+x\n*** End Patch")
}

/// One approval of a `../` write used to make every sibling of cwd writable
/// for the session. Now the request says which paths leave the workspace,
/// `approved` applies that patch only, and `approved_for_session` grants the
/// one directory named in `grant_root`, nothing above it.
#[test]
fn outside_writes_are_named_and_approved_grants_nothing_more() {
    let mut a = spawn();
    let parent = a.cwd.parent().unwrap().to_path_buf();
    let unique = format!("deputy-i13-{}-{}", std::process::id(), a.pid());
    let sibling = parent.join(&unique);
    std::fs::create_dir(&sibling).unwrap();
    let _cleanup = Cleanup(sibling.clone());
    a.start(json!({}));

    // `../UNIQUE/one.txt`, approved once: written, nothing granted.
    let id = a.say("t1", &add_patch(&format!("../{unique}/one.txt")));
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([sibling.join("one.txt")]), "{req}");
    assert_eq!(req["params"]["grant_root"], json!(sibling), "the smallest grant: the target's own directory");
    a.answer(&req, "approved");
    assert_eq!(a.event("patch_apply_end")["msg"]["success"], true);
    a.turn_end("t1");
    assert!(sibling.join("one.txt").exists());

    // The same directory again: asked again, as outside (nothing was granted).
    let id = a.say("t2", &add_patch(&format!("../{unique}/two.txt")));
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([sibling.join("two.txt")]));
    a.answer(&req, "approved_for_session");
    a.turn_end("t2");

    // Granted for the session: that directory joined the workspace; a file
    // there is a plain workspace patch (asked under ask_always, not outside).
    let id = a.say("t3", &add_patch(&format!("../{unique}/three.txt")));
    a.result(id);
    let req = a.approval();
    assert!(req["params"].get("outside_workspace").is_none(), "{req}");
    assert!(req["params"].get("grant_root").is_none(), "{req}");
    a.answer(&req, "approved");
    a.turn_end("t3");

    // Its parent (cwd's parent) was never granted.
    let id = a.say("t4", &add_patch(&format!("../{unique}-never.txt")));
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([parent.join(format!("{unique}-never.txt"))]));
    a.answer(&req, "denied");
    a.turn_end("t4");
    assert!(!parent.join(format!("{unique}-never.txt")).exists());
    a.shutdown_and_wait();
}

struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Absolute paths, a `Move to` out of the workspace and a path through a
/// symlinked directory outside are all listed where they really land; paths
/// in two directories get no grant at all.
#[test]
fn every_way_out_is_listed_and_grants_stay_small() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().canonicalize().unwrap();
    std::fs::create_dir_all(out.join("a")).unwrap();
    std::fs::create_dir_all(out.join("b")).unwrap();
    std::fs::create_dir_all(out.join("real")).unwrap();
    std::os::unix::fs::symlink(out.join("real"), out.join("link")).unwrap();
    let mut a = spawn();
    std::fs::write(a.cwd.join("m.txt"), "m\n").unwrap();
    a.start(json!({}));

    // Absolute path: listed; the grant is its directory.
    let id = a.say("t1", &add_patch(out.join("a/abs.txt").to_str().unwrap()));
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([out.join("a/abs.txt")]));
    assert_eq!(req["params"]["grant_root"], json!(out.join("a")));
    a.answer(&req, "denied");
    a.turn_end("t1");

    // Move to outside: the target is listed (the source is inside).
    let mv = format!(
        "*** Begin Patch\n*** Update File: m.txt\n*** Move to: {}\n@@\n-m\n+M\n*** End Patch",
        out.join("b/moved.txt").display()
    );
    let id = a.say("t2", &mv);
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([out.join("b/moved.txt")]));
    a.answer(&req, "denied");
    a.turn_end("t2");
    assert!(a.cwd.join("m.txt").exists());

    // Through a symlinked directory outside: shown where it lands.
    let id = a.say("t3", &add_patch(out.join("link/x.txt").to_str().unwrap()));
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([out.join("real/x.txt")]));
    assert_eq!(req["params"]["grant_root"], json!(out.join("real")));
    a.answer(&req, "denied");
    a.turn_end("t3");

    // Two directories: no grant_root (their common parent would be more than
    // asked); approved_for_session then grants nothing outside.
    let two = format!(
        "*** Begin Patch\n*** Add File: {}\n+1\n*** Add File: {}\n+2\n*** End Patch",
        out.join("a/one.txt").display(),
        out.join("b/two.txt").display()
    );
    let id = a.say("t4", &two);
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([out.join("a/one.txt"), out.join("b/two.txt")]));
    assert!(req["params"].get("grant_root").is_none(), "{req}");
    a.answer(&req, "approved_for_session");
    assert_eq!(a.event("patch_apply_end")["msg"]["success"], true);
    a.turn_end("t4");
    let id = a.say("t5", &add_patch(out.join("a/three.txt").to_str().unwrap()));
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["outside_workspace"], json!([out.join("a/three.txt")]), "still outside");
    a.answer(&req, "denied");
    a.turn_end("t5");
    a.shutdown_and_wait();
}

/// `*** Add File` over an existing file used to replace it, shown as an add.
/// It is an invalid patch now (Codex semantics), refused without asking, and
/// so is a `Move to` onto an existing file.
#[test]
fn add_or_move_over_an_existing_file_is_refused_unasked() {
    let mut a = spawn();
    std::fs::write(a.cwd.join("precious.txt"), "keep me\n").unwrap();
    std::fs::write(a.cwd.join("src.txt"), "s\n").unwrap();
    a.start(json!({}));
    let id = a.say("t1", &add_patch("precious.txt"));
    a.result(id);
    let err = a.event("error");
    assert!(err["msg"]["message"].as_str().unwrap().contains("already exists"), "{err}");
    a.turn_end("t1");
    let mv =
        "*** Begin Patch\n*** Update File: src.txt\n*** Move to: precious.txt\n@@\n-s\n+S\n*** End Patch";
    let id = a.say("t2", mv);
    a.result(id);
    let err = a.event("error");
    assert!(err["msg"]["message"].as_str().unwrap().contains("already exists"), "{err}");
    a.turn_end("t2");
    assert!(!a.lines.iter().any(|l| l.contains("approval/patch")), "asked: {:?}", a.lines);
    assert_eq!(std::fs::read_to_string(a.cwd.join("precious.txt")).unwrap(), "keep me\n");
    assert_eq!(std::fs::read_to_string(a.cwd.join("src.txt")).unwrap(), "s\n");
    a.shutdown_and_wait();
}

/// A patch that cannot apply is never asked: an add under a regular file, and
/// two writes one inside the other.
#[test]
fn inapplicable_patches_are_never_asked() {
    let mut a = spawn();
    std::fs::write(a.cwd.join("plain"), "a file\n").unwrap();
    a.start(json!({}));
    for (turn, patch) in [
        ("t1", add_patch("plain/child.txt")),
        ("t2", add_patch("plain/deeper/child.txt")),
        ("t3", "*** Begin Patch\n*** Add File: d\n+1\n*** Add File: d/e\n+2\n*** End Patch".to_owned()),
    ] {
        let id = a.say(turn, &patch);
        a.result(id);
        let err = a.event("error");
        eprintln!("{turn}: {}", err["msg"]["message"]);
        assert_eq!(a.turn_end(turn)["type"], "task_complete");
    }
    assert!(!a.lines.iter().any(|l| l.contains("approval/patch")), "asked: {:?}", a.lines);
    assert!(!a.cwd.join("d").exists());
    assert_eq!(std::fs::read_to_string(a.cwd.join("plain")).unwrap(), "a file\n");
    a.shutdown_and_wait();
}

/// `ask_unless_read_only` compared only the file name: a workspace program
/// named `cat` ran unasked, and `git status` runs `core.fsmonitor` from the
/// workspace's `.git/config`. Paths, PATH entries in the workspace and git
/// all ask now; a bare `cat` from the system still does not.
#[test]
fn read_only_means_a_system_program_by_bare_name() {
    let mut s = Spawn::new();
    let cwd = s.cwd();
    std::fs::create_dir(cwd.join("tools")).unwrap();
    std::fs::create_dir(cwd.join("pathbin")).unwrap();
    let evil = "#!/bin/sh\ntouch \"ran-$(basename \"$0\")\"\n";
    for p in [cwd.join("tools/cat"), cwd.join("cat"), cwd.join("pathbin/ls")] {
        std::fs::write(&p, evil).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    // PATH finds `ls` in the workspace first.
    let path = format!("{}:{}", cwd.join("pathbin").display(), std::env::var("PATH").unwrap_or_default());
    s = s.env("PATH", &path);
    let mut a = s.spawn();
    a.start(json!({"approval_policy": "ask_unless_read_only"}));
    for (turn, line) in [
        ("t1", "$ ./tools/cat x"),
        ("t2", "$ ./cat x"),
        ("t3", "$ ls"),
        ("t4", "$ git status"),
        ("t5", "$ git -c core.fsmonitor=./tools/cat status"),
    ] {
        let id = a.say(turn, line);
        a.result(id);
        let req = a.approval();
        assert_eq!(req["params"]["turn_id"], turn, "{line} was not asked");
        a.answer(&req, "denied");
        a.turn_end(turn);
    }
    // A system program by bare name still runs unasked.
    std::fs::write(a.cwd.join("x"), "hello\n").unwrap();
    let id = a.say("t6", "$ cat x");
    a.result(id);
    let end = a.event("exec_command_end");
    assert_eq!(end["msg"]["output"], "hello\n");
    a.turn_end("t6");
    let asked = a.lines.iter().filter(|l| l.contains("\"approval/exec\"")).count();
    assert_eq!(asked, 5);
    for ran in ["ran-cat", "ran-ls"] {
        assert!(!a.cwd.join(ran).exists(), "{ran}");
    }
    a.shutdown_and_wait();
}

/// Deleting an 18 MB file used to put all 18 MB in the approval line (the
/// host killed the agent for it). The content is capped and says so; the
/// deletion itself applies.
#[test]
fn an_18_mb_delete_is_asked_with_truncated_content_and_applied() {
    let mut a = spawn();
    let big = "0123456789abcdef".repeat(18 * 1024 * 1024 / 16);
    std::fs::write(a.cwd.join("big.log"), &big).unwrap();
    a.start(json!({}));
    let id = a.say("t1", "*** Begin Patch\n*** Delete File: big.log\n*** End Patch");
    a.result(id);
    let req = a.approval();
    let change = &req["params"]["changes"]["big.log"];
    assert_eq!(change["type"], "delete");
    assert_eq!(change["truncated"], true);
    assert_eq!(change["total_bytes"], big.len() as u64);
    assert_eq!(change["content"].as_str().unwrap().len(), 64 * 1024);
    assert!(big.starts_with(change["content"].as_str().unwrap()));
    a.answer(&req, "approved");
    let begin = a.event("patch_apply_begin");
    assert_eq!(begin["msg"]["changes"]["big.log"]["truncated"], true);
    assert_eq!(a.event("patch_apply_end")["msg"]["success"], true);
    a.turn_end("t1");
    assert!(!a.cwd.join("big.log").exists());
    let longest = a.lines.iter().map(String::len).max().unwrap();
    assert!(longest < 2 * 1024 * 1024, "a {longest}-byte line");
    a.shutdown_and_wait();
}

/// A command killed by an abort used to get no `exec_command_end`. Every
/// begin has exactly one end, before the turn's end: interrupt, shutdown,
/// end of input, timeout.
#[test]
fn a_killed_command_still_ends_interrupt_shutdown_eof_and_timeout() {
    for how in ["interrupt", "shutdown", "eof", "timeout"] {
        let mut a = spawn();
        let timeout = if how == "timeout" { 300 } else { 60_000 };
        a.start(json!({"approval_policy": "never_ask", "exec": {"timeout_ms": timeout}}));
        let id = a.say("t1", "$ sh -c 'echo started; sleep 30'");
        a.result(id);
        let begin = a.event("exec_command_begin");
        a.event("exec_command_output_delta");
        match how {
            "interrupt" => {
                a.interrupt("stop");
            }
            "shutdown" => {
                a.shutdown("bye");
            }
            "eof" => a.close_stdin(),
            _ => {}
        }
        let end = a.event("exec_command_end");
        assert_eq!(end["msg"]["call_id"], begin["msg"]["call_id"], "{how}");
        assert_eq!(end["msg"]["exit_code"], 137, "{how}: {end}");
        assert_eq!(end["msg"]["output"], "started\n", "{how}: {end}");
        assert_eq!(end["msg"]["interrupted"], how != "timeout", "{how}: {end}");
        assert_eq!(end["msg"]["timed_out"], how == "timeout", "{how}: {end}");
        let turn_end = a.turn_end("t1");
        let expected = match how {
            "interrupt" => json!({"type": "turn_aborted", "reason": "interrupted"}),
            "timeout" => json!("task_complete"),
            _ => json!({"type": "turn_aborted", "reason": "shutdown"}),
        };
        if how == "timeout" {
            assert_eq!(turn_end["type"], expected);
        } else {
            assert_eq!(turn_end["type"], expected["type"], "{how}");
            assert_eq!(turn_end["reason"], expected["reason"], "{how}");
        }
        // Exactly one end for the one begin, and it comes before the turn's end.
        let pos = |kind: &str| a.lines.iter().position(|l| l.contains(&format!("\"type\":\"{kind}\"")));
        let ends = a.lines.iter().filter(|l| l.contains("\"type\":\"exec_command_end\"")).count();
        assert_eq!(ends, 1, "{how}");
        let turn_end_kind = if how == "timeout" { "task_complete" } else { "turn_aborted" };
        assert!(pos("exec_command_end") < pos(turn_end_kind), "{how}");
        match how {
            "interrupt" | "timeout" => a.shutdown_and_wait(),
            "shutdown" => {
                a.event("shutdown_complete");
                assert!(a.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()));
            }
            _ => {
                assert!(a.wait_exit(Duration::from_secs(5)).is_some_and(|s| s.success()));
                a.drain();
                assert!(a.lines.last().unwrap().contains("shutdown_complete"));
            }
        }
    }
}

/// PROTOCOL.md says "send interrupt first"; the input right after it used
/// to be rejected with -32014 (6 times in 6). It now waits for the aborted
/// turn's `turn_aborted` and starts: 50 times in a row, never rejected.
#[test]
fn interrupt_then_user_input_is_never_rejected_50_times() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t0", "$ sleep 30");
    a.result(id);
    for i in 1..=50 {
        let prev = format!("t{}", i - 1);
        let next = format!("t{i}");
        a.interrupt(&format!("stop{i}"));
        let id = a.say(&next, "$ sleep 30");
        let r = a.response(id);
        assert!(r.get("error").is_none(), "round {i}: {r}");
        let aborted = a.turn_end(&prev);
        assert_eq!(aborted["type"], "turn_aborted", "round {i}");
        // The new turn starts after the old one ended.
        let started = a.find(&format!("task_started of {next}"), |m| {
            is_event(m, "task_started") && m["params"]["id"] == next.as_str()
        });
        assert_eq!(started["params"]["msg"]["turn_id"], next.as_str());
    }
    let order: Vec<usize> = (1..=50)
        .map(|i| {
            let ended = a
                .lines
                .iter()
                .position(|l| l.contains("turn_aborted") && l.contains(&format!("\"id\":\"t{}\"", i - 1)))
                .unwrap();
            let started = a
                .lines
                .iter()
                .position(|l| l.contains("task_started") && l.contains(&format!("\"id\":\"t{i}\"")))
                .unwrap();
            assert!(ended < started, "round {i}");
            started
        })
        .collect();
    assert_eq!(order.len(), 50);
    a.interrupt("last");
    a.turn_end("t50");
    a.shutdown_and_wait();
}

/// `on_busy: queue` accepts an input during a turn and runs it after;
/// `replace` aborts the running turn (`replaced`) and runs the new one;
/// the default still rejects (-32014).
#[test]
fn on_busy_queue_replace_and_reject() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask", "on_busy": "queue"}));
    let id = a.say("t1", "$ sleep 0.3\nfirst");
    a.result(id);
    a.event("exec_command_begin");
    let id = a.say("t2", "second");
    assert_eq!(a.result(id)["id"], "t2", "accepted at once");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    let t2 = a.turn_end("t2");
    assert_eq!(t2["type"], "task_complete");
    assert_eq!(t2["last_agent_message"], "second");
    let started_t2 = a.lines.iter().position(|l| l.contains("task_started") && l.contains("\"t2\"")).unwrap();
    let ended_t1 = a.lines.iter().position(|l| l.contains("task_complete") && l.contains("\"t1\"")).unwrap();
    assert!(ended_t1 < started_t2);
    a.shutdown_and_wait();

    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask", "on_busy": "replace"}));
    let id = a.say("t1", "$ sleep 30");
    a.result(id);
    a.event("exec_command_begin");
    let id = a.say("t2", "instead");
    a.result(id);
    let end = a.event("exec_command_end");
    assert_eq!(end["msg"]["interrupted"], true);
    let t1 = a.turn_end("t1");
    assert_eq!(t1["type"], "turn_aborted");
    assert_eq!(t1["reason"], "replaced");
    assert_eq!(a.turn_end("t2")["type"], "task_complete");
    a.shutdown_and_wait();

    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask"}));
    let id = a.say("t1", "$ sleep 30");
    a.result(id);
    a.event("exec_command_begin");
    let id = a.say("t2", "rejected");
    assert_eq!(a.error(id)["code"], -32014);
    a.interrupt("stop");
    a.turn_end("t1");
    a.shutdown_and_wait();
}

/// An interrupt stops the inputs queued behind the running turn too: each
/// ends with `turn_aborted` (no `task_started`), after the running turn's.
#[test]
fn interrupt_cancels_queued_inputs_in_order() {
    let mut a = spawn();
    a.start(json!({"approval_policy": "never_ask", "on_busy": "queue"}));
    let id = a.say("t1", "$ sleep 30");
    a.result(id);
    a.event("exec_command_begin");
    let id = a.say("t2", "queued");
    a.result(id);
    a.interrupt("stop");
    assert_eq!(a.turn_end("t1")["reason"], "interrupted");
    let t2 = a.turn_end("t2");
    assert_eq!(t2["type"], "turn_aborted");
    assert_eq!(t2["reason"], "interrupted");
    assert!(!a.lines.iter().any(|l| l.contains("task_started") && l.contains("\"t2\"")));
    // The session goes on.
    let id = a.say("t3", "after");
    a.result(id);
    assert_eq!(a.turn_end("t3")["type"], "task_complete");
    a.shutdown_and_wait();
}
