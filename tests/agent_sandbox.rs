//! The command sandbox on the real kernel (Landlock + seccomp), with real
//! processes: what a sandboxed command can and cannot write or reach,
//! escalation, and a kernel without a sandbox (simulated).
//!
//! Workspaces live outside `/tmp` (`tempdir_outside_scratch`): `/tmp` is the
//! sandbox's scratch space (writable), so `../out` from a workspace there
//! would be allowed.

mod agent_support;

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_support::*;
use serde_json::{Value, json};

/// A parent dir (outside `/tmp`) holding the workspace `ws` and a fake `home`.
struct Place {
    _dir: tempfile::TempDir,
    parent: PathBuf,
    ws: PathBuf,
    home: PathBuf,
}

fn place() -> Place {
    let dir = tempdir_outside_scratch();
    let parent = dir.path().canonicalize().unwrap();
    let ws = parent.join("ws");
    let home = parent.join("home");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&home).unwrap();
    Place { _dir: dir, parent, ws, home }
}

fn agent(p: &Place) -> Agent {
    Spawn::new().env("HOME", &p.home).env("TMPDIR", "/tmp").spawn()
}

/// Runs one `$ ` line as its own turn; returns its `exec_command_end` and
/// `exec_command_begin` messages.
fn run(a: &mut Agent, turn: &str, line: &str) -> (Value, Value) {
    let id = a.say(turn, &format!("$ {line}"));
    a.result(id);
    let begin = a.event("exec_command_begin")["msg"].clone();
    let end = a.event("exec_command_end")["msg"].clone();
    assert_eq!(a.turn_end(turn)["type"], "task_complete");
    (end, begin)
}

fn exit(end: &Value) -> i64 {
    end["exit_code"].as_i64().unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn initialize_advertises_what_the_kernel_offers() {
    let mut a = spawn();
    let init = a.initialize();
    let s = &init["capabilities"]["sandbox"];
    // This machine (and CI, which runs on it) has Landlock ABI 7 and seccomp.
    assert!(s["landlock_abi"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["seccomp"], true);
    assert_eq!(s["modes"], json!(["workspace_write", "read_only", "off"]));
    a.close_stdin();
    assert!(a.wait_exit(TIMEOUT).is_some());
}

#[test]
fn workspace_write_confines_writes_to_the_workspace_and_tmp() {
    let p = place();
    let mut a = agent(&p);
    a.start(json!({"cwd": p.ws, "approval_policy": "never_ask", "sandbox": "workspace_write"}));

    let (end, begin) = run(&mut a, "t1", "touch in");
    assert_eq!(exit(&end), 0, "{end}");
    assert!(p.ws.join("in").exists());
    assert!(begin.get("unsandboxed").is_none(), "a sandboxed command is not marked: {begin}");

    let (end, _) = run(&mut a, "t2", "touch ../out");
    assert_ne!(exit(&end), 0);
    assert!(end["output"].as_str().unwrap().contains("Permission denied"), "{end}");

    let (end, _) = run(&mut a, "t3", r#"sh -c 'echo x > "$HOME/x"'"#);
    assert_ne!(exit(&end), 0, "{end}");

    // A symlink to / inside the workspace leads nowhere writable.
    let (end, _) = run(&mut a, "t4", "ln -s / root");
    assert_eq!(exit(&end), 0);
    let (end, _) = run(&mut a, "t5", "sh -c 'echo x > root/tmp/../etc/deputy-sandbox-x'");
    assert_ne!(exit(&end), 0);
    let out2 = format!("root{}/out2", p.parent.display());
    let (end, _) = run(&mut a, "t6", &format!("sh -c 'echo x > {out2}'"));
    assert_ne!(exit(&end), 0);

    // mv out of the workspace fails and leaves the file where it was.
    let (end, _) = run(&mut a, "t7", "sh -c 'echo data > moveme && mv moveme ../moved'");
    assert_ne!(exit(&end), 0, "{end}");
    assert_eq!(std::fs::read_to_string(p.ws.join("moveme")).unwrap(), "data\n");

    // Children, grandchildren and a detached process inherit the rules.
    let (end, _) = run(
        &mut a,
        "t8",
        r#"sh -c 'sh -c "touch ../child"; sh -c "sh -c \"touch ../grandchild\""; setsid sh -c "touch ../detached"; exit 0'"#,
    );
    assert_eq!(exit(&end), 0);
    let denials = end["output"].as_str().unwrap().matches("Permission denied").count();
    assert_eq!(denials, 3, "{end}");

    // Reading anywhere works; the scratch dir is writable.
    let (end, _) = run(&mut a, "t9", "cat /etc/hostname");
    assert_eq!(exit(&end), 0, "{end}");
    assert_eq!(end["output"].as_str().unwrap(), std::fs::read_to_string("/etc/hostname").unwrap());
    let scratch = tempfile::tempdir_in("/tmp").unwrap();
    let (end, _) = run(&mut a, "t10", &format!("touch {}/scratch", scratch.path().display()));
    assert_eq!(exit(&end), 0, "{end}");
    assert!(scratch.path().join("scratch").exists());
    let (end, _) = run(&mut a, "t11", "sh -c 'echo quiet > /dev/null'");
    assert_eq!(exit(&end), 0, "{end}");
    a.shutdown_and_wait();

    // Nothing landed outside the workspace.
    assert_eq!(listing(&p.parent), ["home", "ws"]);
    assert!(listing(&p.home).is_empty());
    assert!(!Path::new("/etc/deputy-sandbox-x").exists());
    assert_eq!(listing(&p.ws), ["in", "moveme", "root"]);
}

/// A TCP server on 127.0.0.1 that counts the connections it accepted.
fn tcp_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut s = String::new();
            let _ = conn.read_to_string(&mut s);
            if tx.send(s).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

#[test]
fn the_network_is_denied_unless_allowed() {
    let (port, rx) = tcp_server();
    let tcp = format!("bash -c 'echo hello > /dev/tcp/127.0.0.1/{port}'");
    let udp = format!("bash -c 'echo hello > /dev/udp/127.0.0.1/{port}'");
    let p = place();

    let mut a = agent(&p);
    a.start(json!({"cwd": p.ws, "approval_policy": "never_ask"}));
    let (end, _) = run(&mut a, "t1", &tcp);
    assert_ne!(exit(&end), 0, "{end}");
    assert!(end["output"].as_str().unwrap().contains("Operation not permitted"), "{end}");
    let (end, _) = run(&mut a, "t2", &udp);
    assert_ne!(exit(&end), 0, "{end}");
    // Unix sockets still work (socketpair, AF_UNIX).
    let (end, _) = run(&mut a, "t3", "python3 -c 'import socket; socket.socketpair(); print(\"ok\")'");
    assert_eq!(end["output"], "ok\n", "{end}");
    a.shutdown_and_wait();
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "nothing reached the server");

    let mut a = agent(&p);
    a.start(
        json!({"cwd": p.ws, "approval_policy": "never_ask", "sandbox": "workspace_write", "network": true}),
    );
    let (end, _) = run(&mut a, "t1", &tcp);
    assert_eq!(exit(&end), 0, "{end}");
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), "hello\n");
    // The file-system rules still hold with the network allowed.
    let (end, _) = run(&mut a, "t2", "touch ../out");
    assert_ne!(exit(&end), 0);
    a.shutdown_and_wait();
    assert!(!p.parent.join("out").exists());
}

#[test]
fn read_only_writes_nothing_but_tmp_and_patches_follow_the_same_rule() {
    let p = place();
    let mut a = agent(&p);
    a.start(json!({"cwd": p.ws, "approval_policy": "never_ask", "sandbox": "read_only"}));
    let (end, _) = run(&mut a, "t1", "touch in");
    assert_ne!(exit(&end), 0, "{end}");
    let (end, _) = run(&mut a, "t2", "touch ../out");
    assert_ne!(exit(&end), 0);
    let scratch = tempfile::tempdir_in("/tmp").unwrap();
    let (end, _) = run(&mut a, "t3", &format!("touch {}/ro", scratch.path().display()));
    assert_eq!(exit(&end), 0, "{end}");
    // A patch into cwd is outside the (empty) workspace: never_ask refuses it.
    let id = a.say("t4", "*** Begin Patch\n*** Add File: p.txt\n+x\n*** End Patch");
    a.result(id);
    let err = a.event("error");
    assert!(err["msg"]["message"].as_str().unwrap().contains("outside"), "{err}");
    a.turn_end("t4");
    a.shutdown_and_wait();
    assert!(listing(&p.ws).is_empty());
    assert!(scratch.path().join("ro").exists());
    assert_eq!(listing(&p.parent), ["home", "ws"]);
}

fn approvals_in(a: &Agent) -> Vec<Value> {
    a.lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|m| m["method"] == "approval/exec")
        .collect()
}

#[test]
fn ask_to_escalate_asks_once_after_a_denial() {
    let p = place();
    let mut a = agent(&p);
    let configured = a.start(json!({"cwd": p.ws, "approval_policy": "ask_to_escalate"}));

    // Inside the sandbox's rules: runs without asking.
    let (end, _) = run(&mut a, "t0", "touch in");
    assert_eq!(exit(&end), 0);
    assert!(approvals_in(&a).is_empty());

    // Blocked, escalated, approved: re-run outside, succeeds.
    let id = a.say("t1", "$ touch ../esc");
    a.result(id);
    let first_begin = a.event("exec_command_begin")["msg"].clone();
    assert!(first_begin.get("unsandboxed").is_none(), "{first_begin}");
    let first = a.event("exec_command_end")["msg"].clone();
    assert_ne!(exit(&first), 0);
    let req = a.approval();
    let params = &req["params"];
    assert_eq!(params["unsandboxed"], true);
    assert_eq!(params["command"], json!(["touch", "../esc"]));
    let call_id = params["call_id"].as_str().unwrap().to_owned();
    assert_eq!(params["approval_id"], format!("{call_id}-unsandboxed"));
    let reason = params["reason"].as_str().unwrap();
    assert!(
        reason.contains("workspace_write")
            && reason.contains("../esc")
            && reason.contains("Permission denied"),
        "{reason}"
    );
    assert!(!p.parent.join("esc").exists());
    a.answer(&req, "approved");
    let begin = a.event("exec_command_begin")["msg"].clone();
    assert_eq!(begin["unsandboxed"], true);
    assert_eq!(begin["call_id"], format!("{call_id}-unsandboxed"));
    let end = a.event("exec_command_end")["msg"].clone();
    assert_eq!(exit(&end), 0, "{end}");
    assert_eq!(a.turn_end("t1")["type"], "task_complete");
    assert!(p.parent.join("esc").exists());
    assert_eq!(approvals_in(&a).len(), 1, "exactly one escalation request");

    // Blocked, escalated, denied: the model gets the sandboxed failure.
    let id = a.say("t2", "$ touch ../denied");
    a.result(id);
    let req = a.approval();
    assert_eq!(req["params"]["unsandboxed"], true);
    a.answer(&req, "denied");
    assert_eq!(a.turn_end("t2")["type"], "task_complete");
    assert_eq!(approvals_in(&a).len(), 2);
    a.shutdown_and_wait();
    assert!(!p.parent.join("denied").exists());
    let begins = a.lines.iter().filter(|l| l.contains("\"exec_command_begin\"")).count();
    assert_eq!(begins, 4, "t0, t1 sandboxed + re-run, t2 sandboxed only");
    let rollout = std::fs::read_to_string(configured["rollout_path"].as_str().unwrap()).unwrap();
    let results: Vec<Value> = rollout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "tool_result")
        .collect();
    let last = &results.last().unwrap()["output"];
    let last = last.as_str().unwrap();
    assert!(last.contains("Permission denied") && last.contains("denied"), "{last}");
}

#[test]
fn a_kernel_without_landlock_is_an_error_unless_best_effort() {
    let p = place();
    let mut a = Spawn::new().env("DEPUTY_TEST_NO_LANDLOCK", "1").spawn();
    let init = a.initialize();
    assert_eq!(init["capabilities"]["sandbox"]["landlock_abi"], 0);
    assert_eq!(init["capabilities"]["sandbox"]["modes"], json!(["off"]));
    let id = a.request("session/start", json!({"cwd": p.ws, "sandbox": "workspace_write"}));
    let err = a.error(id);
    assert_eq!(err["code"], -32016, "{err}");
    assert!(err["message"].as_str().unwrap().contains("Landlock"), "{err}");
    assert_eq!(err["data"]["landlock_abi"], 0);
    a.close_stdin();
    assert!(a.wait_exit(TIMEOUT).is_some());

    // Best effort (explicit, or by leaving `sandbox` out): a warning, then
    // commands run unsandboxed and are marked so.
    for extra in [json!({"sandbox": "read_only", "sandbox_best_effort": true}), json!({})] {
        let mut a = Spawn::new().env("DEPUTY_TEST_NO_LANDLOCK", "1").env("HOME", &p.home).spawn();
        a.initialize();
        let mut params = json!({"cwd": p.ws, "approval_policy": "never_ask"});
        params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let id = a.request("session/start", params);
        let warning = a.event("warning");
        assert!(warning["msg"]["message"].as_str().unwrap().contains("UNSANDBOXED"), "{warning}");
        a.event("session_configured");
        a.result(id);
        let (end, begin) = run(&mut a, "t1", "true");
        assert_eq!(exit(&end), 0);
        assert_eq!(begin["unsandboxed"], true);
        a.shutdown_and_wait();
        let pos =
            |kind: &str| a.lines.iter().position(|l| l.contains(&format!("\"type\":\"{kind}\""))).unwrap();
        assert!(pos("warning") < pos("session_configured"));
    }

    // `off` needs nothing, and the escalation policy then asks up front.
    let mut a = Spawn::new().env("DEPUTY_TEST_NO_LANDLOCK", "1").spawn();
    a.start(json!({"cwd": p.ws, "sandbox": "off", "approval_policy": "ask_to_escalate"}));
    let id = a.say("t1", "$ true");
    a.result(id);
    let req = a.approval();
    assert!(req["params"].get("unsandboxed").is_none());
    a.answer(&req, "approved");
    assert_eq!(a.event("exec_command_begin")["msg"]["unsandboxed"], true);
    a.turn_end("t1");
    assert!(!a.lines.iter().any(|l| l.contains("\"warning\"")));
    a.shutdown_and_wait();
}

#[test]
fn deputy_exec_marks_commands_run_outside_the_sandbox() {
    let p = place();
    let exec = |extra: &[&str], prompt: &str| {
        let out = std::process::Command::new(bin())
            .arg("exec")
            .arg("--home")
            .arg(&p.home)
            .arg("--cwd")
            .arg(&p.ws)
            .args(extra)
            .args(["--approve", "exec", prompt])
            .env_remove("DEPUTY_HOME")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = exec(&["--sandbox", "off"], "$ touch ../off");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("[unsandboxed] $ touch ../off"), "{out}");
    assert!(p.parent.join("off").exists());
    // A failed command does not fail the turn: the exit status stays 0.
    let (_, out) = exec(&["--sandbox", "workspace-write"], "$ touch ../confined");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("$ touch ../confined") && !out.contains("[unsandboxed]"), "{out}");
    assert!(!p.parent.join("confined").exists());
    let (_, out) = exec(&["--sandbox", "read-only"], "$ touch here");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!p.ws.join("here").exists());
}
