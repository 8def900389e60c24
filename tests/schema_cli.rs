//! `deputy schema`: writes the schema folder, and `--check` fails naming every
//! stale file.

use std::path::Path;

use assert_cmd::Command;
use predicates::str::contains;

fn deputy() -> Command {
    Command::cargo_bin("deputy").unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn check_passes_on_the_checked_in_schema() {
    deputy()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["schema", "--check"])
        .assert()
        .success()
        .stderr(contains("up to date"));
}

#[test]
fn check_names_changed_missing_and_extra_files() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schema"), &schema);
    deputy().args(["schema", "--check", "--out"]).arg(&schema).assert().success();

    // A protocol type changing shows up as a generated file differing from disk.
    let event = schema.join("json/Event.json");
    let text = std::fs::read_to_string(&event).unwrap().replace("task_complete", "task_done");
    std::fs::write(&event, text).unwrap();
    std::fs::remove_file(schema.join("json/SubmitResult.json")).unwrap();
    std::fs::write(schema.join("json/Old.json"), "{}").unwrap();

    deputy()
        .args(["schema", "--check", "--out"])
        .arg(&schema)
        .assert()
        .code(1)
        .stderr(contains("json/Event.json (differs)"))
        .stderr(contains("json/SubmitResult.json (missing)"))
        .stderr(contains("json/Old.json (not generated"));

    // Regenerating fixes the changed and missing files; the extra one is named until removed.
    deputy().args(["schema", "--out"]).arg(&schema).assert().success();
    std::fs::remove_file(schema.join("json/Old.json")).unwrap();
    deputy().args(["schema", "--check", "--out"]).arg(&schema).assert().success();
}

#[test]
fn check_on_a_missing_folder_fails_naming_every_file() {
    let dir = tempfile::tempdir().unwrap();
    deputy()
        .args(["schema", "--check", "--out"])
        .arg(dir.path().join("nope"))
        .assert()
        .code(1)
        .stderr(contains("typescript/deputy-protocol.ts (missing)"));
}
