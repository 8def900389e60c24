//! Which processes an agent left behind.
//!
//! A process the agent (or one of its commands) started can leave the
//! agent's tree in two ways: its parent exits and it is re-parented (to init,
//! or to the nearest child subreaper), and it can `setsid()` out of the
//! agent's session and group. [`ProcessWatch`] catches it by three marks,
//! each read from `/proc` through [`deputy_proctree`]:
//!
//! 1. it is in the agent's session or process group (the driver starts the
//!    agent with `setsid()`, so both are the agent's pid);
//! 2. it was seen as a descendant of the agent by an earlier
//!    [`ProcessWatch::observe`] and still runs with the same command line
//!    (the command line guards against a reused pid);
//! 3. with [`ProcessWatch::adopting`] (the calling process is a child
//!    subreaper and runs one agent at a time): it is a child of the calling
//!    process other than the agent — an orphan re-parented to us, however
//!    it got away. This is the only mark a double-forked daemon cannot
//!    escape; `deputy check` uses it.
//!
//! And every descendant of a process found so.

use std::collections::HashMap;

use deputy_proctree::{Pid, ProcStat};

/// A process still running that the agent under test left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Its pid.
    pub pid: Pid,
    /// Its parent now.
    pub ppid: Pid,
    /// Its command line (arguments separated by spaces).
    pub cmdline: String,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} (parent {}): {}", self.pid, self.ppid, self.cmdline)
    }
}

/// The command line of a process, arguments joined by spaces (`None` if it
/// is gone or has none, like a zombie or a kernel thread).
pub fn cmdline(pid: Pid) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    Some(words.join(" "))
}

/// Tracks the processes of one agent (see the module docs).
#[derive(Debug)]
pub struct ProcessWatch {
    agent: Pid,
    own_session: bool,
    adopting: bool,
    seen: HashMap<Pid, String>,
}

impl ProcessWatch {
    /// Watches `agent`; `own_session`: it was started with `setsid()`.
    pub fn new(agent: Pid, own_session: bool) -> Self {
        ProcessWatch { agent, own_session, adopting: false, seen: HashMap::new() }
    }

    /// Also counts every child of the calling process other than the agent
    /// as the agent's (mark 3): only right when the calling process is a
    /// child subreaper ([`deputy_proctree::set_child_subreaper`]) and runs
    /// no other child meanwhile.
    pub fn adopting(mut self, adopting: bool) -> Self {
        self.adopting = adopting;
        self
    }

    /// Remembers the agent's descendants as they are now.
    pub fn observe(&mut self) {
        let procs = deputy_proctree::snapshot();
        self.observe_in(&procs);
    }

    fn observe_in(&mut self, procs: &[ProcStat]) {
        for pid in deputy_proctree::descendants(procs, self.agent, &[]) {
            if let std::collections::hash_map::Entry::Vacant(e) = self.seen.entry(pid)
                && let Some(cmd) = cmdline(pid)
            {
                e.insert(cmd);
            }
        }
    }

    /// The processes of the agent's that run now, the agent itself excluded.
    /// Meant for after the agent exited: then every one is a leftover.
    pub fn leftovers(&mut self) -> Vec<Leftover> {
        let procs = deputy_proctree::snapshot();
        self.observe_in(&procs);
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let live: Vec<&ProcStat> = procs.iter().filter(|p| !p.is_zombie()).collect();
        let mut roots: Vec<Pid> = Vec::new();
        for p in &live {
            if p.pid == self.agent || p.pid == me {
                continue;
            }
            let in_session = self.own_session && (p.session == self.agent || p.pgrp == self.agent);
            let seen_before = self.seen.get(&p.pid).is_some_and(|cmd| cmdline(p.pid).as_ref() == Some(cmd));
            let adopted = self.adopting && p.ppid == me;
            if in_session || seen_before || adopted || p.ppid == self.agent {
                roots.push(p.pid);
            }
        }
        let mut all = roots.clone();
        for root in roots {
            for d in deputy_proctree::descendants(&procs, root, &[]) {
                if !all.contains(&d) {
                    all.push(d);
                }
            }
        }
        let mut found: Vec<Leftover> = live
            .iter()
            .filter(|p| all.contains(&p.pid))
            .map(|p| Leftover {
                pid: p.pid,
                ppid: p.ppid,
                cmdline: cmdline(p.pid).unwrap_or_else(|| "?".into()),
            })
            .collect();
        found.sort_by_key(|l| l.pid);
        found
    }

    /// Kills the given processes (frozen first, then SIGKILLed, with their
    /// descendants) and, when adopting, reaps the ones that were our
    /// children.
    pub fn kill(&self, leftovers: &[Leftover]) {
        for l in leftovers {
            deputy_proctree::kill_tree(&deputy_proctree::Tree {
                root: l.pid,
                include_root: true,
                ..Default::default()
            });
        }
        if self.adopting {
            let agent = self.agent;
            deputy_proctree::reap_adopted(|pid| pid == agent, std::time::Duration::from_millis(200));
        }
    }
}
