//! The dependency-free Node.js client in examples/node-client, run against the
//! real `deputy agent` when `node` is installed.

mod common;

use common::*;

fn node_available() -> bool {
    std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn run_client(home: &std::path::Path, work: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("node")
        .arg(repo_root().join("examples/node-client/client.mjs"))
        .args(args)
        .current_dir(work)
        .env("DEPUTY_BIN", deputy_bin())
        .env("DEPUTY_HOME", home)
        .output()
        .unwrap()
}

#[test]
fn node_client_runs_a_turn_and_answers_approvals() {
    if !node_available() {
        eprintln!("skipped: `node` is not installed, so the Node.js example was not run");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = run_client(home.path(), work.path(), &["$ echo hello from node"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("approval approval/exec"), "{stdout}");
    assert!(stdout.contains("hello from node"), "{stdout}");
    assert!(stdout.contains("event task_complete"), "{stdout}");
    assert!(stdout.contains("agent exited with 0"), "{stdout}");

    let out = run_client(home.path(), work.path(), &["--deny", "$ touch sentinel"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("-> denied"), "{stdout}");
    assert!(!work.path().join("sentinel").exists());
}
