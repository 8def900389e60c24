//! Starting the agent with `posix_spawn(3)` in a session of its own.
//!
//! `std::process::Command` can only start a child in a new session through
//! `pre_exec`, and a `pre_exec` hook makes it `fork()`: the host's whole
//! address space (its page tables) is copied, only to be thrown away by the
//! `exec` right after. That cost grows with the host's memory. Measured on
//! this project's 2-core machine, from `spawn()` to its return: 0.2 ms with
//! `posix_spawn` whatever the host's size, against 0.8 ms with `pre_exec` in
//! a small process, 9.4 ms with 50 MB of heap and 22 ms with 200 MB — an
//! editor or an agent host embedding this crate is rarely small.
//!
//! glibc and musl run `posix_spawn` with `CLONE_VFORK` (no copy), and its
//! `POSIX_SPAWN_SETSID` flag makes the child a session leader. std has that
//! too (`CommandExt::setsid`), but unstable (rust-lang/rust#105376); until it
//! is stable this module does what it would, and nothing more: the program
//! is looked up in the child's `PATH`, the environment and working directory
//! are applied, the three stdio pipes are connected, the signal mask is
//! emptied and `SIGPIPE` reset to its default (as std does, since Rust
//! programs ignore it).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

/// A started child: its pid and the host's ends of its stdio pipes.
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What to start: the program, its whole argv (argv\[0\] first), its whole
/// environment and its working directory.
pub(crate) struct Launch {
    pub program: OsString,
    pub argv: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
}

/// Starts `launch` in a new session and process group (both ids = its pid),
/// with piped stdin, stdout and stderr.
pub(crate) fn spawn_session_leader(launch: &Launch) -> io::Result<Spawned> {
    let program = resolve(&launch.program, &launch.env, launch.cwd.as_deref())?;
    let program = c_string(program.as_os_str())?;
    let argv = launch.argv.iter().map(|a| c_string(a)).collect::<io::Result<Vec<_>>>()?;
    let env = launch
        .env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.clone();
            pair.push("=");
            pair.push(v);
            c_string(&pair)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = launch.cwd.as_deref().map(|d| c_string(d.as_os_str())).transpose()?;
    let argv_ptrs = null_terminated(&argv);
    let env_ptrs = null_terminated(&env);

    let (child_stdin, stdin) = pipe()?;
    let (stdout, child_stdout) = pipe()?;
    let (stderr, child_stderr) = pipe()?;

    let mut actions = FileActions::new()?;
    for (fd, target) in [(&child_stdin, 0), (&child_stdout, 1), (&child_stderr, 2)] {
        // `pipe` keeps every end above 2, so each dup2 makes a new fd
        // (without close-on-exec) rather than being a no-op on itself.
        actions.dup2(fd.as_raw_fd(), target)?;
    }
    if let Some(dir) = &cwd {
        actions.chdir(dir)?;
    }
    let attr = Attributes::session_leader()?;

    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the C strings and the
    // null-terminated arrays live until the end of this function, and
    // `actions` and `attr` are initialised. posix_spawn does not keep them.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attr.0,
            argv_ptrs.as_ptr().cast(),
            env_ptrs.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // The child's ends close here, in the host; the child has its copies.
    drop((child_stdin, child_stdout, child_stderr));
    Ok(Spawned { pid, stdin, stdout, stderr })
}

/// The program to execute: as given if it has a slash, else the first
/// executable regular file of that name in the child's `PATH` (as
/// `execvp` would, but with the child's environment, like std).
fn resolve(program: &OsStr, env: &[(OsString, OsString)], cwd: Option<&Path>) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the program name is empty"));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
    let path = path.unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(&path) {
        // An empty entry means the current directory: the child's.
        let dir = if dir.as_os_str().is_empty() {
            cwd.map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        } else {
            dir
        };
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found in PATH", program.to_string_lossy())))
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(c) = c_string(path.as_os_str()) else { return false };
    // SAFETY: access only reads the NUL-terminated path.
    let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    executable && path.metadata().is_ok_and(|m| m.is_file())
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes().to_vec()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{:?} contains a NUL byte", s.to_string_lossy()))
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(ptr::null())).collect()
}

/// A close-on-exec pipe, both ends above fd 2: `(read, write)`.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are new and ours.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// `fd` itself if it is above 2, else a close-on-exec copy that is (a host
/// started with its stdio closed gets pipe ends 0–2).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd (or -1); `fd` stays open meanwhile.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the copy is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// The result of a `posix_spawn*` setup call (they return the error number).
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        // SAFETY: init fills the zeroed struct; destroy runs in Drop only after success.
        unsafe {
            let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut actions))?;
            Ok(FileActions(actions))
        }
    }

    fn dup2(&mut self, fd: RawFd, target: RawFd) -> io::Result<()> {
        // SAFETY: the actions object is initialised.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd, target) })
    }

    fn chdir(&mut self, dir: &CString) -> io::Result<()> {
        // SAFETY: the actions object is initialised; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    /// New session, empty signal mask, `SIGPIPE` at its default.
    fn session_leader() -> io::Result<Attributes> {
        // SAFETY: init fills the zeroed struct; the sigset calls fill zeroed
        // sets; destroy runs in Drop only after a successful init.
        unsafe {
            let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut attr))?;
            let mut attr = Attributes(attr);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut defaults);
            libc::sigaddset(&mut defaults, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &defaults))?;
            let flags = libc::POSIX_SPAWN_SETSID
                | (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut attr.0, flags))?;
            Ok(attr)
        }
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialised in `session_leader`.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// The environment a child gets: the host's (unless cleared), with the
/// changes applied in order.
pub(crate) fn child_env(clear: bool, changes: &[(OsString, Option<OsString>)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = if clear { Vec::new() } else { std::env::vars_os().collect() };
    for (key, value) in changes {
        env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            env.push((key.clone(), value.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn launch(program: &str, args: &[&str], env: Vec<(OsString, OsString)>) -> Launch {
        let mut argv = vec![OsString::from(program)];
        argv.extend(args.iter().map(OsString::from));
        Launch { program: program.into(), argv, env, cwd: None }
    }

    fn wait(pid: libc::pid_t) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    fn read_all(fd: OwnedFd) -> String {
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text).unwrap();
        text
    }

    /// The child leads a new session and group, sees exactly the
    /// environment given, runs in the directory given, has an empty signal
    /// mask and SIGPIPE at its default, and its stdio are the pipes.
    #[test]
    fn the_child_leads_its_own_session_with_the_environment_directory_and_pipes_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var_os("PATH").unwrap();
        let env = vec![("PATH".into(), path), ("ONLY".into(), "this".into())];
        // /proc/PID/stat: pid (comm) state ppid pgrp session … The signal
        // masks are read by the shell itself (builtin `read`): a shell
        // waiting for a child it forked blocks every signal meanwhile.
        let script = "echo ids=$(cut -d' ' -f1,5,6 /proc/$$/stat); \
                      echo env=$(env | grep -v '^PWD=\\|^OLDPWD=\\|^SHLVL=\\|^_=\\|^PATH=' | sort | tr '\\n' ' '); \
                      echo cwd=$(pwd); \
                      while read -r key value; do case $key in SigBlk:|SigIgn:) echo $key $value;; esac; done </proc/$$/status; \
                      read line; echo got=$line; echo to-stderr >&2";
        let mut l = launch("sh", &["-c", script], env);
        l.cwd = Some(dir.path().to_path_buf());
        let child = spawn_session_leader(&l).unwrap();
        std::io::Write::write_all(&mut std::fs::File::from(child.stdin), b"hello\n").unwrap();
        let out = read_all(child.stdout);
        let err = read_all(child.stderr);
        assert_eq!(wait(child.pid), 0);
        let pid = child.pid;
        assert!(out.contains(&format!("ids={pid} {pid} {pid}\n")), "pid, group and session: {out}");
        assert!(out.contains("env=ONLY=this\n"), "{out}");
        assert!(out.contains(&format!("cwd={}", dir.path().canonicalize().unwrap().display())), "{out}");
        assert!(out.contains("SigBlk: 0000000000000000"), "{out}");
        // SIGPIPE, ignored by Rust programs (this test's too), is back to its default.
        let ignored = out.lines().find_map(|l| l.strip_prefix("SigIgn: ")).expect("SigIgn");
        let ignored = u64::from_str_radix(ignored, 16).unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE is ignored in the child: {out}");
        assert!(out.contains("got=hello"), "{out}");
        assert_eq!(err, "to-stderr\n");
    }

    #[test]
    fn a_program_is_looked_up_in_the_childs_path_not_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        // A link to `echo`, not a script written here: a file this process
        // had open for writing while another test spawned a child could be
        // busy (ETXTBSY) when executed.
        let echo = ["/bin/echo", "/usr/bin/echo"].into_iter().find(|p| Path::new(p).exists()).expect("echo");
        std::os::unix::fs::symlink(echo, dir.path().join("only-here")).unwrap();
        let env =
            vec![("PATH".into(), format!("/nonexistent:{}:/bin:/usr/bin", dir.path().display()).into())];
        let child = spawn_session_leader(&launch("only-here", &["found"], env)).unwrap();
        assert_eq!(read_all(child.stdout), "found\n");
        assert_eq!(wait(child.pid), 0);
        // Not in this PATH: not found, as a spawn error.
        let err = spawn_session_leader(&launch("only-here", &[], vec![("PATH".into(), "/bin".into())]))
            .err()
            .expect("not found");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn bad_programs_and_directories_are_spawn_errors() {
        let env = child_env(false, &[]);
        let missing = spawn_session_leader(&launch("/nonexistent/agent", &[], env.clone())).err().unwrap();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{missing}");
        let not_executable = tempfile::NamedTempFile::new().unwrap();
        let path = not_executable.path().to_str().unwrap();
        let denied = spawn_session_leader(&launch(path, &[], env.clone())).err().unwrap();
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied, "{denied}");
        let mut in_missing_dir = launch("sh", &["-c", "true"], env.clone());
        in_missing_dir.cwd = Some("/nonexistent/dir".into());
        assert!(spawn_session_leader(&in_missing_dir).is_err());
        let nul = spawn_session_leader(&launch("sh", &["a\0b"], env)).err().unwrap();
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput, "{nul}");
    }

    #[test]
    fn environment_changes_apply_in_order_over_the_hosts() {
        let changes = vec![
            (OsString::from("DEPUTY_SPAWN_A"), Some(OsString::from("1"))),
            (OsString::from("DEPUTY_SPAWN_A"), Some(OsString::from("2"))),
            (OsString::from("DEPUTY_SPAWN_B"), Some(OsString::from("x"))),
            (OsString::from("DEPUTY_SPAWN_B"), None),
        ];
        let env = child_env(true, &changes);
        assert_eq!(env, vec![(OsString::from("DEPUTY_SPAWN_A"), OsString::from("2"))]);
        let inherited = child_env(false, &[(OsString::from("PATH"), None)]);
        assert!(!inherited.iter().any(|(k, _)| k == "PATH"));
        assert_eq!(inherited.len() + 1, std::env::vars_os().count());
    }
}
