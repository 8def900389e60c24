//! The Node.js example in examples/node-client, a use of the TypeScript
//! client package, run against the real `deputy agent`. The package is built
//! in a scratch copy of the repository (see `common::npm`) and linked into
//! the example's `node_modules` as `npm install` would; without node or npm
//! the test fails saying so, unless `DEPUTY_SKIP_NODE_TESTS=1`.

mod common;

use std::path::{Path, PathBuf};

use common::npm::{self, TsClientCopy};
use common::*;

/// The built package with the example next to it, laid out as in the repository.
fn example() -> (TsClientCopy, PathBuf) {
    let copy = TsClientCopy::new();
    copy.build();
    let dir = copy.root.path().join("examples/node-client");
    std::fs::create_dir_all(dir.join("node_modules")).unwrap();
    for file in ["client.mjs", "package.json"] {
        std::fs::copy(repo_root().join("examples/node-client").join(file), dir.join(file)).unwrap();
    }
    std::os::unix::fs::symlink(copy.package(), dir.join("node_modules/deputy-agent-client")).unwrap();
    let script = dir.join("client.mjs");
    (copy, script)
}

fn run_client(script: &Path, home: &Path, work: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(work)
        .env("DEPUTY_BIN", deputy_bin())
        .env("DEPUTY_HOME", home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn node_client_runs_a_turn_and_answers_approvals() {
    if npm::node_tests_skipped("Node.js example") {
        return;
    }
    let (_copy, script) = example();
    let lines =
        std::fs::read_to_string(repo_root().join("examples/node-client/client.mjs")).unwrap().lines().count();
    assert!(lines <= 40, "the example stays short: {lines} lines");
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = run_client(&script, home.path(), work.path(), &["$ echo hello from node"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("approval approval/exec"), "{stdout}");
    assert!(stdout.contains("hello from node"), "{stdout}");
    assert!(stdout.contains("event task_complete"), "{stdout}");
    assert!(stdout.contains("agent exited with 0"), "{stdout}");

    let out = run_client(&script, home.path(), work.path(), &["--deny", "$ touch sentinel"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("-> denied"), "{stdout}");
    assert!(!work.path().join("sentinel").exists());
}
