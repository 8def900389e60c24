//! Node.js and npm for the tests that run JavaScript (the ACP SDK client,
//! the TypeScript client, the Node example): the explicit skip switch, the
//! tools' presence, npm installs cached outside the checkout, and the
//! TypeScript client package built in a scratch copy of the repository.
//!
//! Installs go to `$DEPUTY_TEST_CACHE/npm/KEY` (default
//! `~/.cache/deputy-tests/npm/KEY`), made next to their final place and
//! renamed into it, so a concurrent run never sees half an install and a
//! second run needs no network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use super::repo_root;

/// `DEPUTY_SKIP_NODE_TESTS=1` skips the tests that need node and npm, and
/// says so; without it they fail when the tools are missing.
pub fn node_tests_skipped(what: &str) -> bool {
    if std::env::var_os("DEPUTY_SKIP_NODE_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: DEPUTY_SKIP_NODE_TESTS=1, so the {what} did not run");
        return true;
    }
    false
}

/// `TOOL --version`, or why it cannot be run.
pub fn tool_version(tool: &str) -> Result<String, String> {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(format!("`{tool} --version` failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!(
            "`{tool}` is not installed ({e}); these tests need node and npm (apt-get install nodejs npm), \
             or set DEPUTY_SKIP_NODE_TESTS=1 to skip them"
        )),
    }
}

/// Panics with a clear message unless `node` and `npm` run.
pub fn require_node_and_npm() {
    for tool in ["node", "npm"] {
        tool_version(tool).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The folder of the npm caches, outside the checkout.
pub fn npm_cache_root() -> PathBuf {
    let base = match std::env::var_os("DEPUTY_TEST_CACHE").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/deputy-tests"),
    };
    base.join("npm")
}

fn show(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An npm install cached under `npm_cache_root()/key`: if `ready(dir)` says
/// it is there, it is reused; else `prepare(dir)` writes the manifest into
/// a staging folder, `npm ARGS…` runs there, and the folder is renamed into
/// place. A failing npm (no registry, say) fails the test saying so.
pub fn npm_install_cached(
    key: &str,
    prepare: impl FnOnce(&Path),
    npm_args: &[&str],
    ready: impl Fn(&Path) -> bool,
) -> PathBuf {
    let dir = npm_cache_root().join(key);
    if ready(&dir) {
        return dir;
    }
    require_node_and_npm();
    let parent = dir.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let staging = tempfile::tempdir_in(parent).unwrap();
    prepare(staging.path());
    let out = Command::new("npm")
        .args(npm_args)
        .args(["--no-audit", "--no-fund"])
        .current_dir(staging.path())
        .output()
        .expect("npm runs");
    assert!(
        out.status.success(),
        "`npm {}` in {} failed (is the npm registry reachable? DEPUTY_SKIP_NODE_TESTS=1 skips these tests):\n{}",
        npm_args.join(" "),
        staging.path().display(),
        show(&out)
    );
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        // Another run won the race: use its install.
        let _ = std::fs::remove_dir_all(&staged);
    }
    assert!(ready(&dir), "{} is not complete after npm {}", dir.display(), npm_args.join(" "));
    dir
}

/// The TypeScript client's folder in the repository.
pub const TS_CLIENT: &str = "clients/typescript";

/// The TypeScript client's pinned dev dependencies (TypeScript, Node's
/// types), installed with `npm ci` from its lock file; the cache key is the
/// lock file's hash, so a change to the pins installs afresh.
pub fn ts_client_dev_dependencies() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let package = repo_root().join(TS_CLIENT);
        let lock = std::fs::read(package.join("package-lock.json")).unwrap();
        // FNV-1a: stable across Rust versions (a cache key, not security).
        let hash = lock
            .iter()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        npm_install_cached(
            &format!("typescript-client-{hash:016x}"),
            |staging| {
                for file in ["package.json", "package-lock.json"] {
                    std::fs::copy(package.join(file), staging.join(file)).unwrap();
                }
            },
            &["ci", "--ignore-scripts"],
            |dir| {
                dir.join("node_modules/typescript/package.json").is_file()
                    && dir.join("node_modules/@types/node").is_dir()
            },
        )
    })
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A scratch copy of the parts of the repository the client's build reads
/// (`clients/typescript`, without build output, and `schema/typescript`),
/// with the cached dev dependencies linked in: nothing is written to the
/// checkout. Its root is laid out like the repository's.
pub struct TsClientCopy {
    pub root: tempfile::TempDir,
}

impl TsClientCopy {
    pub fn new() -> TsClientCopy {
        let deps = ts_client_dev_dependencies();
        let root = tempfile::tempdir().unwrap();
        let package = root.path().join(TS_CLIENT);
        copy_tree(&repo_root().join(TS_CLIENT), &package, &["node_modules", "dist", "build", "protocol.ts"]);
        copy_tree(&repo_root().join("schema/typescript"), &root.path().join("schema/typescript"), &[]);
        std::os::unix::fs::symlink(deps.join("node_modules"), package.join("node_modules")).unwrap();
        TsClientCopy { root }
    }

    /// The package's folder in the copy.
    pub fn package(&self) -> PathBuf {
        self.root.path().join(TS_CLIENT)
    }

    /// `npm run SCRIPT` in the package (npm puts its `node_modules/.bin` first on `PATH`).
    pub fn npm_run(&self, script: &str, env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new("npm");
        cmd.args(["run", "--silent", script]).current_dir(self.package());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("npm runs")
    }

    /// `npm run build`: the package's `dist/` (ESM + `.d.ts`), or a panic with tsc's errors.
    pub fn build(&self) {
        let out = self.npm_run("build", &[]);
        assert!(out.status.success(), "`npm run build` of the TypeScript client failed:\n{}", show(&out));
    }
}

/// The output of a command, for assertion messages.
pub fn output_text(out: &Output) -> String {
    show(out)
}

/// The official ACP SDK, pinned (`npm view @agentclientprotocol/sdk version`).
pub const SDK_VERSION: &str = "2.4.0";
/// Its peer dependency, pinned.
pub const ZOD_VERSION: &str = "4.6.7";

/// Whether the node tests are switched off (and says so).
pub fn skip_node_tests() -> bool {
    node_tests_skipped("node tests")
}

/// `$DEPUTY_TEST_CACHE`, else `~/.cache/deputy-tests` (the npm caches are under `npm/`).
pub fn cache_root() -> PathBuf {
    npm_cache_root().parent().expect("npm/ has a parent").to_path_buf()
}

/// The official ACP SDK's install folder (`node_modules` inside), installed if missing.
pub fn acp_sdk() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tool_version("node").unwrap_or_else(|e| panic!("{e}"));
        let installed = |dir: &Path| {
            let marker = dir.join("node_modules/@agentclientprotocol/sdk/package.json");
            std::fs::read_to_string(marker)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|v| v["version"] == SDK_VERSION)
        };
        npm_install_cached(
            &format!("acp-sdk-{SDK_VERSION}-zod-{ZOD_VERSION}"),
            |staging| std::fs::write(staging.join("package.json"), "{\"private\": true}\n").unwrap(),
            &[
                "install",
                "--legacy-peer-deps",
                &format!("@agentclientprotocol/sdk@{SDK_VERSION}"),
                &format!("zod@{ZOD_VERSION}"),
            ],
            installed,
        )
    })
}

/// The SDK's ACP v1 entry file, for `ACP_SDK` of the fixtures.
pub fn acp_sdk_entry() -> PathBuf {
    acp_sdk().join("node_modules/@agentclientprotocol/sdk/dist/v1/stable/acp.js")
}

// ---------------------------------------------------------------------------
// Large peer installs (Codex, Claude Code, codex-acp): one process installs,
// the others wait on a lock file.

/// The install folder of `name` (it may not exist yet).
pub fn install_dir(name: &str) -> PathBuf {
    cache_root().join("npm").join(name)
}

/// Whether the environment variable is set to `1`.
pub fn env_is_1(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
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
