//! npm packages the tests need, installed once per machine into a cache
//! outside the checkout: `$DEPUTY_TEST_CACHE/npm/<name>`, else
//! `~/.cache/deputy-tests/npm/<name>`, where `<name>` carries the pinned
//! versions. Later runs reuse it without touching the network.
//!
//! Concurrent test processes are safe: installers take an exclusive lock
//! (`<name>.lock` next to the folder, `flock`), install into a temporary
//! folder beside the final one and rename it into place, so a folder that
//! exists is a complete install.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The folder that holds the test downloads.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("DEPUTY_TEST_CACHE").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/deputy-tests"),
    }
}

/// The install folder of `name` (it may not exist yet).
pub fn install_dir(name: &str) -> PathBuf {
    cache_root().join("npm").join(name)
}

/// Whether the environment variable is set to `1`.
pub fn env_is_1(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// `tool --version`, or why it cannot run (naming the package to install).
pub fn tool_version(tool: &str) -> Result<String, String> {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(format!("`{tool} --version` failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!(
            "`{tool}` is not installed ({e}); these tests need node and npm (apt-get install nodejs npm)"
        )),
    }
}

/// Installs the npm `packages` (pinned specs, e.g. `@openai/codex@0.171.0`)
/// into [`install_dir`]`(name)` unless `marker` (a path relative to it)
/// already exists there, and returns the folder. `skip_hint` names the
/// environment switch that skips the tests, for the error message.
pub fn install(name: &str, packages: &[&str], marker: &str, skip_hint: &str) -> Result<PathBuf, String> {
    let dir = install_dir(name);
    if dir.join(marker).exists() {
        return Ok(dir);
    }
    tool_version("npm").map_err(|e| format!("{e}, or set {skip_hint}=1 to skip them"))?;
    let parent = dir.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let _lock = lock(&parent.join(format!("{name}.lock")))?;
    // Another process may have installed it while we waited for the lock.
    if dir.join(marker).exists() {
        return Ok(dir);
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot create a temporary folder in {}: {e}", parent.display()))?;
    std::fs::write(tmp.path().join("package.json"), "{\"private\": true}\n").unwrap();
    let started = Instant::now();
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--no-save", "--legacy-peer-deps"])
        .args(packages)
        .current_dir(tmp.path())
        .output()
        .map_err(|e| format!("npm did not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm install {} failed after {:.1} s (is the npm registry reachable? `npm config get registry` \
             says where it looks; set {skip_hint}=1 to skip these tests):\n{}\n{}",
            packages.join(" "),
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if !tmp.path().join(marker).exists() {
        return Err(format!(
            "npm install {} succeeded but {marker} is missing (an install script did not run?):\n{}",
            packages.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if dir.exists() {
        // A broken earlier install (no marker): replaced.
        std::fs::remove_dir_all(&dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
    }
    std::fs::rename(tmp.keep(), &dir)
        .map_err(|e| format!("cannot move the install to {}: {e}", dir.display()))?;
    eprintln!(
        "installed {} into {} in {:.1} s",
        packages.join(" "),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// An exclusive lock on `path` (created if missing), held until dropped.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", path.display()))
}
