//! Helpers for the fixture-child tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deputy_host::{AgentCommand, ConversationConfig};
use deputy_protocol::SessionStartParams;

pub fn fixture_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent.py")
}

/// The real python3 (not a version-manager shim that would add a process and
/// tens of milliseconds to every spawn).
pub fn python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-S", "-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the fixture tests");
        let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        if path.is_empty() { PathBuf::from("python3") } else { PathBuf::from(path) }
    })
}

/// The fixture agent with these switches.
pub fn fixture(args: &[&str]) -> AgentCommand {
    let mut cmd = AgentCommand::new(python());
    cmd.arg("-S").arg(fixture_script()).args(args);
    cmd
}

pub fn config(dir: &Path) -> ConversationConfig {
    ConversationConfig::new(SessionStartParams::new(dir)).handshake_timeout(Duration::from_secs(10))
}

pub fn read_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Polls `f` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}

/// Whether `pid` is alive (a zombie counts as gone: it runs nothing).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// Live (non-zombie) processes whose process group or session is `id`.
pub fn tree_members(id: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 3 && f[0] != "Z" && (f[2] == id.to_string() || f[3] == id.to_string()) {
            found.push(pid);
        }
    }
    found
}

/// Asserts nothing of the agent's tree is left (group and session empty,
/// the agent itself reaped: not even a zombie).
/// Processes that were SIGKILLed may take a moment to die (another core has
/// to schedule them), hence the short poll.
pub fn assert_tree_gone(pid: u32) {
    let pid = pid as i32;
    let start = Instant::now();
    let mut members = tree_members(pid);
    while !members.is_empty() && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
        members = tree_members(pid);
    }
    assert!(members.is_empty(), "processes left in the agent's group/session {pid}: {members:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| !s.contains(&format!("PPid:\t{}", std::process::id()))),
        "agent {pid} not reaped (zombie child of the test)"
    );
}

/// Waits (up to 1 s) for a SIGKILLed process to be gone.
pub fn gone(pid: i32) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > Duration::from_secs(1) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// The next event, failing the test instead of hanging.
pub async fn next(conv: &mut deputy_host::Conversation) -> Option<deputy_protocol::Event> {
    tokio::time::timeout(Duration::from_secs(10), conv.next_event()).await.expect("no event within 10 s")
}

pub fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

pub async fn wait_for_file(path: &Path) {
    assert!(
        eventually(Duration::from_secs(5), || path.exists() && std::fs::metadata(path).unwrap().len() > 0)
            .await
    );
}
