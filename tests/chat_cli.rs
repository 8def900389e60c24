//! `deputy chat` driven through stdin: several turns, an interrupt, and EOF.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use predicates::str::contains;

#[test]
fn two_turns_then_end_of_input_ends_the_session_cleanly() {
    let home = tempfile::tempdir().unwrap();
    deputy(home.path())
        .args(["chat", "--approve", "exec"])
        .write_stdin("$ echo first turn\n\n$ echo second turn\n")
        .timeout(Duration::from_secs(30))
        .assert()
        .success()
        .stdout(contains("first turn"))
        .stdout(contains("second turn"))
        .stderr(contains("session"));
    // Both turns are in one session.
    deputy(home.path())
        .args(["sessions", "list", "--json"])
        .assert()
        .success()
        .stdout(predicates::function::function(|s: &str| s.lines().count() == 1));
}

#[test]
fn ctrl_c_interrupts_the_turn_and_the_session_goes_on() {
    let home = tempfile::tempdir().unwrap();
    let mut child = deputy_std(home.path())
        .args(["chat", "--approve", "exec"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    child.stdin.take().unwrap().write_all(b"$ sleep 30\n$ echo after the interrupt\n").unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "chat ended early");
        if line.contains("sleep 30") {
            break;
        }
    }
    // The command is announced just before it starts; give it a moment.
    assert!(wait_until(Duration::from_secs(5), || descendants(pid).len() >= 2));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "stdout: {rest}\nstderr: {stderr}");
    assert!(rest.contains("after the interrupt"), "stdout: {rest}\nstderr: {stderr}");
    assert!(stderr.contains("turn aborted (interrupted)"), "{stderr}");
}

#[test]
fn chat_help_has_examples() {
    let home = tempfile::tempdir().unwrap();
    deputy(home.path()).args(["chat", "--help"]).assert().success().stdout(contains("Examples:"));
}
