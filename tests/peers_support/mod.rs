//! The real foreign agents for end-to-end tests: Codex's app-server, Claude
//! Code and codex-acp, as the native binaries their npm packages bring,
//! installed once per machine into the test cache ([`crate::common::npm`]),
//! each run in a private folder against a model mock on 127.0.0.1
//! ([`mock`]), with nothing else of the environment (PEERS.md has the
//! recipes this follows).
//!
//! [`Peer`] is the process with its stdio; [`Drive`] runs a
//! `deputy_foreign` mapper over it: every line the agent writes goes through
//! the mapper, every output is carried out (lines written, approvals
//! answered by the test's policy), and everything is kept for assertions.
//!
//! Needs node and npm (for the installs) and the registry the first time.
//! `DEPUTY_SKIP_PEER_TESTS=1` (or `DEPUTY_SKIP_NODE_TESTS=1`) skips these
//! tests, saying so; otherwise a missing tool or registry fails them with
//! the reason.
#![allow(dead_code)]

pub mod flows;
pub mod mock;

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use deputy_foreign::{Approval, ForeignSession, Output, SubmitError, invariants};
use deputy_protocol::{Event, EventMsg, Op, ReviewDecision};

use crate::common::{self, npm};

/// The pinned versions (PEERS.md).
pub const CODEX_VERSION: &str = "0.171.0";
pub const CLAUDE_VERSION: &str = "2.1.332";
pub const CODEX_ACP_VERSION: &str = "0.16.0";

/// How long one step may take before the test fails (the agents answer in
/// milliseconds; Claude's start takes a second or two on a busy machine).
pub const STEP: Duration = Duration::from_secs(30);

/// True (and says so) when the foreign-agent tests are switched off.
pub fn skip() -> bool {
    for var in ["DEPUTY_SKIP_PEER_TESTS", "DEPUTY_SKIP_NODE_TESTS"] {
        if npm::env_is_1(var) {
            eprintln!(
                "SKIPPED: {var}=1, so the tests of the real Codex / Claude Code / codex-acp did not run"
            );
            return true;
        }
    }
    false
}

#[cfg(target_arch = "x86_64")]
mod platform {
    pub const CODEX: &str = "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex";
    pub const CLAUDE: &str = "node_modules/@anthropic-ai/claude-code-linux-x64/claude";
    pub const CODEX_ACP: &str = "node_modules/@zed-industries/codex-acp-linux-x64/bin/codex-acp";
}

#[cfg(target_arch = "aarch64")]
mod platform {
    pub const CODEX: &str =
        "node_modules/@openai/codex-linux-arm64/vendor/aarch64-unknown-linux-musl/bin/codex";
    pub const CLAUDE: &str = "node_modules/@anthropic-ai/claude-code-linux-arm64/claude";
    pub const CODEX_ACP: &str = "node_modules/@zed-industries/codex-acp-linux-arm64/bin/codex-acp";
}

/// Installs one pinned package (cached) and checks its native binary.
fn installed(
    name: &str,
    spec: &str,
    binary: &str,
    version_arg: Option<(&str, &str)>,
) -> Result<PathBuf, String> {
    let dir = npm::install(name, &[spec], binary, "DEPUTY_SKIP_PEER_TESTS")?;
    let bin = dir.join(binary);
    if let Some((arg, want)) = version_arg {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let out = Command::new(&bin).arg(arg).env_clear().env("PATH", path).output();
        let out = out.map_err(|e| format!("{} does not run: {e}", bin.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains(want) {
            return Err(format!("{} {arg} says {text:?}, not {want}", bin.display()));
        }
    }
    Ok(bin)
}

/// Codex's native binary (`codex-cli 0.171.0`).
pub fn codex_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&BIN, || {
        installed(
            &format!("codex-{CODEX_VERSION}"),
            &format!("@openai/codex@{CODEX_VERSION}"),
            platform::CODEX,
            Some(("--version", CODEX_VERSION)),
        )
    })
}

/// Claude Code's native binary (`2.1.332 (Claude Code)`).
pub fn claude_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&BIN, || {
        installed(
            &format!("claude-code-{CLAUDE_VERSION}"),
            &format!("@anthropic-ai/claude-code@{CLAUDE_VERSION}"),
            platform::CLAUDE,
            Some(("--version", CLAUDE_VERSION)),
        )
    })
}

/// codex-acp's native binary (it has no `--version`).
pub fn codex_acp_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    cached(&BIN, || {
        installed(
            &format!("codex-acp-{CODEX_ACP_VERSION}"),
            &format!("@zed-industries/codex-acp@{CODEX_ACP_VERSION}"),
            platform::CODEX_ACP,
            None,
        )
    })
}

/// The install's outcome, tried once per test process: a failed install
/// fails every test that needs it at once, with the same reason, instead
/// of retrying (npm takes a minute to give up on an unreachable registry).
fn cached(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    install: impl FnOnce() -> Result<PathBuf, String>,
) -> &'static Path {
    match cell.get_or_init(install) {
        Ok(bin) => bin,
        Err(e) => panic!("{e}"),
    }
}

/// A private folder for one agent run: `work` (its cwd), `home`, `tmp`,
/// `codex_home`. Removed when dropped.
pub struct RunDir {
    dir: tempfile::TempDir,
}

impl RunDir {
    pub fn new() -> RunDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["work", "home", "tmp", "codex_home"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        RunDir { dir }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join(sub)
    }

    pub fn work(&self) -> PathBuf {
        self.path("work")
    }
}

/// The environment every agent gets: nothing of the test's but `PATH`.
fn base_env(cmd: &mut Command, run: &RunDir) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", run.path("home"))
        .env("TMPDIR", run.path("tmp"))
        .current_dir(run.work());
}

/// `codex app-server` (or codex-acp: the same config) against the mock on
/// `port`, with PEERS.md's `config.toml`: `on-request` approvals, a
/// read-only sandbox, the mock as the only provider.
pub fn codex_command(bin: &Path, args: &[&str], run: &RunDir, port: u16) -> Command {
    let config = format!(
        r#"model = "gpt-5.5"
approval_policy = "on-request"
sandbox_mode = "read-only"
model_provider = "mock_provider"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

[features]
plugins = false
apps = false

[model_providers.mock_provider]
name = "Mock provider"
base_url = "http://127.0.0.1:{port}/v1"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false
"#
    );
    std::fs::write(run.path("codex_home").join("config.toml"), config).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(args);
    base_env(&mut cmd, run);
    cmd.env("CODEX_HOME", run.path("codex_home")).env("RUST_LOG", "warn");
    cmd
}

/// `claude` with `args` against the mock on `port` (PEERS.md §2.2).
pub fn claude_command(bin: &Path, args: &[String], run: &RunDir, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    base_env(&mut cmd, run);
    cmd.env("CLAUDE_CONFIG_DIR", run.path("home").join(".claude"))
        .env("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("ANTHROPIC_API_KEY", "dummy")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    cmd
}

/// What the agent's stdout gave.
#[derive(Debug)]
pub enum Next {
    Line(String),
    Eof,
    Timeout,
}

/// A running agent in a process group of its own, with its stdio piped.
/// Dropping it kills it and every process it started (also the ones that
/// already left its tree).
pub struct Peer {
    pub child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Every stdout line, in order.
    pub lines: Vec<String>,
    eof: bool,
    /// Every descendant seen by [`Peer::tree`].
    seen: HashSet<u32>,
    pub spawned_at: Instant,
}

impl Peer {
    pub fn spawn(mut cmd: Command) -> Peer {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let stdout = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
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
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Peer {
            stdin: child.stdin.take(),
            child,
            rx,
            stderr,
            lines: Vec::new(),
            eof: false,
            seen: HashSet::new(),
            spawned_at: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        // The agent may have exited: a broken pipe is its problem, not ours.
        let _ =
            stdin.write_all(line.as_bytes()).and_then(|_| stdin.write_all(b"\n")).and_then(|_| stdin.flush());
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stdin_open(&self) -> bool {
        self.stdin.is_some()
    }

    pub fn next_line(&mut self, timeout: Duration) -> Next {
        if self.eof {
            return Next::Eof;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(line) => {
                let line = line.trim_end_matches(['\n', '\r']).to_owned();
                self.lines.push(line.clone());
                Next::Line(line)
            }
            Err(RecvTimeoutError::Timeout) => Next::Timeout,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                Next::Eof
            }
        }
    }

    /// The agent's live descendants now (remembered for the clean-up).
    pub fn tree(&mut self) -> Vec<u32> {
        let pids = common::descendants(self.pid());
        self.seen.extend(pids.iter().copied());
        pids
    }

    /// The processes seen in [`Peer::tree`] that are still alive (wherever
    /// they are now: an orphan is re-parented to init).
    pub fn survivors(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.seen.iter().copied().filter(|p| common::alive(*p)).collect();
        v.sort();
        v
    }

    pub fn stderr_tail(&self) -> String {
        let s = self.stderr.lock().unwrap();
        let mut start = s.len().saturating_sub(4000);
        while !s.is_char_boundary(start) {
            start += 1;
        }
        s[start..].to_owned()
    }

    /// Waits for the agent to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal` to the agent's process group.
    pub fn signal_group(&self, signal: i32) {
        // SAFETY: plain syscall on our own child's group.
        unsafe { libc::killpg(self.pid() as i32, signal) };
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.tree();
        let pid = self.pid() as i32;
        deputy_proctree::kill_tree(&deputy_proctree::Tree {
            root: pid,
            include_root: true,
            group: Some(pid),
            ..Default::default()
        });
        for p in self.survivors() {
            // SAFETY: plain syscall; these are processes this test's agent started.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the test answers approvals: `Some` answers at once, `None` leaves it
/// pending (the test answers later with [`Drive::answer`], or never).
pub type Policy = Box<dyn FnMut(&Approval) -> Option<ReviewDecision>>;

pub fn always(d: ReviewDecision) -> Policy {
    Box::new(move |_| Some(d))
}

pub fn never_answer() -> Policy {
    Box::new(|_| None)
}

/// A mapper run over a real agent.
pub struct Drive {
    pub peer: Peer,
    session: Box<dyn ForeignSession>,
    policy: Policy,
    /// Every output of the mapper, in order (the approvals' answers too).
    pub outs: Vec<Output>,
    /// Approvals asked and not answered yet.
    pub pending: VecDeque<Approval>,
    /// Lines the mapper could not decode (none is expected).
    pub decode_errors: Vec<String>,
    closed: bool,
}

impl Drive {
    pub fn new(peer: Peer, mut session: Box<dyn ForeignSession>, policy: Policy) -> Drive {
        let first = session.start();
        let mut d = Drive {
            peer,
            session,
            policy,
            outs: Vec::new(),
            pending: VecDeque::new(),
            decode_errors: Vec::new(),
            closed: false,
        };
        d.execute(first);
        d
    }

    fn execute(&mut self, outs: Vec<Output>) {
        for o in outs {
            match &o {
                Output::Send(line) => self.peer.send(line),
                Output::CloseInput => self.peer.close_stdin(),
                Output::Withdrawn(key) => self.pending.retain(|a| a.key() != key),
                _ => {}
            }
            let approval = match &o {
                Output::Approve(a) => Some(a.clone()),
                _ => None,
            };
            self.outs.push(o);
            if let Some(a) = approval {
                match (self.policy)(&a) {
                    Some(d) => {
                        let more = self.session.answer(a.key(), d);
                        self.execute(more);
                    }
                    None => self.pending.push_back(a),
                }
            }
        }
    }

    pub fn submit(&mut self, id: &str, op: &Op) -> Result<(), SubmitError> {
        let outs = self.session.submit(id, op)?;
        self.execute(outs);
        Ok(())
    }

    /// Answers a pending approval; true if the mapper still wanted it.
    pub fn answer(&mut self, key: &str, d: ReviewDecision) -> bool {
        self.pending.retain(|a| a.key() != key);
        let outs = self.session.answer(key, d);
        let wanted = !outs.is_empty();
        self.execute(outs);
        wanted
    }

    /// Reads and maps lines until an output satisfies `done` (looking at
    /// the outputs from `since` on); returns its index. Fails the test on a
    /// timeout or if the agent's output ends first.
    pub fn pump_until(&mut self, what: &str, since: usize, done: impl Fn(&Output) -> bool) -> usize {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(i) = self.outs.iter().skip(since).position(&done) {
                return since + i;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.peer.next_line(left) {
                Next::Line(line) => match self.session.receive(&line) {
                    Ok(outs) => self.execute(outs),
                    Err(e) => self.decode_errors.push(format!("{e}")),
                },
                Next::Eof => {
                    if !self.closed {
                        self.closed = true;
                        let outs = self.session.closed();
                        self.execute(outs);
                        continue;
                    }
                    panic!("{}", self.report(&format!("the agent's output ended before {what}")));
                }
                Next::Timeout => panic!("{}", self.report(&format!("no {what} within {STEP:?}"))),
            }
        }
    }

    /// Pumps until the event `kind` comes.
    pub fn until_event(&mut self, kind: &str) -> &Event {
        let at = self.pump_until(kind, 0, |o| matches!(o, Output::Event(e) if e.msg.kind() == kind));
        match &self.outs[at] {
            Output::Event(e) => e,
            _ => unreachable!(),
        }
    }

    /// Pumps until the running turn's end event (after `since`).
    pub fn until_turn_end(&mut self, since: usize) -> EventMsg {
        let at =
            self.pump_until("the turn's end", since, |o| matches!(o, Output::Event(e) if e.msg.ends_turn()));
        match &self.outs[at] {
            Output::Event(e) => e.msg.clone(),
            _ => unreachable!(),
        }
    }

    /// Pumps until an approval is pending; returns it.
    pub fn until_pending(&mut self) -> Approval {
        let n = self.outs.len();
        if self.pending.is_empty() {
            self.pump_until("an approval", n, |o| matches!(o, Output::Approve(_)));
        }
        self.pending.front().cloned().expect("pending")
    }

    /// Submits a shutdown, maps everything until the agent's output ends,
    /// and waits for it to exit. Returns its exit status.
    pub fn finish(&mut self) -> ExitStatus {
        self.submit("shutdown", &Op::Shutdown).expect("shutdown accepted");
        self.pump_until(
            "shutdown_complete",
            0,
            |o| matches!(o, Output::Event(e) if e.msg == EventMsg::ShutdownComplete),
        );
        let status = self.peer.wait_exit(STEP);
        status.unwrap_or_else(|| panic!("{}", self.report("the agent did not exit after its stdin closed")))
    }

    pub fn events(&self) -> Vec<&Event> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.msg.kind()).collect()
    }

    /// The first event of `kind`.
    pub fn find(&self, kind: &str) -> &EventMsg {
        let e = self.events().into_iter().find(|e| e.msg.kind() == kind);
        &e.unwrap_or_else(|| panic!("{}", self.report(&format!("no {kind}")))).msg
    }

    pub fn approvals(&self) -> Vec<&Approval> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Approve(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    pub fn withdrawn(&self) -> Vec<&str> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Withdrawn(k) => Some(k.as_str()),
                _ => None,
            })
            .collect()
    }

    /// What happened, for failure messages.
    pub fn report(&self, what: &str) -> String {
        let story: Vec<String> = self
            .outs
            .iter()
            .map(|o| match o {
                Output::Event(e) => format!("event {}", e.msg.kind()),
                Output::Send(l) => format!("-> {}", cut(l)),
                other => format!("{other:?}"),
            })
            .collect();
        let lines: Vec<String> = self.peer.lines.iter().map(|l| format!("<- {}", cut(l))).collect();
        format!(
            "{what}\n--- mapper outputs:\n{}\n--- agent stdout:\n{}\n--- agent stderr (tail):\n{}",
            story.join("\n"),
            lines.join("\n"),
            self.peer.stderr_tail()
        )
    }

    /// Every event is valid under Deputy's published schema and round-trips
    /// through the typed `Event`; the stream keeps Deputy's event contract;
    /// every agent line decoded.
    pub fn validate(&self) {
        assert!(self.decode_errors.is_empty(), "lines the mapper could not decode: {:?}", self.decode_errors);
        let schema = common::schema_validator("Event");
        for e in self.events() {
            let v = serde_json::to_value(e).unwrap();
            let errors: Vec<String> = schema.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "not a valid Deputy Event: {errors:?}\n{v}");
            let back: Event = serde_json::from_value(v).unwrap();
            assert_eq!(&back, e);
        }
        if let Err(e) = invariants::check(&self.outs) {
            panic!("{}", self.report(&format!("the event contract is broken: {e}")));
        }
    }
}

fn cut(s: &str) -> String {
    if s.len() <= 400 {
        return s.to_owned();
    }
    let mut end = 400;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Polls until none of `pids` is alive; returns how long that took, or
/// `None` if some still live after `within`.
pub fn all_gone(pids: &[u32], within: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if pids.iter().all(|p| !common::alive(*p)) {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The descendants of `peer` whose command line contains `needle`, once
/// there are at least `n` of them (within [`STEP`]).
pub fn wait_for_processes(peer: &mut Peer, needle: &str, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + STEP;
    loop {
        let tree = peer.tree();
        let hits: Vec<u32> = tree.into_iter().filter(|p| cmdline(*p).contains(needle)).collect();
        if hits.len() >= n {
            return hits;
        }
        assert!(Instant::now() < deadline, "not {n} processes running {needle:?} under the agent: {hits:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process's command line, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_owned())
        .unwrap_or_default()
}
