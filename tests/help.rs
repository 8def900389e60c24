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
        &["check", "--help"],
        &["completions", "--help"],
    ] {
        common::deputy(home.path()).args(args).assert().success().stdout(contains("Examples:"));
    }
    // The exit statuses scripts rely on are documented where they look.
    for args in [&["exec", "--help"][..], &["chat", "--help"]] {
        common::deputy(home.path()).args(args).assert().stdout(
            contains("130")
                .and(contains("141"))
                .and(contains("4 "))
                .and(contains("5 "))
                .and(contains("--approve")),
        );
    }
    common::deputy(home.path()).args(["exec", "--help"]).assert().stdout(
        contains("124")
            .and(contains("the turn ended after an error event"))
            .and(contains("every command or patch the agent asked for was denied")),
    );
    common::deputy(home.path()).args(["--help"]).assert().stdout(
        contains("DEPUTY_HOME")
            .and(contains("DEPUTY_BIN"))
            .and(contains("NO_COLOR"))
            .and(contains("RUST_LOG")),
    );
}
