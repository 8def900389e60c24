//! What the kernel knows about processes: peak and current memory, open
//! descriptors, children. Linux `/proc` only; elsewhere these return `None`.

/// A `kB` field of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Peak resident set size (high-water mark) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// Anonymous (heap, stacks: private) part of a process's current RSS, in KiB;
/// the rest is file-backed (the binary's and libraries' pages, shared, clean).
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon")
}

/// Current resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Open file descriptors of this process.
pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// `(pid, parent pid, session id)` of every process.
fn processes() -> Vec<(u32, u32, u32)> {
    deputy_proctree::snapshot().iter().map(|p| (p.pid as u32, p.ppid as u32, p.session as u32)).collect()
}

/// Pids of every process whose parent is `parent` (zombies included), or
/// whose session is one of `sessions`.
pub fn children_or_in_sessions(parent: u32, sessions: &[u32]) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&(_, ppid, sid)| ppid == parent || sessions.contains(&sid))
        .map(|(pid, ..)| pid)
        .collect()
}

/// Pids in session `session` other than its leader.
pub fn session_members(session: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|&(pid, _, sid)| sid == session && pid != session)
        .map(|(pid, ..)| pid)
        .collect()
}

/// True if a process with this pid exists (zombies count as existing).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// True if a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| deputy_proctree::parse_stat(&stat))
        .is_some_and(|p| !p.is_zombie())
}

/// CPU time (user + system) in seconds from a `/proc/.../stat` file:
/// fields 14 and 15, in clock ticks (100 per second on Linux).
fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU time a process has used so far (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU time the calling thread has used so far, in seconds.
pub fn thread_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds("/proc/thread-self/stat")
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_time_grows_with_work() {
        let before = super::thread_cpu_seconds().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = super::thread_cpu_seconds().unwrap();
        assert!(after > before, "{before} -> {after}");
        assert!(super::cpu_seconds(std::process::id()).unwrap() >= after - 0.011);
    }
}
