//! A small raw-JSON-lines client for end-to-end tests of `deputy agent`: spawns
//! the real binary, reads its stdout on a thread, and lets tests wait for
//! responses, events and requests by predicate (keeping everything it read,
//! in order, for assertions about ordering and stdout purity).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_deputy")
}

/// A running `deputy agent`.
pub struct Agent {
    pub child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    /// Every stdout line, raw, in order.
    pub lines: Vec<String>,
    /// Parsed messages not yet taken by a `find`.
    pending: VecDeque<Value>,
    stderr: Arc<Mutex<String>>,
    next_id: i64,
    pub home: PathBuf,
    pub cwd: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

pub struct Spawn {
    pub cmd: Command,
    home_path: PathBuf,
    home: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl Spawn {
    pub fn new() -> Spawn {
        let home = tempfile::tempdir().unwrap();
        let cwd = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("agent").arg("--home").arg(home.path());
        cmd.env_remove("RUST_LOG").env_remove("DEPUTY_HOME");
        Spawn { cmd, home_path: home.path().to_path_buf(), home, cwd }
    }

    /// Passes the home in `DEPUTY_HOME` instead of `--home`.
    pub fn home_from_env(mut self) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("agent").env_remove("RUST_LOG").env("DEPUTY_HOME", &self.home_path);
        self.cmd = cmd;
        self
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn cwd(&self) -> PathBuf {
        self.cwd.path().canonicalize().unwrap()
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// Uses this home instead of a fresh one (the fresh one is dropped).
    pub fn with_home(mut self, home: &Path) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("agent").arg("--home").arg(home);
        cmd.env_remove("RUST_LOG").env_remove("DEPUTY_HOME");
        for (k, v) in self.cmd.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        self.cmd = cmd;
        self.home_path = home.to_path_buf();
        let _ = std::fs::create_dir_all(home);
        self
    }

    pub fn spawn(mut self) -> Agent {
        let home = self.home_path.clone();
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deputy agent");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let s2 = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s2.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        let cwd = self.cwd();
        Agent {
            stdin: child.stdin.take(),
            child,
            rx,
            lines: Vec::new(),
            pending: VecDeque::new(),
            stderr,
            next_id: 1000,
            home,
            cwd,
            _dirs: vec![self.home, self.cwd],
        }
    }
}

impl Default for Spawn {
    fn default() -> Self {
        Spawn::new()
    }
}

pub fn spawn() -> Agent {
    Spawn::new().spawn()
}

pub fn is_event(m: &Value, kind: &str) -> bool {
    m["method"] == "event" && m["params"]["msg"]["type"] == kind
}

impl Agent {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string());
    }

    pub fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends a request; returns its id.
    pub fn request(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    fn pump(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        match self.rx.recv_timeout(deadline - now) {
            Ok(line) => {
                let trimmed = line.trim_end_matches('\n');
                let v: Value = serde_json::from_str(trimmed)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {trimmed:?}"));
                self.lines.push(trimmed.to_owned());
                self.pending.push_back(v);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(5));
                false
            }
        }
    }

    /// The first message not yet taken that matches, waiting up to `timeout`.
    pub fn try_find(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        loop {
            if let Some(i) = self.pending.iter().skip(checked).position(&pred) {
                return self.pending.remove(checked + i);
            }
            checked = self.pending.len();
            if !self.pump(deadline) && Instant::now() >= deadline {
                return None;
            }
        }
    }

    pub fn find(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.try_find(TIMEOUT, pred) {
            Some(v) => v,
            None => panic!(
                "timed out waiting for {what}\nunconsumed: {:#?}\nstdout so far:\n{}\nstderr:\n{}",
                self.pending,
                self.lines.join("\n"),
                self.stderr()
            ),
        }
    }

    /// The response to request `id` (result or error).
    pub fn response(&mut self, id: i64) -> Value {
        self.find(&format!("the response to {id}"), |m| m["id"] == id && m.get("method").is_none())
    }

    pub fn result(&mut self, id: i64) -> Value {
        let r = self.response(id);
        assert!(r.get("error").is_none(), "request {id} failed: {r}\nstderr:\n{}", self.stderr());
        r["result"].clone()
    }

    pub fn error(&mut self, id: i64) -> Value {
        let r = self.response(id);
        assert!(r.get("result").is_none(), "request {id} succeeded: {r}");
        r["error"].clone()
    }

    /// The next event of this type; returns the `Event` (`{id, msg}`).
    pub fn event(&mut self, kind: &str) -> Value {
        self.find(&format!("event {kind}"), |m| is_event(m, kind))["params"].clone()
    }

    /// Whether an event of this type arrives within `timeout`.
    pub fn no_event(&mut self, kind: &str, timeout: Duration) -> bool {
        self.try_find(timeout, |m| is_event(m, kind)).is_none()
    }

    /// The next agent → host request (`approval/*`).
    pub fn approval(&mut self) -> Value {
        self.find("an approval request", |m| {
            m["method"].as_str().is_some_and(|s| s.starts_with("approval/")) && m.get("id").is_some()
        })
    }

    pub fn answer(&mut self, request: &Value, decision: &str) {
        self.send(json!({"jsonrpc": "2.0", "id": request["id"], "result": {"decision": decision}}));
    }

    pub fn initialize(&mut self) -> Value {
        let id = self.request(
            "initialize",
            json!({"protocol_version": 1, "client_info": {"name": "agent-tests", "version": "0"}}),
        );
        self.result(id)
    }

    /// `initialize` + `session/start` with these extra params (cwd defaults
    /// to the agent's temp cwd); returns the `session_configured` msg.
    pub fn start(&mut self, extra: Value) -> Value {
        self.initialize();
        let mut params = json!({"cwd": self.cwd, "source": "exec"});
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        let id = self.request("session/start", params);
        let configured = self.event("session_configured");
        let result = self.result(id);
        assert_eq!(result["session_id"], configured["msg"]["session_id"]);
        configured["msg"].clone()
    }

    pub fn submit(&mut self, sub_id: &str, op: Value) -> i64 {
        self.request("submit", json!({"id": sub_id, "op": op}))
    }

    /// Submits a user input of one text item; returns the request id.
    pub fn say(&mut self, sub_id: &str, text: &str) -> i64 {
        self.submit(sub_id, json!({"type": "user_input", "items": [{"type": "text", "text": text}]}))
    }

    pub fn interrupt(&mut self, sub_id: &str) -> i64 {
        self.submit(sub_id, json!({"type": "interrupt"}))
    }

    pub fn shutdown(&mut self, sub_id: &str) -> i64 {
        self.submit(sub_id, json!({"type": "shutdown"}))
    }

    /// Waits for the turn's end event (`task_complete` or `turn_aborted`).
    pub fn turn_end(&mut self, turn_id: &str) -> Value {
        let t = turn_id.to_owned();
        self.find(&format!("the end of turn {turn_id}"), move |m| {
            (is_event(m, "task_complete") || is_event(m, "turn_aborted")) && m["params"]["id"] == t.as_str()
        })["params"]["msg"]
            .clone()
    }

    /// Shuts down and checks the exit.
    pub fn shutdown_and_wait(&mut self) {
        let id = self.shutdown("bye");
        self.result(id);
        let done = self.event("shutdown_complete");
        assert_eq!(done["id"], "bye");
        let status = self.wait_exit(Duration::from_secs(5)).expect("exits after shutdown");
        assert!(status.success(), "{status:?}\nstderr:\n{}", self.stderr());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads the rest of stdout (after exit) into `lines`.
    pub fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.pump(deadline) {}
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a process is gone (no such pid, or a zombie).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits until the process is gone.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if process_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    process_gone(pid)
}

/// Waits for a file to exist and hold a pid.
pub fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The items of a rollout file (`type` values), in order.
pub fn rollout_types(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Every stdout line must be one JSON-RPC 2.0 message.
pub fn assert_protocol_lines(lines: &[String]) {
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
        let is_request_or_notification = v["method"].is_string();
        let is_response = v.get("id").is_some() && (v.get("result").is_some() ^ v.get("error").is_some());
        assert!(is_request_or_notification || is_response, "not a JSON-RPC message: {line}");
    }
}

/// A temporary directory outside the sandbox's scratch space (`/tmp` and
/// `$TMPDIR` are writable to every sandboxed command), for a workspace whose
/// `../` must be out of bounds: Cargo's target tmp dir, unless the checkout
/// itself lives under a scratch dir (a clone in `/tmp`), then `/var/tmp`.
pub fn tempdir_outside_scratch() -> tempfile::TempDir {
    let scratch: Vec<std::path::PathBuf> = ["/tmp".into(), std::env::var_os("TMPDIR").unwrap_or_default()]
        .into_iter()
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let outside =
        |dir: &std::path::Path| dir.canonicalize().is_ok_and(|d| !scratch.iter().any(|s| d.starts_with(s)));
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let base = if outside(target) { target } else { std::path::Path::new("/var/tmp") };
    assert!(outside(base), "no directory outside the sandbox's scratch dirs for the test ({base:?})");
    tempfile::tempdir_in(base).unwrap()
}
