//! The agent process: spawned in a session of its own, killed as a tree, reaped.
//!
//! The child is started in a new session ([`crate::spawn`], `posix_spawn`
//! with `POSIX_SPAWN_SETSID`), so it leads a new session and a new process
//! group whose ids equal its pid. Killing the tree
//! ([`deputy_proctree::kill_tree`] with [`Tree::session_leader`]):
//!
//! 1. every process found by parent links from the agent (its tools, their
//!    children, and — because `deputy agent` is a child subreaper — every
//!    orphan a tool left behind, even one that called `setsid()`), every
//!    process of the agent's session and of its group, and the agent itself,
//!    is frozen with `SIGSTOP` over fresh reads of `/proc` until nothing new
//!    shows up (a stopped process cannot fork);
//! 2. then all of them get `SIGKILL`, and the group a `killpg`;
//! 3. only then is the agent reaped, so its pid (= the group and session id)
//!    cannot be reused by an unrelated process while we signal it.
//!
//! Nothing is ever signalled after the agent was reaped. What this cannot
//! catch: an orphan of an agent that is *not* a subreaper, once its parent
//! exited (it was re-parented to init and left the session with `setsid`).
//! For third-party agents, [`crate::AgentCommand::reaped`] runs the command
//! under `deputy`'s own small reaper, which closes that gap.

use std::io;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use deputy_proctree::Tree;

use crate::command::AgentCommand;
use crate::error::HostError;

/// How long a tree kill waits for the killed processes to die (well inside
/// the ladder's kill reserve).
const KILL_WAIT: Duration = Duration::from_millis(100);

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
    let program = cmd.get_program().to_string_lossy().into_owned();
    let spawn_error =
        |source: io::Error| HostError::Spawn { program: program.clone(), source: source.into() };
    let started = crate::spawn::spawn_session_leader(&cmd.launch()).map_err(spawn_error)?;
    let pid = started.pid as u32;
    let child = ChildProc::new(pid);
    let pipes = (|| {
        let stdin = ChildStdin::from_std(std::process::ChildStdin::from(started.stdin))?;
        let stdout = ChildStdout::from_std(std::process::ChildStdout::from(started.stdout))?;
        let stderr = ChildStderr::from_std(std::process::ChildStderr::from(started.stderr))?;
        Ok::<_, io::Error>((stdin, stdout, stderr))
    })();
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
    fn new(pid: u32) -> Self {
        ChildProc {
            pid,
            state: Mutex::new(State { status: None }),
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

    /// Freezes and SIGKILLs the agent's whole tree (see the module docs). No-op
    /// once the agent has been reaped. Returns how many processes were
    /// killed, the agent included.
    pub fn kill_tree(&self) -> usize {
        let state = self.lock();
        if state.status.is_some() {
            return 0;
        }
        let pid = self.pid as libc::pid_t;
        // Waits (briefly) until the killed processes are dead: the ending
        // reported next says the tree is gone, and must be true when read.
        let killed = deputy_proctree::kill_tree_and_wait(&Tree::session_leader(pid), KILL_WAIT);
        // SAFETY: plain syscall on a pid we own and have not reaped (for
        // systems without /proc, where the tree kill is the group kill only).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        drop(state);
        killed
    }

    /// Reaps the process if it has terminated.
    pub fn try_reap(&self) -> Option<ExitStatus> {
        let mut state = self.lock();
        if state.status.is_none() {
            match try_wait(self.pid) {
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

/// `waitpid(pid, WNOHANG)`: reaps the child if it has terminated.
fn try_wait(pid: u32) -> io::Result<Option<ExitStatus>> {
    use std::os::unix::process::ExitStatusExt as _;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child writes its status into `status`.
        match unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) } {
            0 => return Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            _ => return Ok(Some(ExitStatus::from_raw(status))),
        }
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
