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

#[test]
fn the_embedding_example_runs_a_delegated_turn() {
    // Built by `cargo test` next to the test binaries' folder.
    let exe = common::deputy_bin().with_file_name("examples").join("embed");
    if !exe.is_file() {
        eprintln!("skipped: {} was not built", exe.display());
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(exe)
        .env("DEPUTY_BIN", common::deputy_bin())
        .env("DEPUTY_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("delegated"), "{stdout}");
    assert!(stdout.contains("TaskComplete"), "{stdout}");
}

#[test]
fn the_conversation_example_runs_two_turns_and_shuts_down() {
    let exe = common::deputy_bin().with_file_name("examples").join("conversation");
    if !exe.is_file() {
        eprintln!("skipped: {} was not built", exe.display());
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(exe)
        .env("DEPUTY_BIN", common::deputy_bin())
        .env("DEPUTY_HOME", home.path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in
        ["hello", "again", "turn-0: TaskComplete", "turn-1: TaskComplete", "the agent ended: Graceful"]
    {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
}

#[test]
fn readme_shows_the_testing_recipes_verbatim() {
    // Each recipe is a test file of this repository, so it is proven by
    // `cargo test`; the README must show exactly that file.
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    for recipe in
        ["tests/recipe_scripted_agent.rs", "tests/recipe_agent_under_test.rs", "tests/recipe_exec_json.rs"]
    {
        let code = std::fs::read_to_string(common::repo_root().join(recipe)).unwrap();
        let block = format!("```rust\n{code}```");
        assert!(readme.contains(&block), "README.md does not show {recipe} verbatim; paste it again");
    }
    assert!(readme.contains("deputy check -- deputy agent"), "the `deputy check` section");
}
