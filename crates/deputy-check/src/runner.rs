//! What every battery needs: a fresh agent per scenario (its own working
//! directory and Deputy home), ending it and collecting what it left
//! behind, and recording results.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deputy_testkit::procs::Leftover;
use deputy_testkit::{AgentUnderTest, Entry, ErrorKind};
use serde_json::Value;

use crate::report::{CheckResult, Outcome};
use crate::{Options, Protocol};

/// A check's static description.
pub(crate) struct Spec {
    pub id: &'static str,
    pub section: &'static str,
    pub what: &'static str,
}

/// A check's outcome with its evidence.
pub(crate) enum Verdict {
    Pass(String),
    Skip(String),
}

/// A failed check: one line of evidence, and the context (last lines of
/// the conversation, stderr tail) when an expectation of the driver failed.
pub(crate) struct Failure {
    pub evidence: String,
    pub detail: Option<String>,
}

impl From<String> for Failure {
    fn from(evidence: String) -> Self {
        Failure { evidence, detail: None }
    }
}

impl From<&str> for Failure {
    fn from(evidence: &str) -> Self {
        Failure { evidence: evidence.to_owned(), detail: None }
    }
}

pub(crate) type Checked = Result<Verdict, Failure>;

/// `?` for the driver's errors, saying what was being done.
pub(crate) trait Doing<T> {
    fn doing(self, what: &str) -> Result<T, Failure>;
}

impl<T> Doing<T> for deputy_testkit::Result<T> {
    fn doing(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            evidence: format!("{what}: {}", one_line(&e.kind().to_string())),
            detail: Some(e.to_string()),
        })
    }
}

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One agent process of the battery.
pub(crate) struct Run {
    pub agent: AgentUnderTest,
    /// The session's working directory (empty, private).
    pub cwd: PathBuf,
}

impl Run {
    /// Sends a raw line and waits for the next error answer with id null.
    pub(crate) fn null_id_answer(&mut self, line: &[u8], what: &str) -> Result<Value, Failure> {
        self.agent.send_raw(line).doing(what)?;
        self.agent
            .expect_message(&format!("the answer (id null) to {what}"), |m| {
                m.is_object() && m.get("id") == Some(&Value::Null) && m.get("method").is_none()
            })
            .doing(what)
    }

    /// Sends a request and waits for its answer.
    pub(crate) fn ask(&mut self, id: Value, method: &str, params: Value) -> Result<Value, Failure> {
        self.agent.request_with_id(id.clone(), method, params).doing(method)?;
        self.agent.response(&id).doing(&format!("`{method}`"))
    }

    /// Waits up to `bound` for a message; `what` names it in the failure.
    pub(crate) fn within(
        &mut self,
        bound: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, Failure> {
        match self.agent.wait_message(bound, pred) {
            Some(m) => Ok(m),
            None if self.agent.stdout_closed() => {
                Err(format!("no {what}: the agent closed its stdout").into())
            }
            None => Err(format!("no {what} within {}", ms(bound)).into()),
        }
    }

    /// Sends each malformed line and checks its answer (id null) has the
    /// expected code; both batteries use it.
    pub(crate) fn malformed(&mut self, probes: &[(&[u8], &str, i64)]) -> Result<(), Failure> {
        for (line, what, code) in probes {
            let a = self.null_id_answer(line, what)?;
            want_error(&a, *code, what)?;
        }
        Ok(())
    }

    pub(crate) fn exit_zero(&mut self, since: Instant, bound: Duration) -> Result<Duration, Failure> {
        let remaining = bound.saturating_sub(since.elapsed());
        let status = self
            .agent
            .wait_exit_within(remaining)
            .map_err(|_| Failure::from(format!("did not exit within {}", ms(bound))))?;
        let took = since.elapsed();
        if !status.success() {
            return Err(format!("exited with {status} (expected 0)").into());
        }
        Ok(took)
    }
}

/// A line that is not JSON and one that is not UTF-8: -32700 (§1, §4).
pub(crate) const NOT_JSON: [(&[u8], &str, i64); 2] = [
    (b"{\"jsonrpc\":\"2.0\",\"id\":5,\n", "a line that is not JSON", -32700),
    (b"\xff\xfe\xfd\n", "a line that is not UTF-8", -32700),
];

/// Everything an agent wrote and was sent, kept for the audits.
pub(crate) struct Recorded {
    pub label: String,
    pub transcript: Vec<Entry>,
}

pub(crate) struct Runner<'o> {
    pub options: &'o Options,
    pub results: Vec<CheckResult>,
    pub recorded: Vec<Recorded>,
    pub leftovers: Vec<(String, Vec<Leftover>)>,
    scratch: PathBuf,
    serial: u32,
    /// An agent did not exit within 2 s of end of input once (the `eof`
    /// check fails then): later ones are killed sooner, so that a broken
    /// agent does not cost 2 s per check.
    eof_ignored: bool,
}

impl<'o> Runner<'o> {
    pub fn new(options: &'o Options) -> std::io::Result<Self> {
        let scratch = std::env::temp_dir().join(format!(
            "deputy-check-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&scratch)?;
        Ok(Runner {
            options,
            results: Vec::new(),
            recorded: Vec::new(),
            leftovers: Vec::new(),
            scratch,
            serial: 0,
            eof_ignored: false,
        })
    }

    /// A short string unique in this battery (for file names and command
    /// lines that must be told apart).
    pub fn nonce(&mut self) -> String {
        self.serial += 1;
        format!("{}{:03}", std::process::id(), self.serial)
    }

    /// Spawns a fresh agent for the scenario `label`.
    pub fn spawn(&mut self, label: &str) -> Result<Run, Failure> {
        let n = self.nonce();
        let base = self.scratch.join(format!("{label}-{n}"));
        let cwd = base.join("cwd");
        let home = base.join("home");
        for dir in [&cwd, &home] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let cwd = cwd.canonicalize().map_err(|e| format!("{}: {e}", cwd.display()))?;
        let mut command = Command::new(&self.options.program);
        // The process runs in the caller's directory (relative paths in the
        // command line keep working); the session's cwd is the private one.
        command.args(&self.options.args).env("DEPUTY_HOME", &home);
        let driver = deputy_testkit::Options {
            timeout: self.options.timeout,
            new_session: true,
            adopt_orphans: self.options.adopt_orphans,
        };
        let agent = AgentUnderTest::spawn_with(command, driver).doing("spawning the agent")?;
        Ok(Run { agent, cwd })
    }

    /// Ends the agent (end of input, then a kill after 2 s), notes what it
    /// left behind and keeps its transcript.
    pub fn finish(&mut self, label: &str, mut run: Run) {
        if run.agent.try_exit().ok().flatten().is_none() {
            run.agent.close_stdin();
            // Cleanup, not a check (`eof` has its own, wider bound).
            let patience = if self.eof_ignored { Duration::from_millis(200) } else { Duration::from_secs(2) };
            if run.agent.wait_exit_within(patience).is_err() {
                self.eof_ignored = true;
                run.agent.kill();
            }
        }
        run.agent.drain();
        // A process being killed is gone in well under a millisecond; a
        // leftover stays.
        if let Err(e) = run.agent.assert_no_process_left_within(Duration::from_millis(300))
            && let ErrorKind::Leftovers(list) = e.kind()
        {
            self.leftovers.push((label.to_owned(), list.clone()));
        }
        self.recorded.push(Recorded { label: label.to_owned(), transcript: run.agent.transcript().to_vec() });
        drop(run);
        if self.options.adopt_orphans {
            deputy_proctree::reap_adopted(|_| false, Duration::from_millis(100));
        }
    }

    /// Runs `scenario` on a fresh agent, then [`finish`](Self::finish)es it.
    pub fn with_agent(&mut self, label: &str, scenario: impl FnOnce(&mut Run) -> Checked) -> Checked {
        let mut run = self.spawn(label)?;
        let verdict = scenario(&mut run);
        self.finish(label, run);
        verdict
    }

    /// Runs one check and records its result.
    pub fn check(&mut self, spec: &Spec, body: impl FnOnce(&mut Self) -> Checked) {
        let started = Instant::now();
        let (outcome, evidence, detail) = match body(self) {
            Ok(Verdict::Pass(e)) => (Outcome::Pass, e, None),
            Ok(Verdict::Skip(e)) => (Outcome::Skip, e, None),
            Err(f) => (Outcome::Fail, f.evidence, f.detail),
        };
        self.results.push(CheckResult {
            id: spec.id,
            section: spec.section,
            what: spec.what,
            outcome,
            evidence,
            detail,
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// The `no-process-left` verdict over every agent of the battery, after
    /// `own` (what the check's own scenario saw).
    pub fn leftovers_verdict(&self, own: &str) -> Checked {
        let runs = self.recorded.len();
        if runs == 0 {
            return Ok(Verdict::Skip("no agent could be started".into()));
        }
        let Some((label, list)) = self.leftovers.first() else {
            let sep = if own.is_empty() { "" } else { "; " };
            return Ok(Verdict::Pass(format!(
                "{own}{sep}none of the {runs} agents run left a process behind"
            )));
        };
        let total: usize = self.leftovers.iter().map(|(_, l)| l.len()).sum();
        Err(format!(
            "{} of {runs} agents left {total} process(es) behind (killed), e.g. after `{label}`: {}",
            self.leftovers.len(),
            list.iter().map(|l| format!("pid {} `{}`", l.pid, l.cmdline)).collect::<Vec<_>>().join(", ")
        )
        .into())
    }

    pub fn protocol(&self) -> Protocol {
        self.options.protocol
    }
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The error code of a response message, if it is an error.
pub(crate) fn error_code(message: &Value) -> Option<i64> {
    message.get("error")?.get("code")?.as_i64()
}

/// How an answer looks in evidence: `error -32601` or `result {…}`.
pub(crate) fn describe_answer(message: &Value) -> String {
    match (message.get("error"), message.get("result")) {
        (Some(e), _) => {
            format!("error {}", e.get("code").map(Value::to_string).unwrap_or_else(|| "?".into()))
        }
        (_, Some(r)) => format!("result {}", deputy_testkit::wire::excerpt(r.to_string().as_bytes(), 80)),
        _ => "a malformed answer".into(),
    }
}

/// Checks that an answer is an error with this code.
pub(crate) fn want_error(message: &Value, code: i64, what: &str) -> Result<(), Failure> {
    match error_code(message) {
        Some(c) if c == code => Ok(()),
        _ => Err(format!("{what}: expected error {code}, got {}", describe_answer(message)).into()),
    }
}

/// Whether a process whose command line contains `needle` runs (not a
/// zombie), anywhere on the machine: commands the battery makes an agent
/// run carry a unique marker.
pub(crate) fn process_with(needle: &str) -> Option<(i32, String)> {
    for p in deputy_proctree::snapshot() {
        if p.is_zombie() {
            continue;
        }
        if let Some(cmd) = deputy_testkit::procs::cmdline(p.pid)
            && cmd.contains(needle)
        {
            return Some((p.pid, cmd));
        }
    }
    None
}

/// Waits up to `within` for no process with `needle` in its command line.
pub(crate) fn gone_within(needle: &str, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match process_with(needle) {
            None => return Ok(()),
            Some((pid, cmd)) if Instant::now() >= deadline => {
                return Err(format!("`{cmd}` (pid {pid}) still runs {} ms later", within.as_millis()));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

pub(crate) fn exists(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

/// `N ms` for evidence.
pub(crate) fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
