//! The command sandbox: Landlock for the file system (and TCP where the ABI
//! has it), a seccomp filter for the network (PROTOCOL.md §7).
//!
//! # What runs where
//!
//! Everything that allocates or opens files runs in the agent **before
//! `fork`** ([`Confinement::prepare`]): the Landlock ruleset is created and
//! filled (one `O_PATH` descriptor per rule, closed again), and the seccomp
//! BPF program is compiled (once per process). Between `fork` and `exec` the
//! child only makes three system calls with what was prepared
//! ([`Prepared::apply`]): `prctl(PR_SET_NO_NEW_PRIVS)`,
//! `landlock_restrict_self(fd)` and `prctl(PR_SET_SECCOMP)`; no allocation,
//! no lock, nothing that is not async-signal-safe. The ruleset descriptor is
//! close-on-exec, so the command never holds it.
//!
//! # The rules
//!
//! - Read and execute: everywhere (`/`).
//! - Write (create, remove, rename, truncate, …): under the writable set —
//!   the session's workspace (cwd, `writable_roots`, directories granted
//!   during the session; the same [`crate::patch::WritableRoots`] that
//!   confines patches) unless the mode is `read_only`, plus the scratch
//!   directories (`/tmp` and `$TMPDIR`) — and the device files `/dev/null`,
//!   `/dev/zero`, `/dev/full`, `/dev/tty`, `/dev/random`, `/dev/urandom`.
//! - Network denied (`network: false`): `socket()` of any family but
//!   `AF_UNIX` fails with `EPERM` (seccomp), `io_uring_setup` too (io_uring
//!   could open and connect sockets past the filter); with Landlock ABI 4+,
//!   TCP `bind`/`connect` are denied too; with ABI 6+, connecting to abstract
//!   unix sockets made outside the sandbox is denied.
//! - With ABI 6+, signals to processes outside the sandbox are denied.
//!   Landlock also denies `ptrace` (and so `/proc/PID/mem`, `environ`, …) of
//!   processes outside the sandbox, at every ABI.
//!
//! Children and grandchildren inherit all of it (Landlock domains and seccomp
//! filters survive `fork` and `exec` and cannot be lifted).

use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use deputy_protocol::{SandboxMode, SandboxSupport};
use landlock::{
    ABI, Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr as _,
    RulesetCreatedAttr as _, Scope,
};

/// The least Landlock ABI the file-system rules need: 3 is the first that
/// handles truncation (`truncate(2)`, `O_TRUNC`) of files outside.
pub const MIN_LANDLOCK_ABI: u32 = 3;

/// Test switch: pretend the kernel has no Landlock.
pub const TEST_NO_LANDLOCK_ENV: &str = "DEPUTY_TEST_NO_LANDLOCK";
/// Test switch: pretend the kernel has no seccomp.
pub const TEST_NO_SECCOMP_ENV: &str = "DEPUTY_TEST_NO_SECCOMP";

/// Device files commands may write (and truncate) inside the sandbox.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/random", "/dev/urandom"];

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// What the kernel offers, probed once (the test switches are read then).
pub fn support() -> &'static SandboxSupport {
    static SUPPORT: OnceLock<SandboxSupport> = OnceLock::new();
    SUPPORT.get_or_init(|| {
        let landlock_abi = if env_flag(TEST_NO_LANDLOCK_ENV) { 0 } else { probe_landlock_abi() };
        let seccomp = !env_flag(TEST_NO_SECCOMP_ENV) && probe_seccomp() && network_filter().is_ok();
        let mut modes = Vec::new();
        if landlock_abi >= MIN_LANDLOCK_ABI {
            modes.push(SandboxMode::WorkspaceWrite);
            modes.push(SandboxMode::ReadOnly);
        }
        modes.push(SandboxMode::Off);
        SandboxSupport { landlock_abi, seccomp, modes }
    })
}

fn probe_landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query: no ruleset, no memory passed.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

fn probe_seccomp() -> bool {
    // SAFETY: a query; returns the calling thread's seccomp mode, or fails
    // with EINVAL when the kernel has no seccomp.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP) >= 0 }
}

#[cfg(target_arch = "x86_64")]
const ARCH: Option<seccompiler::TargetArch> = Some(seccompiler::TargetArch::x86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: Option<seccompiler::TargetArch> = Some(seccompiler::TargetArch::aarch64);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: Option<seccompiler::TargetArch> = None;

/// The network filter, compiled once: `socket(domain != AF_UNIX)` and
/// `io_uring_setup` fail with `EPERM`; everything else is allowed. A system
/// call of another architecture (e.g. 32-bit `int 0x80` on x86-64) kills the
/// process (seccompiler's architecture check).
fn network_filter() -> Result<&'static [seccompiler::sock_filter], String> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    static FILTER: OnceLock<Result<seccompiler::BpfProgram, String>> = OnceLock::new();
    let built = FILTER.get_or_init(|| {
        let arch = ARCH.ok_or("seccomp filters are not built for this architecture")?;
        let not_unix =
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::AF_UNIX as u64)
                .map_err(|e| e.to_string())?;
        let rules = [
            (libc::SYS_socket, vec![SeccompRule::new(vec![not_unix]).map_err(|e| e.to_string())?]),
            (libc::SYS_io_uring_setup, vec![]),
        ]
        .into_iter()
        .collect();
        let filter =
            SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
                .map_err(|e| e.to_string())?;
        seccompiler::BpfProgram::try_from(filter).map_err(|e| e.to_string())
    });
    built.as_deref().map_err(Clone::clone)
}

/// The session's sandbox, as resolved at `session/start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// What the commands may write.
    pub mode: SandboxMode,
    /// Whether the commands may use the network.
    pub network: bool,
    /// False when the mode asks for a sandbox the kernel cannot enforce and
    /// the session started anyway (best effort): commands run unsandboxed.
    pub enforced: bool,
}

impl SandboxPolicy {
    /// No sandbox.
    pub fn off() -> Self {
        SandboxPolicy { mode: SandboxMode::Off, network: true, enforced: false }
    }

    /// Checks a requested sandbox against the kernel. `Ok((policy, warning))`
    /// where the warning says the sandbox is not enforced (best effort);
    /// `Err(message)` when it cannot be enforced and best effort was not
    /// asked for.
    pub fn resolve(
        mode: SandboxMode,
        network: bool,
        best_effort: bool,
    ) -> Result<(Self, Option<String>), String> {
        if mode == SandboxMode::Off {
            return Ok((SandboxPolicy::off(), None));
        }
        let s = support();
        let mut missing = Vec::new();
        if s.landlock_abi < MIN_LANDLOCK_ABI {
            missing.push(format!(
                "Landlock ABI {MIN_LANDLOCK_ABI} or later (the kernel has {})",
                if s.landlock_abi == 0 { "none".to_owned() } else { s.landlock_abi.to_string() }
            ));
        }
        if !network && !s.seccomp {
            missing.push("seccomp (for the network rule)".to_owned());
        }
        if missing.is_empty() {
            return Ok((SandboxPolicy { mode, network, enforced: true }, None));
        }
        let message = format!(
            "the sandbox `{}` cannot be enforced on this kernel: it needs {}",
            mode_name(mode),
            missing.join(" and ")
        );
        if best_effort {
            let warning =
                format!("{message}; commands of this session run UNSANDBOXED (sandbox_best_effort)");
            Ok((SandboxPolicy { mode, network, enforced: false }, Some(warning)))
        } else {
            Err(message)
        }
    }

    /// Whether commands run confined.
    pub fn is_enforced(&self) -> bool {
        self.mode != SandboxMode::Off && self.enforced
    }

    /// A short description, e.g. `workspace_write, no network`.
    pub fn describe(&self) -> String {
        if self.mode == SandboxMode::Off {
            return "off".to_owned();
        }
        format!("{}, {}", mode_name(self.mode), if self.network { "network allowed" } else { "no network" })
    }
}

/// The wire name of a mode.
pub fn mode_name(mode: SandboxMode) -> &'static str {
    match mode {
        SandboxMode::WorkspaceWrite => "workspace_write",
        SandboxMode::ReadOnly => "read_only",
        SandboxMode::Off => "off",
    }
}

/// The scratch directories every sandboxed command may write: `/tmp` and
/// the agent's `$TMPDIR` (when set and absolute).
pub fn scratch_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/tmp")];
    if let Some(t) = std::env::var_os("TMPDIR").map(PathBuf::from)
        && t.is_absolute()
        && !dirs.contains(&t)
    {
        dirs.push(t);
    }
    dirs
}

/// One command's confinement: the policy and the directories it may write
/// (the workspace roots as they are at this call; the scratch directories
/// are added by [`Confinement::prepare`]).
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The session's sandbox.
    pub policy: SandboxPolicy,
    /// The directories the command may write, absolute.
    pub writable: Vec<PathBuf>,
}

/// A confinement ready to apply in a forked child.
#[derive(Debug)]
pub struct Prepared {
    ruleset: OwnedFd,
    seccomp: Option<&'static [seccompiler::sock_filter]>,
}

impl Confinement {
    /// Builds the ruleset and looks up the filter. Runs in the agent, before
    /// `fork`. `None` when the policy is not enforced (the command runs
    /// unsandboxed, as the session was told).
    pub fn prepare(&self) -> io::Result<Option<Prepared>> {
        if !self.policy.is_enforced() {
            return Ok(None);
        }
        let err = |e: &dyn std::fmt::Display| io::Error::other(format!("sandbox: {e}"));
        let level = support().landlock_abi;
        let abi = ABI::from(level as i32);
        let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(abi)).map_err(|e| err(&e))?;
        if !self.policy.network && level >= 4 {
            ruleset = ruleset.handle_access(AccessNet::from_all(abi)).map_err(|e| err(&e))?;
        }
        if level >= 6 {
            ruleset = ruleset.scope(Scope::Signal).map_err(|e| err(&e))?;
            if !self.policy.network {
                ruleset = ruleset.scope(Scope::AbstractUnixSocket).map_err(|e| err(&e))?;
            }
        }
        let mut created = ruleset.create().map_err(|e| err(&e))?;
        created = created
            .add_rule(PathBeneath::new(PathFd::new("/").map_err(|e| err(&e))?, AccessFs::from_read(abi)))
            .map_err(|e| err(&e))?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        if self.policy.mode == SandboxMode::WorkspaceWrite {
            dirs.extend(self.writable.iter().cloned());
        }
        dirs.extend(scratch_dirs());
        for dir in dirs {
            // A root that does not exist (yet) has nothing to allow.
            let Ok(fd) = PathFd::new(&dir) else { continue };
            created = created.add_rule(PathBeneath::new(fd, AccessFs::from_all(abi))).map_err(|e| err(&e))?;
        }
        for dev in DEVICES {
            if !Path::new(dev).exists() {
                continue;
            }
            let Ok(fd) = PathFd::new(dev) else { continue };
            created =
                created.add_rule(PathBeneath::new(fd, AccessFs::from_file(abi))).map_err(|e| err(&e))?;
        }
        let ruleset: Option<OwnedFd> = created.into();
        let ruleset = ruleset.ok_or_else(|| err(&"Landlock did not create a ruleset"))?;
        let seccomp = if self.policy.network { None } else { Some(network_filter().map_err(|e| err(&e))?) };
        Ok(Some(Prepared { ruleset, seccomp }))
    }
}

impl Prepared {
    /// Confines the calling process. Called in the child between `fork` and
    /// `exec`: three system calls on prepared data, no allocation.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: plain system calls; `prog` points into a 'static program
        // that outlives the call.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, self.ruleset.as_raw_fd(), 0u32) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(filter) = self.seccomp {
                let prog = libc::sock_fprog {
                    len: filter.len() as libc::c_ushort,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &prog) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Whether a failed command's output looks like the sandbox blocked it: the
/// first line naming `EACCES`/`EPERM` ("Permission denied", "Operation not
/// permitted"), trimmed. A heuristic (see PROTOCOL.md §7): a command that
/// hides its errors is not recognised, and another permission failure is
/// taken for a denial (which only costs one question).
pub fn denial_hint(output: &str) -> Option<String> {
    const MARKERS: &[&str] =
        &["permission denied", "operation not permitted", "eacces", "eperm", "read-only file system"];
    let line = output.lines().find(|l| {
        let lower = l.to_ascii_lowercase();
        MARKERS.iter().any(|m| lower.contains(m))
    })?;
    let line = line.trim();
    let mut cut: String = line.chars().take(300).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert_eq!(
            denial_hint("x\ntouch: cannot touch '../out': Permission denied\n").as_deref(),
            Some("touch: cannot touch '../out': Permission denied")
        );
        assert!(denial_hint("curl: (7) Operation not permitted").is_some());
        assert_eq!(denial_hint("no such file or directory"), None);
    }

    #[test]
    fn off_needs_nothing() {
        let (p, w) = SandboxPolicy::resolve(SandboxMode::Off, false, false).unwrap();
        assert!(!p.is_enforced() && w.is_none());
        assert!(support().modes.contains(&SandboxMode::Off));
    }

    #[test]
    fn the_filter_compiles() {
        if ARCH.is_some() {
            assert!(!network_filter().unwrap().is_empty());
        }
    }
}
