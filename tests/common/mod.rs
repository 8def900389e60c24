//! Helpers shared by the end-to-end tests of the `deputy` binary.
#![allow(dead_code)]

pub mod conversation;
pub mod npm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The `deputy` binary under test.
pub fn deputy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deputy"))
}

/// A `deputy` command with a private home and a clean logging environment.
pub fn deputy(home: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(deputy_bin());
    cmd.env("DEPUTY_HOME", home).env_remove("RUST_LOG").env_remove("DEPUTY_BIN").env("NO_COLOR", "1");
    cmd
}

/// The same, as a std Command (for tests that signal the process).
pub fn deputy_std(home: &Path) -> Command {
    let mut cmd = Command::new(deputy_bin());
    cmd.env("DEPUTY_HOME", home).env_remove("RUST_LOG").env_remove("DEPUTY_BIN").env("NO_COLOR", "1");
    cmd
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A validator for one of the generated schemas in `schema/json/`.
pub fn schema_validator(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_root().join(format!("schema/json/{name}.json"))).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

/// (pid, ppid, session id) of every process (zombies included).
fn processes() -> Vec<(u32, u32, u32)> {
    deputy_proctree::snapshot().iter().map(|p| (p.pid as u32, p.ppid as u32, p.session as u32)).collect()
}

/// Every live descendant of `root`, following parent links and the sessions
/// the descendants lead (the agent runs in a session of its own).
pub fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut found: Vec<u32> = vec![root];
    let mut changed = true;
    while changed {
        changed = false;
        for &(pid, ppid, sid) in &all {
            if !found.contains(&pid)
                && (found.contains(&ppid) || (sid != 0 && found.contains(&sid) && sid != root))
            {
                found.push(pid);
                changed = true;
            }
        }
    }
    found.retain(|&p| p != root);
    found
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).is_some_and(|state| state != 'Z')
        }
        Err(_) => false,
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Writes a scenario file for the `script` model: one turn per entry.
pub fn scenario(dir: &Path, turns: &[serde_json::Value]) -> PathBuf {
    let path = dir.join("scenario.jsonl");
    let text: String = turns.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}
