//! `deputy agent` on each kind of stdio a host spawns it with: pipes (Rust,
//! Python, a shell), socketpairs (Node's `child_process`), and stdout and
//! stderr sharing one pipe (a shell's `2>&1 |`).
//!
//! The agent drives pipes and sockets with its runtime's reactor instead of
//! tokio's blocking-pool stdio (`crates/deputy-agent/src/stdio.rs`). It must
//! do so without changing the flags of the descriptions it was given (fd 2
//! may share stdout's), and a flood of events written while nobody reads
//! must arrive whole once someone does.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// Events in the flood: far more than a pipe or socket buffer holds, so the
/// agent's writes must wait for room.
const FLOOD: u64 = 20_000;

const O_NONBLOCK: u32 = 0o4000;

/// The `flags:` of `/proc/PID/fdinfo/FD`.
fn fd_flags(pid: u32, fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).expect("fdinfo");
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).expect("a flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags")
}

/// What each of the agent's fds points at (`pipe:[123]`, `socket:[456]`, …).
fn fd_targets(pid: u32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd folder")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?.to_string_lossy().into_owned()))
        })
        .collect();
    fds.sort();
    fds
}

struct Run {
    home: tempfile::TempDir,
    work: tempfile::TempDir,
    scenario: std::path::PathBuf,
}

impl Run {
    fn new() -> Run {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let scenario = work.path().join("flood.jsonl");
        let steps = json!({"steps": [{"type": "flood", "n": FLOOD, "delta": "x".repeat(100)}]});
        std::fs::write(&scenario, format!("{steps}\n")).unwrap();
        Run { home, work, scenario }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deputy"));
        cmd.arg("agent").arg("--home").arg(self.home.path()).env("RUST_LOG", "deputy_agent=debug");
        cmd.env_remove("DEPUTY_HOME");
        cmd
    }

    /// The whole conversation, written at once: initialize, a session playing
    /// the flood, the turn, and shutdown.
    fn requests(&self) -> String {
        let lines = [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                   "params": {"protocol_version": 1, "client_info": {"name": "stdio-test"}}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "session/start",
                   "params": {"cwd": self.work.path(),
                              "model": {"name": "script", "scenario": self.scenario}}}),
            json!({"jsonrpc": "2.0", "id": 3, "method": "submit",
                   "params": {"id": "flood", "op": {"type": "user_input", "items": [{"type": "text", "text": "go"}]}}}),
        ];
        lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// Reads the agent's protocol lines until `task_complete`; returns the delta
/// count. Every line must be JSON-RPC.
fn read_flood(reader: &mut impl BufRead) -> u64 {
    let mut deltas = 0;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).expect("read stdout") > 0, "stdout ended before task_complete");
        let message: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
        assert!(message.get("error").is_none(), "{line}");
        match message["params"]["msg"]["type"].as_str() {
            Some("agent_message_delta") => deltas += 1,
            Some("task_complete") => return deltas,
            _ => {}
        }
    }
}

/// Ends the conversation by closing stdin (EOF), reads stdout and stderr to
/// their ends, waits for exit 0; returns stderr.
fn finish(mut child: Child, stdin: impl Write, rest: &mut impl Read) -> String {
    drop(stdin);
    let mut tail = Vec::new();
    rest.read_to_end(&mut tail).expect("read the rest of stdout");
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut log).unwrap();
    }
    for _ in 0..500 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the agent exited with {status}\n{log}");
            let tail = String::from_utf8(tail).expect("UTF-8");
            assert!(tail.contains("shutdown_complete"), "no shutdown_complete after EOF: {tail}");
            return log;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("the agent did not exit after EOF");
}

/// Asserts fds 0–2 kept their flags (blocking), and the agent holds another
/// fd on the same object as `fd`: what its reactor drives.
fn assert_reactor_copy(pid: u32, fd: i32, nonblocking: bool) {
    let targets = fd_targets(pid);
    let target = &targets.iter().find(|(f, _)| *f == fd).expect("the fd is open").1;
    let copies: Vec<i32> = targets.iter().filter(|(f, t)| *f > 2 && t == target).map(|(f, _)| *f).collect();
    assert_eq!(copies.len(), 1, "one reactor copy of fd {fd} ({target}) expected: {targets:?}");
    assert_eq!(fd_flags(pid, fd) & O_NONBLOCK, 0, "fd {fd} was made non-blocking");
    assert_eq!(
        fd_flags(pid, copies[0]) & O_NONBLOCK != 0,
        nonblocking,
        "the copy of fd {fd}: non-blocking expected {nonblocking}"
    );
}

#[test]
fn over_pipes_the_agent_reads_and_writes_reopened_descriptions_and_leaves_its_own_blocking() {
    let run = Run::new();
    let mut child =
        run.command().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdin.write_all(run.requests().as_bytes()).unwrap();
    // Nobody reads for a while: the flood fills the pipe and the agent waits.
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id();
    assert_reactor_copy(pid, 0, true);
    assert_reactor_copy(pid, 1, true);
    assert_eq!(read_flood(&mut stdout), FLOOD);
    let log = finish(child, stdin, &mut stdout);
    for said in
        ["stdin is a pipe: reading it with the reactor", "stdout is a pipe: writing it with the reactor"]
    {
        assert!(log.contains(said), "the agent's log does not say {said:?}:\n{log}");
    }
}

#[test]
fn over_socketpairs_as_node_spawns_it_the_agent_uses_the_reactor_without_changing_any_flag() {
    let run = Run::new();
    let (mut stdin, child_in) = UnixStream::pair().unwrap();
    let (stdout, child_out) = UnixStream::pair().unwrap();
    let child = run
        .command()
        .stdin(Stdio::from(OwnedFd::from(child_in)))
        .stdout(Stdio::from(OwnedFd::from(child_out)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    stdin.write_all(run.requests().as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id();
    // Sockets need no O_NONBLOCK: each call says MSG_DONTWAIT.
    assert_reactor_copy(pid, 0, false);
    assert_reactor_copy(pid, 1, false);
    let mut stdout = BufReader::new(stdout);
    assert_eq!(read_flood(&mut stdout), FLOOD);
    // EOF on a socket: the host shuts its write side down (Node's `end()`).
    stdin.shutdown(std::net::Shutdown::Write).unwrap();
    let log = finish(child, stdin, &mut stdout);
    for said in
        ["stdin is a socket: reading it with the reactor", "stdout is a socket: writing it with the reactor"]
    {
        assert!(log.contains(said), "the agent's log does not say {said:?}:\n{log}");
    }
}

/// `deputy agent 2>&1 | reader`: stdout and stderr are one description. Had
/// the agent made stdout non-blocking, stderr would be too, and its log
/// writes would fail with EAGAIN whenever the pipe is full.
#[test]
fn with_stderr_on_stdouts_description_stderr_stays_blocking() {
    let run = Run::new();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = run
        .command()
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(run.requests().as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id();
    assert_reactor_copy(pid, 1, true);
    assert_eq!(fd_flags(pid, 2) & O_NONBLOCK, 0, "stderr was made non-blocking");
    let mut stdout = BufReader::new(reader);
    assert_eq!(read_flood(&mut stdout), FLOOD);
    finish(child, stdin, &mut stdout);
}
