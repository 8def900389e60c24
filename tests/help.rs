//! Every command's `--help` is complete: it has examples.

mod common;

use predicates::prelude::PredicateBooleanExt;
use predicates::str::contains;

#[test]
fn every_command_has_help_with_examples() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["exec", "--help"],
        &["chat", "--help"],
        &["sessions", "--help"],
        &["sessions", "list", "--help"],
        &["sessions", "show", "--help"],
        &["agent", "--help"],
        &["schema", "--help"],
    ] {
        common::deputy(home.path()).args(args).assert().success().stdout(contains("Examples:"));
    }
    common::deputy(home.path())
        .args(["exec", "--help"])
        .assert()
        .stdout(contains("124").and(contains("130")).and(contains("--approve")));
}
