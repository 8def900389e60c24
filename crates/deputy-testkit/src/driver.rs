//! [`AgentUnderTest`]: drive any program that claims the Deputy protocol,
//! line by line, from a plain (blocking) test.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deputy_protocol::{
    Event, InitializeParams, InitializeResult, Op, PeerInfo, ReviewDecision, SessionStartParams,
    SessionStartResult, SubmitResult, methods,
};
use serde_json::{Value, json};

use crate::procs::{Leftover, ProcessWatch};
use crate::wire::{excerpt, parse_message_line};

/// How long each `expect_*` waits by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of the agent's stderr is kept (the end of it).
pub const STDERR_TAIL_BYTES: usize = 64 * 1024;

/// Which way a line went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the agent's stdin.
    ToAgent,
    /// Read from the agent's stdout.
    FromAgent,
}

/// One line of the conversation, as it went over the pipe.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When, counted from the spawn.
    pub at: Duration,
    /// Which way.
    pub direction: Direction,
    /// The bytes: for [`Direction::FromAgent`] one line without its `\n`;
    /// for [`Direction::ToAgent`] exactly what one write sent.
    pub bytes: Vec<u8>,
    /// [`Direction::FromAgent`]: the line ended with `\n` (false for bytes
    /// after the last newline when stdout closed).
    pub complete: bool,
    /// [`Direction::FromAgent`]: why the line is not a valid JSON-RPC
    /// message (`None`: it is one).
    pub problem: Option<String>,
}

/// An approval request from the agent (`approval/exec` or `approval/patch`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    /// The JSON-RPC request id: answers are keyed by it.
    pub id: Value,
    /// `approval/exec` or `approval/patch`.
    pub method: String,
    /// The params as sent (`ExecApprovalParams` / `PatchApprovalParams`).
    pub params: Value,
}

impl ApprovalRequest {
    /// The tool call it is about.
    pub fn call_id(&self) -> Option<&str> {
        self.params["call_id"].as_str()
    }

    /// The argv of an `approval/exec`.
    pub fn command(&self) -> Option<Vec<String>> {
        serde_json::from_value(self.params.get("command")?.clone()).ok()
    }
}

/// What went wrong, with the end of the conversation and of the agent's
/// stderr in its `Display` (so `.unwrap()` in a test says what happened).
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
}

/// The kinds of [`Error`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Nothing matching came in time.
    Timeout {
        /// What was waited for.
        waiting_for: String,
        /// For how long.
        after: Duration,
    },
    /// The agent closed its stdout before anything matching came.
    Closed {
        /// What was waited for.
        waiting_for: String,
    },
    /// The agent answered a request with a JSON-RPC error.
    Rpc {
        /// The method called.
        method: String,
        /// `error.code`.
        code: i64,
        /// `error.message`.
        message: String,
        /// `error.data`.
        data: Option<Value>,
    },
    /// A message did not decode into the type the protocol says.
    Decode {
        /// What was decoded.
        what: String,
        /// serde's message.
        error: String,
    },
    /// The agent broke a rule of the protocol the driver checks itself.
    Protocol(String),
    /// Processes the agent left behind (they are killed when reported).
    Leftovers(Vec<Leftover>),
    /// Spawning, writing or waiting failed.
    Io(String),
}

impl Error {
    /// What went wrong, without the context.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::Timeout { waiting_for, after } => {
                write!(f, "timed out after {} ms waiting for {waiting_for}", after.as_millis())
            }
            ErrorKind::Closed { waiting_for } => {
                write!(f, "the agent closed its stdout while we waited for {waiting_for}")
            }
            ErrorKind::Rpc { method, code, message, data } => {
                write!(f, "`{method}` was answered with error {code}: {message}")?;
                if let Some(data) = data {
                    write!(f, " (data: {data})")?;
                }
                Ok(())
            }
            ErrorKind::Decode { what, error } => write!(f, "{what} does not decode: {error}"),
            ErrorKind::Protocol(what) => write!(f, "protocol violation: {what}"),
            ErrorKind::Leftovers(list) => {
                write!(f, "the agent left {} process(es) behind (now killed):", list.len())?;
                for l in list {
                    write!(f, "\n  {l}")?;
                }
                Ok(())
            }
            ErrorKind::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.kind, self.context)
    }
}

impl std::error::Error for Error {}

/// The driver's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the agent is spawned and waited for.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long each `expect_*` waits (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Start the agent with `setsid()`, in a session and process group of its
    /// own (default true): what hosts do, and what lets the driver find and
    /// kill everything it started.
    pub new_session: bool,
    /// Count every child of this process other than the agent as left behind
    /// by the agent (see [`crate::procs`]); only right in a process that is a
    /// child subreaper and runs one agent at a time (default false).
    pub adopt_orphans: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { timeout: DEFAULT_TIMEOUT, new_session: true, adopt_orphans: false }
    }
}

enum ReadEvent {
    Line { bytes: Vec<u8>, at: Instant, complete: bool },
    Eof,
}

/// A running agent, driven over its stdio, one JSON line at a time.
///
/// Spawn it, then send requests and wait for what should come back: every
/// message read is kept in a queue, and each `expect_*` takes the first one
/// that matches (so events, approval requests and responses may come in any
/// order, as the protocol allows). Everything that went over the pipes is in
/// the [`transcript`](Self::transcript), and every line on stdout is checked
/// to be a JSON-RPC message ([`stdout_problems`](Self::stdout_problems)).
/// Dropping it kills the agent's process tree.
///
/// ```
/// use deputy_protocol::{ReviewDecision, SessionStartParams};
/// use deputy_testkit::{AgentUnderTest, ScriptedAgent};
///
/// // Any agent command works; this one is the kit's scripted agent.
/// let agent = ScriptedAgent::new().exec(["echo", "hi"]).message("done");
/// let mut agent = AgentUnderTest::spawn(agent.command())?;
/// agent.initialize()?;
/// let dir = tempfile::tempdir()?;
/// agent.start_session(SessionStartParams::new(dir.path().canonicalize()?))?;
/// let turn = agent.submit_text("go")?;
/// let approval = agent.expect_approval()?;
/// assert_eq!(approval.command().unwrap(), ["echo", "hi"]);
/// agent.answer_approval(&approval, ReviewDecision::Approved)?;
/// agent.expect_event(&turn, "exec_command_end")?;
/// agent.expect_event(&turn, "task_complete")?;
/// agent.shutdown()?;
/// assert!(agent.wait_exit()?.success());
/// agent.assert_no_process_left()?;
/// assert!(agent.stdout_problems().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AgentUnderTest {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    rx: Receiver<ReadEvent>,
    stdout_closed: bool,
    pending: VecDeque<Value>,
    transcript: Vec<Entry>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: Receiver<()>,
    next_id: i64,
    next_submission: u64,
    options: Options,
    started: Instant,
    watch: ProcessWatch,
    exit: Option<ExitStatus>,
}

impl AgentUnderTest {
    /// Spawns `command` (stdio are replaced by pipes) with default [`Options`].
    pub fn spawn(command: Command) -> Result<Self> {
        AgentUnderTest::spawn_with(command, Options::default())
    }

    /// Spawns `command` with these options.
    pub fn spawn_with(mut command: Command, options: Options) -> Result<Self> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if options.new_session {
            // SAFETY: setsid is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if options.adopt_orphans
            && let Err(e) = deputy_proctree::set_child_subreaper()
        {
            return Err(Error {
                kind: ErrorKind::Io(format!("cannot become a child subreaper: {e}")),
                context: String::new(),
            });
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command.spawn().map_err(|e| Error {
            kind: ErrorKind::Io(format!("cannot spawn `{program}`: {e}")),
            context: String::new(),
        })?;
        let started = Instant::now();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("agent-stdout".into())
            .spawn(move || {
                let mut reader = BufReader::with_capacity(64 * 1024, stdout);
                loop {
                    let mut line = Vec::new();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let complete = line.last() == Some(&b'\n');
                            if complete {
                                line.pop();
                            }
                            let event = ReadEvent::Line { bytes: line, at: Instant::now(), complete };
                            if tx.send(event).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tx.send(ReadEvent::Eof);
            })
            .map_err(|e| Error {
                kind: ErrorKind::Io(format!("cannot start a thread: {e}")),
                context: String::new(),
            })?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let tail = Arc::clone(&stderr);
        let (done_tx, stderr_done) = channel();
        std::thread::Builder::new()
            .name("agent-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stderr_pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > STDERR_TAIL_BYTES {
                        let cut = tail.len() - STDERR_TAIL_BYTES;
                        tail.drain(..cut);
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| Error {
                kind: ErrorKind::Io(format!("cannot start a thread: {e}")),
                context: String::new(),
            })?;
        let pid = child.id();
        Ok(AgentUnderTest {
            stdin: child.stdin.take(),
            child,
            pid,
            rx,
            stdout_closed: false,
            pending: VecDeque::new(),
            transcript: Vec::new(),
            stderr,
            stderr_done,
            next_id: 0,
            next_submission: 0,
            watch: ProcessWatch::new(pid as i32, options.new_session).adopting(options.adopt_orphans),
            options,
            started,
            exit: None,
        })
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Changes how long each `expect_*` waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.options.timeout = timeout;
    }

    /// How long each `expect_*` waits.
    pub fn timeout(&self) -> Duration {
        self.options.timeout
    }

    // ---- writing -------------------------------------------------------

    /// Writes these bytes to the agent's stdin as they are (no newline is
    /// added): for malformed input, several lines in one write, or a partial
    /// line.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.error(ErrorKind::Io("the agent's stdin is already closed".into())));
        };
        let written = stdin.write_all(bytes).and_then(|()| stdin.flush());
        self.transcript.push(Entry {
            at: self.started.elapsed(),
            direction: Direction::ToAgent,
            bytes: bytes.to_vec(),
            complete: bytes.ends_with(b"\n"),
            problem: None,
        });
        written.map_err(|e| self.error(ErrorKind::Io(format!("cannot write to the agent's stdin: {e}"))))
    }

    /// Writes one message as one line.
    pub fn send(&mut self, message: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(message).expect("a Value always serializes");
        line.push(b'\n');
        self.send_raw(&line)
    }

    /// Sends a request with the next integer id; returns the id.
    pub fn request(&mut self, method: &str, params: impl serde::Serialize) -> Result<Value> {
        self.next_id += 1;
        let id = json!(self.next_id);
        self.request_with_id(id.clone(), method, params)?;
        Ok(id)
    }

    /// Sends a request with this id.
    pub fn request_with_id(&mut self, id: Value, method: &str, params: impl serde::Serialize) -> Result<()> {
        let params = serde_json::to_value(params).expect("params serialize");
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    }

    /// Sends a notification.
    pub fn notify(&mut self, method: &str, params: impl serde::Serialize) -> Result<()> {
        let params = serde_json::to_value(params).expect("params serialize");
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
    }

    /// Closes the agent's stdin (end of input: a shutdown, PROTOCOL.md §2).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends a signal to the agent process (e.g. `libc::SIGTERM`).
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        // SAFETY: plain syscall on our own child (not reaped yet while
        // `exit` is None, so the pid is still ours).
        if self.exit.is_none() && unsafe { libc::kill(self.pid as i32, signal) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(self.error(ErrorKind::Io(format!("cannot signal the agent: {e}"))));
        }
        Ok(())
    }

    // ---- reading -------------------------------------------------------

    /// Reads what the agent wrote until `deadline`, one line at a time;
    /// false when nothing more came (deadline, or stdout closed).
    fn pump(&mut self, deadline: Instant) -> bool {
        if self.stdout_closed {
            return false;
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let event = match self.rx.recv_timeout(wait) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => ReadEvent::Eof,
        };
        match event {
            ReadEvent::Eof => {
                self.stdout_closed = true;
                false
            }
            ReadEvent::Line { bytes, at, complete } => {
                let parsed = if complete {
                    parse_message_line(&bytes)
                } else {
                    Err("a partial line: bytes after the last newline when stdout closed".into())
                };
                let problem = match parsed {
                    Ok(message) => {
                        if is_event_of(&message, "exec_command_begin") || is_approval(&message) {
                            // A command is about to run or runs: remember its
                            // processes while they are still the agent's.
                            self.watch.observe();
                        }
                        self.pending.push_back(message);
                        None
                    }
                    Err(problem) => Some(problem),
                };
                self.transcript.push(Entry {
                    at: at.saturating_duration_since(self.started),
                    direction: Direction::FromAgent,
                    bytes,
                    complete,
                    problem,
                });
                true
            }
        }
    }

    /// Reads everything already written (without waiting).
    pub fn drain(&mut self) {
        while self.pump(Instant::now()) {}
    }

    /// Takes the first message not taken yet that matches, waiting up to the
    /// timeout; `what` names it in the error.
    pub fn expect_message(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let timeout = self.options.timeout;
        match self.wait_message(timeout, &pred) {
            Some(m) => Ok(m),
            None if self.stdout_closed => Err(self.error(ErrorKind::Closed { waiting_for: what.to_owned() })),
            None => Err(self.error(ErrorKind::Timeout { waiting_for: what.to_owned(), after: timeout })),
        }
    }

    /// Takes the first matching message if one comes within `window`
    /// (`None`: none did; for checking that something does **not** happen).
    pub fn wait_message(&mut self, window: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + window;
        let mut checked = 0;
        loop {
            if let Some(i) = self.pending.iter().skip(checked).position(&pred) {
                return self.pending.remove(checked + i);
            }
            checked = self.pending.len();
            if !self.pump(deadline) {
                // The deadline passed or stdout closed, and nothing new came.
                return None;
            }
        }
    }

    /// The messages read and not taken yet, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Value> {
        self.pending.iter()
    }

    /// The response (result or error) to request `id`, as the whole message.
    pub fn response(&mut self, id: &Value) -> Result<Value> {
        let id = id.clone();
        self.expect_message(&format!("the answer to request {id}"), move |m| {
            m.is_object() && m.get("method").is_none() && m.get("id") == Some(&id)
        })
    }

    /// Calls a method and returns its result; an error answer is
    /// [`ErrorKind::Rpc`].
    pub fn call(&mut self, method: &str, params: impl serde::Serialize) -> Result<Value> {
        let id = self.request(method, params)?;
        let answer = self.response(&id)?;
        self.result_of(method, answer)
    }

    fn result_of(&self, method: &str, answer: Value) -> Result<Value> {
        if let Some(error) = answer.get("error") {
            return Err(self.error(ErrorKind::Rpc {
                method: method.to_owned(),
                code: error["code"].as_i64().unwrap_or(0),
                message: error["message"].as_str().unwrap_or("").to_owned(),
                data: error.get("data").cloned(),
            }));
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, what: &str, value: Value) -> Result<T> {
        serde_json::from_value(value)
            .map_err(|e| self.error(ErrorKind::Decode { what: what.to_owned(), error: e.to_string() }))
    }

    // ---- the protocol ------------------------------------------------------

    /// `initialize` with protocol version 1 and this kit as the client.
    pub fn initialize(&mut self) -> Result<InitializeResult> {
        self.initialize_with(InitializeParams {
            protocol_version: deputy_protocol::PROTOCOL_VERSION,
            client_info: PeerInfo {
                name: "deputy-testkit".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            },
            capabilities: Default::default(),
            meta: None,
        })
    }

    /// `initialize` with these params.
    pub fn initialize_with(&mut self, params: InitializeParams) -> Result<InitializeResult> {
        let result = self.call(methods::INITIALIZE, params)?;
        self.decode("the initialize result", result)
    }

    /// `session/start`; checks that `session_configured` came before the
    /// answer, as PROTOCOL.md §2 requires (the event stays in the queue).
    pub fn start_session(&mut self, params: SessionStartParams) -> Result<SessionStartResult> {
        let id = self.request(methods::SESSION_START, params)?;
        let answer = self.response(&id)?;
        let result: SessionStartResult =
            self.decode("the session/start result", self.result_of(methods::SESSION_START, answer)?)?;
        let configured_first = self.pending.iter().any(|m| is_event_of(m, "session_configured"));
        if !configured_first {
            return Err(self.error(ErrorKind::Protocol(
                "no `session_configured` event came before the answer to `session/start`".into(),
            )));
        }
        Ok(result)
    }

    /// `submit` with this submission id; returns the id the agent answered.
    pub fn submit_with_id(&mut self, id: &str, op: Op) -> Result<String> {
        let result = self.call(methods::SUBMIT, json!({"id": id, "op": op}))?;
        let result: SubmitResult = self.decode("the submit result", result)?;
        if result.id != id {
            return Err(self.error(ErrorKind::Protocol(format!(
                "`submit` with id {id:?} was answered with id {:?}",
                result.id
            ))));
        }
        Ok(result.id)
    }

    /// `submit` with a fresh submission id (`sub-N`); returns it.
    pub fn submit(&mut self, op: Op) -> Result<String> {
        self.next_submission += 1;
        let id = format!("{}-{}", op.kind(), self.next_submission);
        self.submit_with_id(&id, op)
    }

    /// Submits a `user_input` of one text item; returns the submission (and
    /// turn) id.
    pub fn submit_text(&mut self, text: &str) -> Result<String> {
        self.submit(Op::text(text))
    }

    /// Submits `interrupt`.
    pub fn interrupt(&mut self) -> Result<String> {
        self.submit(Op::Interrupt)
    }

    /// Submits `shutdown` (then wait with [`wait_exit`](Self::wait_exit)).
    pub fn shutdown(&mut self) -> Result<String> {
        self.submit(Op::Shutdown)
    }

    /// Takes the first event of submission `submission` whose `msg.type` is
    /// `kind`.
    pub fn expect_event(&mut self, submission: &str, kind: &str) -> Result<Event> {
        let what = format!("a `{kind}` event of submission {submission:?}");
        let message = self.expect_message(&what, |m| {
            is_event_of(m, kind) && m["params"]["id"].as_str() == Some(submission)
        })?;
        self.decode(&what, message["params"].clone())
    }

    /// Takes the first event that matches (decoded; events that do not
    /// decode do not match).
    pub fn expect_event_where(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Result<Event> {
        let message = self.expect_message(what, |m| {
            m["method"] == methods::EVENT
                && serde_json::from_value::<Event>(m["params"].clone()).is_ok_and(|e| pred(&e))
        })?;
        self.decode(what, message["params"].clone())
    }

    /// Takes the event that ends turn `submission` (`task_complete` or
    /// `turn_aborted`).
    pub fn expect_turn_end(&mut self, submission: &str) -> Result<Event> {
        let what = format!("the end of turn {submission:?}");
        let message = self.expect_message(&what, |m| {
            (is_event_of(m, "task_complete") || is_event_of(m, "turn_aborted"))
                && m["params"]["id"].as_str() == Some(submission)
        })?;
        self.decode(&what, message["params"].clone())
    }

    /// Takes the first approval request (`approval/exec` or `approval/patch`).
    pub fn expect_approval(&mut self) -> Result<ApprovalRequest> {
        let message = self.expect_message("an approval request", is_approval)?;
        Ok(ApprovalRequest {
            id: message["id"].clone(),
            method: message["method"].as_str().unwrap_or_default().to_owned(),
            params: message.get("params").cloned().unwrap_or(Value::Null),
        })
    }

    /// Answers an approval request with this decision.
    pub fn answer_approval(&mut self, request: &ApprovalRequest, decision: ReviewDecision) -> Result<()> {
        self.answer(&request.id, json!({ "decision": decision }))
    }

    /// Answers a request of the agent's with this result.
    pub fn answer(&mut self, id: &Value, result: Value) -> Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
    }

    /// Answers a request of the agent's with a JSON-RPC error (an approval
    /// answered so must count as denied: PROTOCOL.md §3, "fail closed").
    pub fn answer_error(&mut self, id: &Value, code: i64, message: &str) -> Result<()> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
    }

    // ---- the process -------------------------------------------------------

    /// Waits (up to the timeout) for the agent to exit, reading its stdout to
    /// the end meanwhile; returns its status.
    pub fn wait_exit(&mut self) -> Result<ExitStatus> {
        let timeout = self.options.timeout;
        self.wait_exit_within(timeout)
    }

    /// Waits up to `timeout` for the agent to exit.
    pub fn wait_exit_within(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit()? {
                // Its stdout may still be held open by a leftover: read what
                // is there, without waiting for the end.
                let grace = Instant::now() + Duration::from_millis(50);
                while self.pump(grace) {}
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(self
                    .error(ErrorKind::Timeout { waiting_for: "the agent to exit".into(), after: timeout }));
            }
            // Reading stdout meanwhile keeps the agent from blocking on a
            // full pipe, and wakes up as soon as it writes or closes.
            if !self.pump(Instant::now() + Duration::from_millis(5)) && self.stdout_closed {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// The exit status, if the agent exited (reaps it).
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.exit {
            return Ok(Some(status));
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.error(ErrorKind::Io(format!("cannot wait for the agent: {e}")))),
        }
    }

    /// Kills the agent's whole tree (frozen, then SIGKILLed) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let pid = self.pid as i32;
            let tree = if self.options.new_session {
                deputy_proctree::Tree::session_leader(pid)
            } else {
                deputy_proctree::Tree { root: pid, include_root: true, ..Default::default() }
            };
            deputy_proctree::kill_tree(&tree);
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
        }
    }

    /// The processes of the agent's that still run (the agent excluded): see
    /// [`crate::procs`] for how they are found.
    pub fn leftovers(&mut self) -> Vec<Leftover> {
        self.watch.leftovers()
    }

    /// Remembers the agent's descendants as they are now, so that one of
    /// them that later leaves the agent's session is still found. The driver
    /// does this by itself whenever an approval request or an
    /// `exec_command_begin` comes.
    pub fn observe_processes(&mut self) {
        self.watch.observe();
    }

    /// After the agent exited: checks that nothing it started still runs,
    /// allowing a second for processes that are being killed. Leftovers are
    /// killed and reported as [`ErrorKind::Leftovers`]. An agent still
    /// running is an error too (shut it down or close its stdin first).
    pub fn assert_no_process_left(&mut self) -> Result<()> {
        self.assert_no_process_left_within(Duration::from_secs(1))
    }

    /// Like [`assert_no_process_left`](Self::assert_no_process_left),
    /// allowing `grace` instead of a second.
    pub fn assert_no_process_left_within(&mut self, grace: Duration) -> Result<()> {
        if self.try_exit()?.is_none() {
            return Err(self.error(ErrorKind::Protocol(
                "the agent is still running (shut it down and wait_exit() first)".into(),
            )));
        }
        let deadline = Instant::now() + grace;
        loop {
            let left = self.watch.leftovers();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.watch.kill(&left);
                return Err(self.error(ErrorKind::Leftovers(left)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // ---- what happened ---------------------------------------------------

    /// Every line written and read so far, in order.
    pub fn transcript(&self) -> &[Entry] {
        &self.transcript
    }

    /// The stdout lines that were not valid JSON-RPC messages.
    pub fn stdout_problems(&self) -> Vec<&Entry> {
        self.transcript.iter().filter(|e| e.problem.is_some()).collect()
    }

    /// Whether the agent closed its stdout (and everything before was read).
    pub fn stdout_closed(&self) -> bool {
        self.stdout_closed
    }

    /// The end of the agent's stderr (the last 64 KiB), lossily decoded.
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&tail).into_owned()
    }

    /// Waits up to `timeout` for the agent's stderr to close (so that
    /// [`stderr_tail`](Self::stderr_tail) is complete after an exit).
    pub fn wait_stderr_closed(&self, timeout: Duration) -> bool {
        self.stderr_done.recv_timeout(timeout).is_ok()
    }

    /// The time since the spawn.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn error(&self, kind: ErrorKind) -> Error {
        let mut context = String::from("\n--- the last lines (> to the agent, < from it) ---");
        let skip = self.transcript.len().saturating_sub(12);
        for entry in &self.transcript[skip..] {
            let arrow = match entry.direction {
                Direction::ToAgent => '>',
                Direction::FromAgent => '<',
            };
            context.push_str(&format!(
                "\n{arrow} {:>6} ms  {}",
                entry.at.as_millis(),
                excerpt(&entry.bytes, 300)
            ));
            if let Some(problem) = &entry.problem {
                context.push_str(&format!("   <-- {problem}"));
            }
        }
        let stderr = self.stderr_tail();
        let lines: Vec<&str> = stderr.lines().collect();
        let from = lines.len().saturating_sub(12);
        context.push_str("\n--- the end of the agent's stderr ---");
        for line in &lines[from..] {
            context.push_str("\n  ");
            context.push_str(line);
        }
        Error { kind, context }
    }
}

impl Drop for AgentUnderTest {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
        let left = self.watch.leftovers();
        if !left.is_empty() {
            self.watch.kill(&left);
        }
    }
}

/// Whether a message is an `event` notification of this `msg.type`.
pub fn is_event_of(message: &Value, kind: &str) -> bool {
    message["method"] == methods::EVENT && message["params"]["msg"]["type"] == kind
}

/// Whether a message is an approval request (`approval/exec` or
/// `approval/patch`, with an id).
pub fn is_approval(message: &Value) -> bool {
    (message["method"] == methods::APPROVAL_EXEC || message["method"] == methods::APPROVAL_PATCH)
        && message.get("id").is_some()
}
