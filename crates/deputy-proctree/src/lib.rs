#![warn(missing_docs)]
//! Process trees by parent links: find every descendant of a process, freeze
//! and kill them all, become a child subreaper, reap adopted orphans.
//!
//! Process groups and sessions do not bound what a command leaves behind: a
//! grandchild can `setsid()` (a daemon, `setsid sleep 300 &`) and leave both.
//! What it cannot leave is its place in the tree while its parent lives, and,
//! once its parent exits, the kernel re-parents it to the nearest ancestor
//! that is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`), or to init. So:
//!
//! - a process that owns tools makes itself a subreaper
//!   ([`set_child_subreaper`]): every orphan of its tools stays its
//!   descendant, and [`kill_tree`] from itself finds them all;
//! - a supervisor that kills a tree from outside first *freezes* it
//!   (`SIGSTOP`, which a process cannot catch, so a stopped process can no
//!   longer fork), re-reading `/proc` until a round finds nothing new, and
//!   only then `SIGKILL`s everything it found. Killing top-down without the
//!   freeze would let a child forked in between re-parent away unseen.
//!
//! Limits: Linux `/proc` only (elsewhere [`snapshot`] is empty and only the
//! process-group kill in [`kill_tree`] applies); a process that a debugger
//! re-parents (ptrace) or that escapes into another PID namespace is not
//! followed; a process that exits between two reads is simply gone.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A process id.
pub type Pid = libc::pid_t;

/// The fields of `/proc/PID/stat` this crate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process id.
    pub pid: Pid,
    /// Its state letter (`R`, `S`, `D`, `T`, `Z`, …).
    pub state: u8,
    /// Its parent's pid.
    pub ppid: Pid,
    /// Its process group.
    pub pgrp: Pid,
    /// Its session.
    pub session: Pid,
}

impl ProcStat {
    /// Whether it has exited and waits to be reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == b'Z' || self.state == b'X'
    }
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may
/// itself contain `)` and spaces, so the fields are read after the *last*
/// `)`: state ppid pgrp session …
pub fn parse_stat(stat: &[u8]) -> Option<ProcStat> {
    let open = memchr::memchr(b'(', stat)?;
    let pid = std::str::from_utf8(&stat[..open]).ok()?.trim().parse().ok()?;
    let close = memchr::memrchr(b')', stat)?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(ProcStat { pid, state, ppid, pgrp, session })
}

/// Every process the kernel lists now (empty where there is no `/proc`).
pub fn snapshot() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut procs = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<Pid>().ok()) else { continue };
        if let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat"))
            && let Some(p) = parse_stat(&stat)
        {
            procs.push(p);
        }
    }
    procs
}

/// The descendants of `root` in `procs` by parent links (children first
/// level by level; `root` itself excluded). Subtrees rooted at a pid in
/// `exclude` are left out.
pub fn descendants(procs: &[ProcStat], root: Pid, exclude: &[Pid]) -> Vec<Pid> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    let mut seen: HashSet<Pid> = HashSet::from([root]);
    while let Some(parent) = frontier.pop() {
        for p in procs {
            if p.ppid == parent && !exclude.contains(&p.pid) && seen.insert(p.pid) {
                found.push(p.pid);
                frontier.push(p.pid);
            }
        }
    }
    found
}

/// What [`kill_tree`] kills.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Whose descendants (by parent links) are killed.
    pub root: Pid,
    /// Whether `root` itself is killed too.
    pub include_root: bool,
    /// Also every process of this session (e.g. the root's own session,
    /// for processes already re-parented away from it).
    pub session: Option<Pid>,
    /// Also every process of this group (signalled with `killpg` too, which
    /// works where `/proc` does not).
    pub group: Option<Pid>,
    /// Subtrees left alone (e.g. a tool that is still running).
    pub exclude: Vec<Pid>,
}

impl Tree {
    /// The descendants of `root`, not `root` itself.
    pub fn descendants_of(root: Pid) -> Self {
        Tree { root, ..Tree::default() }
    }

    /// `root` and its descendants, its session and its process group: a
    /// process started with `setsid()` and everything under it.
    pub fn session_leader(root: Pid) -> Self {
        Tree { root, include_root: true, session: Some(root), group: Some(root), exclude: Vec::new() }
    }

    fn select(&self, procs: &[ProcStat], me: Pid) -> Vec<Pid> {
        let mut pids = descendants(procs, self.root, &self.exclude);
        if self.include_root {
            pids.push(self.root);
        }
        for p in procs {
            let in_session = self.session == Some(p.session);
            let in_group = self.group == Some(p.pgrp);
            if (in_session || in_group) && !self.exclude.contains(&p.pid) {
                pids.push(p.pid);
            }
        }
        let live: HashSet<Pid> = procs.iter().filter(|p| !p.is_zombie()).map(|p| p.pid).collect();
        pids.retain(|pid| *pid != me && live.contains(pid));
        pids
    }
}

/// How many times [`kill_tree`] re-reads `/proc` while it still finds new
/// processes (a fork racing the freeze shows up in the next round).
const FREEZE_ROUNDS: usize = 16;

/// Freezes every process of `tree` (`SIGSTOP`, repeated over fresh reads of
/// `/proc` until a round finds nothing new), then `SIGKILL`s them all, and
/// `killpg`s the group if one is named. Never signals the calling process.
/// Returns how many processes were killed (the group kill not counted).
///
/// Cost: one read of `/proc` per round (about 2 ms with a few hundred
/// processes), usually two rounds.
pub fn kill_tree(tree: &Tree) -> usize {
    kill_tree_pids(tree).len()
}

/// [`kill_tree`], then waits (polling `/proc`, at most `within`) until every
/// process it killed is dead — a zombie or gone — so a caller that reports
/// "killed" next is telling the truth even on a loaded machine, where a
/// SIGKILLed process can take a while to be scheduled and die. Returns how
/// many processes were killed; a warning is logged if some were still
/// alive at the end of `within`.
pub fn kill_tree_and_wait(tree: &Tree, within: std::time::Duration) -> usize {
    let killed = kill_tree_pids(tree);
    let deadline = std::time::Instant::now() + within;
    let dead = |pid: &Pid| match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).is_none_or(|p| p.is_zombie()),
        Err(_) => true,
    };
    while !killed.iter().all(dead) {
        if std::time::Instant::now() >= deadline {
            tracing::warn!(root = tree.root, ?within, "killed processes were not dead in time");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    killed.len()
}

fn kill_tree_pids(tree: &Tree) -> Vec<Pid> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut frozen: Vec<Pid> = Vec::new();
    let mut seen: HashSet<Pid> = HashSet::new();
    for _ in 0..FREEZE_ROUNDS {
        let procs = snapshot();
        let new: Vec<Pid> = tree.select(&procs, me).into_iter().filter(|pid| seen.insert(*pid)).collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            // SAFETY: plain syscall; ESRCH (already gone) is fine.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            frozen.push(pid);
        }
    }
    for pid in &frozen {
        // SAFETY: as above. SIGKILL also ends a stopped process.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    if let Some(group) = tree.group
        && group > 0
        && group != me
    {
        // SAFETY: as above.
        unsafe { libc::killpg(group, libc::SIGKILL) };
    }
    if !frozen.is_empty() {
        tracing::debug!(root = tree.root, killed = frozen.len(), "killed a process tree");
    }
    frozen
}

/// Makes the calling process a child subreaper: orphaned descendants are
/// re-parented to it instead of to init, so they stay in its tree. It must
/// then reap them ([`reap_adopted`]). Linux only; elsewhere an error.
pub fn set_child_subreaper() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no child subreaper on this system"))
    }
}

/// The calling process's direct children (of all its threads), from
/// `/proc/self/task/*/children` — one small read per thread, far cheaper than
/// a [`snapshot`] — or from a snapshot where those files do not exist.
pub fn own_children() -> Vec<Pid> {
    let mut children = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                children.extend(text.split_ascii_whitespace().filter_map(|p| p.parse::<Pid>().ok()));
            }
        }
    }
    if !listed {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        children = snapshot().into_iter().filter(|p| p.ppid == me).map(|p| p.pid).collect();
    }
    children.sort_unstable();
    children.dedup();
    children
}

/// Reaps the calling process's zombie children that `is_own` does not claim
/// (children a runtime spawned and waits for itself, e.g. tokio's, must be
/// claimed, or their status would be stolen). For `within`, it keeps reaping
/// the children that are still dying (just killed). Returns how many it
/// reaped.
pub fn reap_adopted(is_own: impl Fn(Pid) -> bool, within: Duration) -> usize {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let start = Instant::now();
    let mut reaped = 0;
    loop {
        let children: Vec<ProcStat> =
            snapshot().into_iter().filter(|p| p.ppid == me && !is_own(p.pid)).collect();
        let mut dying = false;
        for child in children {
            if child.is_zombie() {
                let mut status = 0;
                // SAFETY: waitpid on one specific pid that is our zombie child.
                if unsafe { libc::waitpid(child.pid, &mut status, libc::WNOHANG) } == child.pid {
                    reaped += 1;
                }
            } else if child.state == b'T' || child.state == b't' {
                // Frozen and killed a moment ago: it is about to be a zombie.
                dying = true;
            }
        }
        if !dying || start.elapsed() >= within {
            return reaped;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// The reaper: runs `program` as a child and stays its parent, so that a
/// third-party agent — which is no subreaper — gets the same guarantee as
/// `deputy agent`: every process it (or its tools) leave behind, even in a
/// session of their own, stays a descendant of the reaper, and is killed
/// when the program exits. `deputy __reap PROGRAM ARGS…` calls this.
///
/// The child inherits stdin, stdout and stderr (the reaper never touches
/// them) and the environment. `SIGTERM`, `SIGINT` and `SIGHUP` sent to the
/// reaper are passed on to the child. When the child exits, its leftovers
/// are frozen, killed and reaped, and the reaper exits with the child's
/// status (128 + N for signal N). If the program cannot be started: a line
/// on stderr and exit 127. Meant for a process of its own: it blocks
/// signals and waits for any child.
pub fn run_reaper(program: &std::ffi::OsStr, args: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt as _;
    if let Err(e) = set_child_subreaper() {
        eprintln!("deputy reaper: cannot become a child subreaper: {e}");
    }
    // SAFETY: sigset operations on a local set; sigprocmask on this thread
    // (the reaper is single-threaded).
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut mask);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut mask, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec: the child
    // must not inherit the blocked signals.
    unsafe {
        cmd.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("deputy reaper: cannot run `{}`: {e}", program.to_string_lossy());
            return 127;
        }
    };
    let child_pid = child.id() as Pid;
    // The child is waited for with waitpid below, not through `child`.
    std::mem::forget(child);
    let mut status = None;
    while status.is_none() {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for one of the blocked signals.
        let sig = unsafe { libc::sigwaitinfo(&mask, &mut info) };
        match sig {
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP => {
                // SAFETY: plain syscall on our child.
                unsafe { libc::kill(child_pid, sig) };
            }
            _ => loop {
                let mut st = 0;
                // SAFETY: this process owns all its children: reap any.
                let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == child_pid {
                    status = Some(st);
                }
            },
        }
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    kill_tree(&Tree::descendants_of(me));
    reap_adopted(|_| false, Duration::from_millis(200));
    let st = status.unwrap_or(0);
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_after_the_last_paren() {
        let stat = b"4242 (weird) name) S 1 4242 4200 0 -1 4194560 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat { pid: 4242, state: b'S', ppid: 1, pgrp: 4242, session: 4200 })
        );
        assert!(parse_stat(b"1 (x) Z 0 1 1 0").unwrap().is_zombie());
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_stat(b"12 (x) S 1 2"), None);
    }

    #[test]
    fn descendants_follow_parent_links_and_skip_excluded_subtrees() {
        let p = |pid, ppid| ProcStat { pid, state: b'S', ppid, pgrp: pid, session: pid };
        let procs = [p(10, 1), p(11, 10), p(12, 11), p(13, 10), p(14, 13), p(20, 1)];
        let mut all = descendants(&procs, 10, &[]);
        all.sort_unstable();
        assert_eq!(all, vec![11, 12, 13, 14]);
        let mut some = descendants(&procs, 10, &[13]);
        some.sort_unstable();
        assert_eq!(some, vec![11, 12]);
        assert!(descendants(&procs, 99, &[]).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_listed_and_never_selected() {
        let me = std::process::id() as Pid;
        let procs = snapshot();
        assert!(procs.iter().any(|p| p.pid == me));
        // SAFETY: getsid has no preconditions.
        let sid = unsafe { libc::getsid(0) };
        let tree = Tree { root: me, include_root: true, session: Some(sid), ..Tree::default() };
        assert!(!tree.select(&procs, me).contains(&me));
    }
}
