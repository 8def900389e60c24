//! The `exec` tool: run one argv, stream its output, report how it ended.
//!
//! - The argv runs directly (no shell unless the argv is one, e.g. `sh -c …`),
//!   in the given cwd, with stdin connected to `/dev/null` and stdout/stderr
//!   piped.
//! - The child gets a process group of its own (`setpgid(0, 0)` before exec)
//!   and, on Linux, `PR_SET_PDEATHSIG = SIGKILL`, so it dies if the agent is
//!   killed. Cancelling the run (dropping its future: interrupt, shutdown,
//!   end of input) kills the whole group with `SIGKILL` and reaps the child.
//! - When the command exits, processes it left running in its group are
//!   killed too (after up to 100 ms for them to close the output pipes), so
//!   nothing outlives the call. A cancelled command's whole tree is frozen
//!   and killed by parent links, so a grandchild in a group or session of its
//!   own goes too.
//! - When the agent owns its process ([`adopt_orphans`], as `deputy agent`
//!   does), it is a child subreaper: a process a command left behind after
//!   the command exited — a double fork, `setsid sleep 300 &` — is
//!   re-parented to the agent instead of init, and is killed (with its
//!   descendants) and reaped when the command ends. Nothing a command
//!   started outlives it.
//! - Environment variables whose names contain `KEY`, `SECRET`, `TOKEN` or
//!   `PASSWORD` (case-insensitive) are removed unless `keep_secret_env` is set.
//! - Output is streamed chunk by chunk (invalid UTF-8 becomes U+FFFD; a
//!   character split across reads is kept whole) and captured interleaved as
//!   read, capped at the first [`OUTPUT_HEAD_BYTES`] and the last
//!   [`OUTPUT_TAIL_BYTES`] with a marker between.
//! - On timeout the group is killed and the result says `timed_out`. A killed
//!   command's exit code is 128 + the signal number; one that could not be
//!   started reports -1 and the reason as its output. A run cancelled by a
//!   turn abort returns nothing: the turn reports that command's end itself
//!   (`interrupted`, exit code 137), from its own copy of the output.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use deputy_proctree::{Pid, Tree};
use deputy_protocol::ExecOutputStream;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

/// Default per-command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes kept from the start of a command's output.
pub const OUTPUT_HEAD_BYTES: usize = 64 * 1024;
/// Bytes kept from the end of a command's output.
pub const OUTPUT_TAIL_BYTES: usize = 64 * 1024;
/// How long the output pipes may stay open after the command exited.
const PIPE_GRACE: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 8 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecParams {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// The directory to run it in.
    pub cwd: PathBuf,
    /// Killed (with its process tree) when it runs longer.
    pub timeout: Duration,
    /// Keep the environment variables `is_secret_env` would remove.
    pub keep_secret_env: bool,
    /// The sandbox to run it in (`None`: unconfined). Its ruleset is built
    /// before `fork`; the child only applies it (see [`crate::sandbox`]).
    pub sandbox: Option<crate::sandbox::Confinement>,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Exit code; 128 + N if killed by signal N; -1 if it never ran.
    pub exit_code: i32,
    /// From spawn to exit (or to the kill).
    pub duration: Duration,
    /// stdout and stderr interleaved, capped (head + tail).
    pub output: String,
    /// `output` was cut in the middle.
    pub truncated: bool,
    /// The timeout killed it.
    pub timed_out: bool,
}

/// Whether an environment variable is removed by default.
pub fn is_secret_env(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "SECRET", "TOKEN", "PASSWORD"].iter().any(|w| upper.contains(w))
}

/// Set by [`adopt_orphans`]: this process is a child subreaper, and every
/// child that is not a running tool is a command's leftover.
static OWNS_PROCESS: AtomicBool = AtomicBool::new(false);
/// The pids of the tools running now (tokio waits for those itself).
static RUNNING_TOOLS: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

fn running_tools() -> std::sync::MutexGuard<'static, Vec<Pid>> {
    RUNNING_TOOLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes this process a child subreaper, so the orphans of its commands
/// stay its descendants and are killed when the command ends (see the module
/// docs). For a process that is the agent and nothing else (`deputy agent`):
/// every child of it that is not a running tool is then treated as a
/// command's leftover. Linux only; elsewhere an error and nothing changes.
pub fn adopt_orphans() -> io::Result<()> {
    deputy_proctree::set_child_subreaper()?;
    OWNS_PROCESS.store(true, Ordering::Release);
    Ok(())
}

/// Kills (and reaps) every process that commands left behind, if this
/// process adopted orphans: everything under it but the running tools'
/// trees. Cheap when there is nothing: one read of this process's children.
/// Returns how many processes were killed.
pub fn kill_leftovers() -> usize {
    if !OWNS_PROCESS.load(Ordering::Acquire) {
        return 0;
    }
    let running = running_tools().clone();
    if deputy_proctree::own_children().iter().all(|pid| running.contains(pid)) {
        return 0;
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let killed = deputy_proctree::kill_tree(&Tree { exclude: running.clone(), ..Tree::descendants_of(me) });
    deputy_proctree::reap_adopted(|pid| running_tools().contains(&pid), Duration::from_millis(100));
    if killed > 0 {
        tracing::debug!(killed, "killed processes a command left behind");
    }
    killed
}

/// Kills the child's process group and reaps the child when dropped.
struct GroupGuard {
    pgid: Option<i32>,
    child: Option<Child>,
}

/// How long a cancelled command's drop waits for its killed processes to die.
const KILL_WAIT: Duration = Duration::from_millis(200);

impl GroupGuard {
    /// No longer a running tool (its status was collected, or it is being
    /// killed): its leftovers are fair game for [`kill_leftovers`].
    fn unregister(&self) {
        if let Some(pid) = self.pgid {
            running_tools().retain(|p| *p != pid);
        }
    }
}

impl GroupGuard {
    /// Freezes and kills the command's whole tree (its group, and every
    /// descendant by parent links, in whatever group or session) while it
    /// still runs, so the links still lead everywhere.
    fn kill_tree(&self) {
        if let Some(pid) = self.pgid {
            deputy_proctree::kill_tree(&Tree { group: Some(pid), ..Tree::session_leader(pid) });
        }
    }

    fn kill_group(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: plain syscall; ESRCH (group gone) is fine.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let (Some(pid), Some(_)) = (self.pgid, &self.child) {
            // Cancelled while running: freeze and kill its whole tree while
            // the parent links still lead to everything it started, and wait
            // (briefly) until it is dead: the turn reports the command
            // ended next, and that must be true when the host reads it.
            let tree = Tree { group: Some(pid), ..Tree::session_leader(pid) };
            deputy_proctree::kill_tree_and_wait(&tree, KILL_WAIT);
            // Still registered: tokio reaps it, not `kill_leftovers`.
            kill_leftovers();
            self.unregister();
        }
        self.kill_group();
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
    }
}

fn spawn(params: &ExecParams) -> io::Result<Child> {
    let (program, args) = params.argv.split_first().ok_or_else(|| io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&params.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !params.keep_secret_env {
        for (name, _) in std::env::vars_os() {
            if is_secret_env(&name.to_string_lossy()) {
                cmd.env_remove(name);
            }
        }
    }
    #[cfg(target_os = "linux")]
    let parent = std::process::id() as libc::pid_t;
    // Built here, before fork: the child only makes system calls with it. A
    // sandbox that cannot be built fails the spawn (never unconfined).
    let confine = match &params.sandbox {
        Some(c) => c.prepare()?,
        None => None,
    };
    // SAFETY: only async-signal-safe calls between fork and exec (setpgid,
    // prctl, getppid, and the sandbox's prctl/landlock_restrict_self calls).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The agent died between fork and prctl: do not outlive it.
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
            }
            if let Some(c) = &confine {
                c.apply()?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Runs the command, calling `on_output` for every chunk of output (awaited:
/// a slow consumer slows the reading down). Dropping the returned future kills
/// the command's process group.
pub async fn run<F, Fut>(params: &ExecParams, mut on_output: F) -> ExecOutcome
where
    F: FnMut(ExecOutputStream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    let mut child = match spawn(params) {
        Ok(c) => c,
        Err(e) => {
            let program = params.argv.first().map(String::as_str).unwrap_or("");
            return ExecOutcome {
                exit_code: -1,
                duration: started.elapsed(),
                output: format!("failed to start `{program}`: {e}"),
                truncated: false,
                timed_out: false,
            };
        }
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let pgid = child.id().map(|p| p as i32);
    if let Some(pid) = pgid {
        running_tools().push(pid);
    }
    let mut guard = GroupGuard { pgid, child: Some(child) };

    let mut capture = Capture::default();
    let mut out_dec = Utf8Stream::default();
    let mut err_dec = Utf8Stream::default();
    let mut out_buf = vec![0u8; READ_CHUNK];
    let mut err_buf = vec![0u8; READ_CHUNK];
    let deadline = tokio::time::Instant::now() + params.timeout;
    let mut status: Option<io::Result<std::process::ExitStatus>> = None;
    let mut timed_out = false;
    // After the command exits (or is killed), how long the pipes may stay open.
    let mut pipe_deadline: Option<tokio::time::Instant> = None;
    let mut group_killed = false;

    loop {
        if stdout.is_none() && stderr.is_none() && status.is_some() {
            break;
        }
        let child = guard.child.as_mut().expect("child present until the end");
        tokio::select! {
            r = read_opt(&mut stdout, &mut out_buf), if stdout.is_some() => match r {
                Ok(0) | Err(_) => {
                    stdout = None;
                    let rest = out_dec.finish();
                    if !rest.is_empty() { on_output(ExecOutputStream::Stdout, rest).await; }
                }
                Ok(n) => {
                    capture.push(&out_buf[..n]);
                    let text = out_dec.decode(&out_buf[..n]);
                    if !text.is_empty() { on_output(ExecOutputStream::Stdout, text).await; }
                }
            },
            r = read_opt(&mut stderr, &mut err_buf), if stderr.is_some() => match r {
                Ok(0) | Err(_) => {
                    stderr = None;
                    let rest = err_dec.finish();
                    if !rest.is_empty() { on_output(ExecOutputStream::Stderr, rest).await; }
                }
                Ok(n) => {
                    capture.push(&err_buf[..n]);
                    let text = err_dec.decode(&err_buf[..n]);
                    if !text.is_empty() { on_output(ExecOutputStream::Stderr, text).await; }
                }
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                pipe_deadline = Some(tokio::time::Instant::now() + PIPE_GRACE);
            }
            () = tokio::time::sleep_until(deadline), if !timed_out && status.is_none() => {
                timed_out = true;
                guard.kill_tree();
                group_killed = true;
            }
            () = sleep_until_opt(pipe_deadline) => {
                if group_killed {
                    // Still open after a kill: give up on the rest of the output.
                    break;
                }
                guard.kill_group();
                group_killed = true;
                pipe_deadline = Some(tokio::time::Instant::now() + PIPE_GRACE);
            }
        }
    }
    // Leftovers of the command's group (background jobs) do not outlive it,
    // nor do orphans it left in groups or sessions of their own.
    guard.kill_group();
    guard.unregister();
    guard.pgid = None;
    let child_done = guard.child.take();
    drop(child_done);
    kill_leftovers();
    let exit_code = match status {
        Some(Ok(st)) => exit_code_of(st),
        _ => -1,
    };
    let (output, truncated) = capture.finish();
    ExecOutcome { exit_code, duration: started.elapsed(), output, truncated, timed_out }
}

fn exit_code_of(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match (st.code(), st.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

async fn read_opt<R: tokio::io::AsyncRead + Unpin>(r: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Head + tail capture of the interleaved output (also kept by the turn, so
/// a command killed by an abort still reports what it wrote).
#[derive(Debug, Default)]
pub struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: usize,
}

impl Capture {
    /// Adds output as read: the start is kept up to the head size, then only the tail.
    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len();
        if self.head.len() < OUTPUT_HEAD_BYTES {
            let n = data.len().min(OUTPUT_HEAD_BYTES - self.head.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= OUTPUT_TAIL_BYTES {
            self.tail.clear();
            self.tail.extend(&data[data.len() - OUTPUT_TAIL_BYTES..]);
        } else {
            let overflow = (self.tail.len() + data.len()).saturating_sub(OUTPUT_TAIL_BYTES);
            self.tail.drain(..overflow);
            self.tail.extend(data);
        }
    }

    /// The captured text and whether some of it was cut.
    pub fn finish(self) -> (String, bool) {
        let kept = self.head.len() + self.tail.len();
        let mut tail: Vec<u8> = self.tail.into();
        if kept == self.total {
            let mut all = self.head;
            all.append(&mut tail);
            return (String::from_utf8_lossy(&all).into_owned(), false);
        }
        let omitted = self.total - kept;
        let head_end = self.head.len() - incomplete_suffix_len(&self.head);
        let tail_start = tail.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
        let mut s = String::from_utf8_lossy(&self.head[..head_end]).into_owned();
        s.push_str(&format!("\n[... {omitted} bytes omitted ...]\n"));
        s.push_str(&String::from_utf8_lossy(&tail[tail_start..]));
        (s, true)
    }
}

/// How many bytes at the end of `b` start a UTF-8 sequence that is not complete.
fn incomplete_suffix_len(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let byte = b[b.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead
        }
        let need = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Decodes a byte stream as UTF-8 across chunk boundaries.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn decode(&mut self, data: &[u8]) -> String {
        if self.pending.is_empty() {
            let keep = incomplete_suffix_len(data);
            let text = String::from_utf8_lossy(&data[..data.len() - keep]).into_owned();
            self.pending.extend_from_slice(&data[data.len() - keep..]);
            return text;
        }
        self.pending.extend_from_slice(data);
        let keep = incomplete_suffix_len(&self.pending);
        let cut = self.pending.len() - keep;
        let text = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
        self.pending.drain(..cut);
        text
    }

    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn params(argv: &[&str]) -> ExecParams {
        ExecParams {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: std::env::temp_dir(),
            timeout: Duration::from_secs(10),
            keep_secret_env: false,
            sandbox: None,
        }
    }

    async fn run_collect(p: &ExecParams) -> (ExecOutcome, Vec<(ExecOutputStream, String)>) {
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let c = chunks.clone();
        let out = run(p, move |s, t| {
            c.lock().unwrap().push((s, t));
            async {}
        })
        .await;
        let chunks = chunks.lock().unwrap().clone();
        (out, chunks)
    }

    #[tokio::test]
    async fn runs_and_streams() {
        let (out, chunks) = run_collect(&params(&["sh", "-c", "echo out; echo err >&2; exit 3"])).await;
        assert_eq!(out.exit_code, 3);
        assert!(!out.timed_out && !out.truncated);
        assert!(out.output.contains("out\n") && out.output.contains("err\n"), "{}", out.output);
        assert!(chunks.contains(&(ExecOutputStream::Stdout, "out\n".into())));
        assert!(chunks.contains(&(ExecOutputStream::Stderr, "err\n".into())));
    }

    #[tokio::test]
    async fn stdin_is_null_and_cwd_is_used() {
        let mut p = params(&["sh", "-c", "cat; pwd"]);
        let dir = tempfile::tempdir().unwrap();
        p.cwd = dir.path().canonicalize().unwrap();
        let (out, _) = run_collect(&p).await;
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.output.trim(), p.cwd.to_str().unwrap());
    }

    #[tokio::test]
    async fn not_found_reports_minus_one() {
        let (out, _) = run_collect(&params(&["/nonexistent/program"])).await;
        assert_eq!(out.exit_code, -1);
        assert!(out.output.contains("failed to start"), "{}", out.output);
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let mut p = params(&["sh", "-c", "sleep 30 & sleep 30"]);
        p.timeout = Duration::from_millis(200);
        let t = Instant::now();
        let (out, _) = run_collect(&p).await;
        assert!(out.timed_out);
        assert_eq!(out.exit_code, 128 + 9);
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn background_jobs_do_not_hold_the_call() {
        let t = Instant::now();
        let (out, _) = run_collect(&params(&["sh", "-c", "sleep 30 & echo started"])).await;
        assert_eq!(out.exit_code, 0);
        assert!(out.output.contains("started"));
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn secrets_are_scrubbed() {
        // SAFETY: test-only; the variable is unique to this test.
        unsafe { std::env::set_var("DEPUTY_TEST_API_KEY", "hunter2") };
        let (out, _) = run_collect(&params(&["sh", "-c", "echo ${DEPUTY_TEST_API_KEY:-none}"])).await;
        assert_eq!(out.output.trim(), "none");
        let mut p = params(&["sh", "-c", "echo ${DEPUTY_TEST_API_KEY:-none}"]);
        p.keep_secret_env = true;
        let (out, _) = run_collect(&p).await;
        assert_eq!(out.output.trim(), "hunter2");
        assert!(is_secret_env("github_token") && is_secret_env("DB_PASSWORD") && !is_secret_env("PATH"));
    }

    #[tokio::test]
    async fn output_is_capped_head_and_tail() {
        let (out, _) =
            run_collect(&params(&["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a; echo END"])).await;
        assert!(out.truncated);
        assert!(out.output.ends_with("END\n"));
        assert!(out.output.contains("bytes omitted"));
        assert!(out.output.len() < OUTPUT_HEAD_BYTES + OUTPUT_TAIL_BYTES + 100);
    }

    #[test]
    fn utf8_split_across_chunks() {
        let mut d = Utf8Stream::default();
        let bytes = "héllo €".as_bytes();
        let mut s = String::new();
        for b in bytes {
            s.push_str(&d.decode(std::slice::from_ref(b)));
        }
        s.push_str(&d.finish());
        assert_eq!(s, "héllo €");
        let mut d = Utf8Stream::default();
        assert_eq!(d.decode(b"a\xffb"), "a\u{fffd}b");
    }
}
