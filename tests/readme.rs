//! The README's Rust example is `examples/embed.rs` verbatim (so it compiles
//! with every `cargo test`), and it runs against the real `deputy agent`.

mod common;

#[test]
fn readme_embeds_the_compiled_example_verbatim() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let example = std::fs::read_to_string(common::repo_root().join("examples/embed.rs")).unwrap();
    let block = format!("```rust,no_run\n{example}```");
    assert!(
        readme.contains(&block),
        "README.md's Rust example differs from examples/embed.rs; paste it again"
    );
}

/// Runs the example `name` (built by `cargo test` next to the test
/// binaries' folder) against the real `deputy agent`; its stdout once it
/// exited 0, or `None` if it was not built.
fn run_example(name: &str) -> Option<String> {
    let exe = common::deputy_bin().with_file_name("examples").join(name);
    if !exe.is_file() {
        eprintln!("skipped: {} was not built", exe.display());
        return None;
    }
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(exe)
        .env("DEPUTY_BIN", common::deputy_bin())
        .env("DEPUTY_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    Some(stdout)
}

#[test]
fn the_embedding_example_runs_a_delegated_turn() {
    let Some(stdout) = run_example("embed") else { return };
    assert!(stdout.contains("delegated"), "{stdout}");
    assert!(stdout.contains("TaskComplete"), "{stdout}");
}

#[test]
fn the_conversation_example_runs_two_turns_and_shuts_down() {
    let Some(stdout) = run_example("conversation") else { return };
    for needle in
        ["hello", "again", "turn-0: TaskComplete", "turn-1: TaskComplete", "the agent ended: Graceful"]
    {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
}
