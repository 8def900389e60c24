//! The agent process: spawned in a session of its own, killed as a tree, reaped.
//!
//! The child is started with `setsid()` (in `pre_exec`), so it leads a new
//! session and a new process group whose ids equal its pid. Tools the agent
//! runs may be put in process groups of their own, but they stay in the
//! agent's session. Killing the tree is therefore:
//!
//! 1. `killpg(pid, SIGKILL)` — the agent and everything still in its group;
//! 2. on Linux, a sweep of `/proc/*/stat` that SIGKILLs every process whose
//!    session id (field 6) is the agent's pid — tools in their own groups;
//!    repeated while it finds live processes (a fork racing the sweep);
//! 3. only then is the agent reaped, so its pid (= the group and session id)
//!    cannot be reused by an unrelated process while we signal it.
//!
//! Nothing is ever signalled after the agent was reaped. A grandchild that
//! starts a session of its own (`setsid`, a daemon) escapes, as it would
//! escape any process-group based cleanup.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::command::AgentCommand;
use crate::error::HostError;

/// A spawned agent and its three pipes (already registered with tokio).
pub(crate) struct AgentProcess {
    pub child: ChildProc,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Spawns `cmd` with all three stdio pipes, in a new session and process group.
///
/// Must be called inside a tokio runtime (the pipes are registered with it).
pub(crate) fn spawn(cmd: &AgentCommand) -> Result<AgentProcess, HostError> {
    use std::os::unix::process::CommandExt as _;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let spawn_error =
        |source: io::Error| HostError::Spawn { program: program.clone(), source: source.into() };
    let mut std_cmd = cmd.to_std();
    std_cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: `setsid` is async-signal-safe and touches no memory of the parent.
    unsafe {
        std_cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = std_cmd.spawn().map_err(spawn_error)?;
    let pid = child.id();
    let pipes = (|| {
        let stdin = ChildStdin::from_std(child.stdin.take().expect("piped"))?;
        let stdout = ChildStdout::from_std(child.stdout.take().expect("piped"))?;
        let stderr = ChildStderr::from_std(child.stderr.take().expect("piped"))?;
        Ok::<_, io::Error>((stdin, stdout, stderr))
    })();
    let child = ChildProc::new(child);
    match pipes {
        Ok((stdin, stdout, stderr)) => {
            tracing::debug!(pid, program = %program, "agent spawned");
            Ok(AgentProcess { child, stdin, stdout, stderr })
        }
        Err(e) => {
            child.kill_tree();
            child.reap_blocking(Duration::from_secs(1));
            Err(spawn_error(e))
        }
    }
}

struct State {
    child: std::process::Child,
    status: Option<ExitStatus>,
}

/// The agent's process handle: exit detection without reaping, tree kill, reap.
pub(crate) struct ChildProc {
    pid: u32,
    state: Mutex<State>,
    #[cfg(target_os = "linux")]
    pidfd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl ChildProc {
    fn new(child: std::process::Child) -> Self {
        let pid = child.id();
        ChildProc {
            pid,
            state: Mutex::new(State { child, status: None }),
            #[cfg(target_os = "linux")]
            pidfd: open_pidfd(pid),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The agent's pid (also its process group and session id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status, once reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.lock().status
    }

    /// Whether the process has terminated (reaped or not). Does not reap.
    pub fn has_exited(&self) -> bool {
        let state = self.lock();
        state.status.is_some() || exited_unreaped(self.pid)
    }

    /// Resolves once the process has terminated. Does not reap it, so its pid
    /// stays reserved until [`reap`](Self::reap).
    pub async fn exited(&self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pidfd {
            loop {
                if self.has_exited() {
                    return;
                }
                match fd.readable().await {
                    Ok(mut guard) => {
                        if self.has_exited() {
                            return;
                        }
                        guard.clear_ready();
                    }
                    Err(_) => break, // fall back to polling
                }
            }
        }
        let mut delay = Duration::from_millis(2);
        while !self.has_exited() {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(25));
        }
    }

    /// SIGKILLs the agent's process group and (on Linux) every process of its
    /// session. No-op once the agent has been reaped. Returns how many
    /// processes the session sweep signalled.
    pub fn kill_tree(&self) -> usize {
        let state = self.lock();
        if state.status.is_some() {
            return 0;
        }
        let pid = self.pid as libc::pid_t;
        // SAFETY: plain syscalls on a pid we own and have not reaped.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
        let swept = sweep_session(pid);
        drop(state);
        swept
    }

    /// Reaps the process if it has terminated.
    pub fn try_reap(&self) -> Option<ExitStatus> {
        let mut state = self.lock();
        if state.status.is_none() {
            match state.child.try_wait() {
                Ok(Some(status)) => state.status = Some(status),
                Ok(None) => {}
                Err(e) => tracing::warn!(pid = self.pid, error = %e, "waiting for the agent failed"),
            }
        }
        state.status
    }

    /// Waits for the process to terminate and reaps it.
    pub async fn reap(&self) -> ExitStatus {
        loop {
            self.exited().await;
            if let Some(status) = self.try_reap() {
                return status;
            }
            // Terminated per waitid but not reapable yet (should not happen): retry.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Reaps synchronously, polling for at most `limit` (for `Drop`, right after
    /// a SIGKILL, when the process is gone within microseconds).
    pub fn reap_blocking(&self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_reap() {
                return Some(status);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl std::fmt::Debug for ChildProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildProc").field("pid", &self.pid).field("status", &self.status()).finish()
    }
}

/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`: terminated, not reaped.
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r == 0 && info.si_pid() != 0
    }
}

#[cfg(target_os = "linux")]
fn open_pidfd(pid: u32) -> Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open returns a new fd (O_CLOEXEC by default) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        tracing::debug!(pid, error = %io::Error::last_os_error(), "pidfd_open failed: polling for exit");
        return None;
    }
    // SAFETY: we own the fresh fd.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open as long as it does.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
}

/// The members of session `sid` (excluding zombies and this process), from `/proc`.
#[cfg(target_os = "linux")]
pub(crate) fn session_members(sid: libc::pid_t) -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<libc::pid_t>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else { continue };
        if let Some((state, session)) = parse_stat(&stat)
            && session == sid
            && state != b'Z'
        {
            found.push(pid);
        }
    }
    found
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn session_members(_sid: libc::pid_t) -> Vec<libc::pid_t> {
    Vec::new()
}

/// Parses `/proc/PID/stat`: (state, session id). Fields after the command
/// name, which is in parentheses and may itself contain `)` and spaces, are
/// read after the *last* `)`: state ppid pgrp session …
fn parse_stat(stat: &[u8]) -> Option<(u8, libc::pid_t)> {
    let close = memchr::memrchr(b')', stat)?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let _ppid = fields.next()?;
    let _pgrp = fields.next()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, session))
}

/// SIGKILLs every live process of session `sid`, a few rounds while it finds any.
fn sweep_session(sid: libc::pid_t) -> usize {
    let mut total = 0;
    for _ in 0..4 {
        let members = session_members(sid);
        if members.is_empty() {
            break;
        }
        for pid in &members {
            // SAFETY: plain syscall.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        total += members.len();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_after_the_last_paren() {
        let stat = b"4242 (weird) name) S 1 4242 4200 0 -1 4194560 0 0";
        assert_eq!(parse_stat(stat), Some((b'S', 4200)));
        assert_eq!(parse_stat(b"1 (x) Z 0 1 1 0"), Some((b'Z', 1)));
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_session_is_found_and_self_excluded() {
        let sid = unsafe { libc::getsid(0) };
        let members = session_members(sid);
        assert!(!members.contains(&(std::process::id() as libc::pid_t)));
    }
}
