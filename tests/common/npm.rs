//! npm packages the tests drive (the official ACP SDK), installed once per
//! machine into a cache outside the checkout: `$DEPUTY_TEST_CACHE/npm/…`,
//! else `~/.cache/deputy-tests/npm/…`, keyed by the pinned versions; later
//! runs reuse it without touching the network. Without node or npm the
//! tests fail saying so — unless `DEPUTY_SKIP_NODE_TESTS=1`, which skips
//! them (and says that too).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The official ACP SDK, pinned (`npm view @agentclientprotocol/sdk version`).
pub const SDK_VERSION: &str = "2.4.0";
/// Its peer dependency, pinned.
pub const ZOD_VERSION: &str = "4.6.7";

/// Whether the node tests are switched off (and says so).
pub fn skip_node_tests() -> bool {
    if std::env::var_os("DEPUTY_SKIP_NODE_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: DEPUTY_SKIP_NODE_TESTS=1, so the node tests did not run");
        return true;
    }
    false
}

/// `$DEPUTY_TEST_CACHE`, else `~/.cache/deputy-tests`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("DEPUTY_TEST_CACHE").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/deputy-tests"),
    }
}

fn tool_version(tool: &str) -> Result<String, String> {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(format!("`{tool} --version` failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!(
            "`{tool}` is not installed ({e}); the node tests need node and npm (apt-get install nodejs npm), \
             or set DEPUTY_SKIP_NODE_TESTS=1 to skip them"
        )),
    }
}

/// The SDK's install folder (`node_modules` inside), installed if missing.
pub fn acp_sdk() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tool_version("node").unwrap_or_else(|e| panic!("{e}"));
        let dir = cache_root().join("npm").join(format!("acp-sdk-{SDK_VERSION}-zod-{ZOD_VERSION}"));
        let marker = dir.join("node_modules/@agentclientprotocol/sdk/package.json");
        if let Ok(text) = std::fs::read_to_string(&marker) {
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            if v["version"] == SDK_VERSION {
                return dir;
            }
        }
        tool_version("npm").unwrap_or_else(|e| panic!("{e}"));
        // Installed next to its final place and renamed into it, so a
        // concurrent run never sees half an install.
        let parent = dir.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        let tmp = tempfile::tempdir_in(parent).unwrap();
        std::fs::write(tmp.path().join("package.json"), "{\"private\": true}\n").unwrap();
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--legacy-peer-deps"])
            .arg(format!("@agentclientprotocol/sdk@{SDK_VERSION}"))
            .arg(format!("zod@{ZOD_VERSION}"))
            .current_dir(tmp.path())
            .output()
            .expect("npm runs");
        assert!(
            out.status.success(),
            "npm install of @agentclientprotocol/sdk@{SDK_VERSION} into {} failed (is the npm registry \
             reachable?):\n{}\n{}",
            tmp.path().display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let staged = tmp.keep();
        if std::fs::rename(&staged, &dir).is_err() {
            // Another run won the race: use its install.
            let _ = std::fs::remove_dir_all(&staged);
        }
        assert!(marker.exists(), "the SDK is not at {} after npm install", marker.display());
        dir
    })
}

/// The SDK's ACP v1 entry file, for `ACP_SDK` of the fixtures.
pub fn acp_sdk_entry() -> PathBuf {
    acp_sdk().join("node_modules/@agentclientprotocol/sdk/dist/v1/stable/acp.js")
}
