//! `deputy chat` and `deputy exec` on a real pseudo-terminal, driven as a
//! person would (keys typed, the screen read) by `fixtures/pty_session.py`.
//! python3 is part of CI's machine, so a missing python3 fails these tests
//! rather than skipping them.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::{Value, json};

const QUESTION: &str = "a[b]ort: ";
const ENTER: &str = "\r";
const CTRL_C: &str = "\u{3}";
const CTRL_D: &str = "\u{4}";

fn expect(text: &str) -> Value {
    json!({ "expect": text })
}

fn send(keys: &str) -> Value {
    json!({ "send": keys })
}

fn exits(code: i32) -> Value {
    json!({ "exit": code, "timeout": 20 })
}

/// Runs `deputy ARGS` on a pty through the steps; panics with the transcript
/// if a step fails.
fn drive(home: &Path, steps: &[Value], args: &[&str]) -> String {
    let out: Output = std::process::Command::new("python3")
        .arg(repo_root().join("tests/fixtures/pty_session.py"))
        .arg(Value::Array(steps.to_vec()).to_string())
        .arg(deputy_bin())
        .args(args)
        .env("DEPUTY_HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("python3 runs the pty driver");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the pty session failed: {}\n--- screen ---\n{screen}",
        String::from_utf8_lossy(&out.stderr)
    );
    screen
}

fn chat_args(work: &Path) -> Vec<String> {
    vec!["chat".into(), "--cwd".into(), work.display().to_string()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn chat_approval_y_runs_the_command_and_ctrl_d_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let screen = drive(
        home.path(),
        &[
            expect("› "),
            send("$ touch yes.txt\r"),
            expect("allow `touch yes.txt`"),
            expect(QUESTION),
            send(&format!("y{ENTER}")),
            expect("exit 0"),
            expect("› "),
            send(CTRL_D),
            expect("resume it with"),
            exits(0),
        ],
        &strs(&chat_args(work.path())),
    );
    assert!(work.path().join("yes.txt").exists(), "{screen}");
    assert!(screen.contains("deputy exec --resume"), "{screen}");
}

#[test]
fn chat_approval_n_denies() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let screen = drive(
        home.path(),
        &[
            expect("› "),
            send("$ touch no.txt\r"),
            expect(QUESTION),
            send(&format!("n{ENTER}")),
            expect("denied"),
            expect("› "),
            send(CTRL_D),
            // The last turn asked for one command and it was denied.
            exits(5),
        ],
        &strs(&chat_args(work.path())),
    );
    assert!(!work.path().join("no.txt").exists(), "{screen}");
}

#[test]
fn chat_approval_a_is_not_asked_again_in_the_session() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let screen = drive(
        home.path(),
        &[
            expect("› "),
            send("$ touch always.txt\r"),
            expect(QUESTION),
            send(&format!("a{ENTER}")),
            expect("exit 0"),
            expect("› "),
            send("$ touch always.txt\r"),
            json!({ "expect": "exit 0", "forbid": QUESTION }),
            expect("› "),
            send(CTRL_D),
            exits(0),
        ],
        &strs(&chat_args(work.path())),
    );
    assert_eq!(screen.matches(QUESTION).count(), 1, "{screen}");
}

#[test]
fn chat_ctrl_c_interrupts_the_turn_and_the_next_turn_runs() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut args = chat_args(work.path());
    args.extend(["--approve".into(), "exec".into()]);
    let screen = drive(
        home.path(),
        &[
            expect("› "),
            send("$ sleep 30\r"),
            expect("$ sleep 30"),
            json!({ "quiet": 0.3 }),
            send(CTRL_C),
            // Printed by the command line itself, at once.
            json!({ "expect": "interrupting the turn", "timeout": 1.0 }),
            expect("turn aborted (interrupted)"),
            expect("› "),
            send("$ echo after the interrupt\r"),
            expect("after the interrupt"),
            expect("exit 0"),
            expect("› "),
            send(CTRL_D),
            exits(0),
        ],
        &strs(&args),
    );
    let sleep = &screen[screen.find("$ sleep 30").unwrap()..screen.find("turn aborted").unwrap()];
    assert!(!sleep.contains("✓ exit 0"), "sleep 30 must not run to its end: {screen}");
}

/// Ctrl-C typed while a question is open (the line editor reads in raw mode)
/// interrupts the turn like any Ctrl-C, and the session goes on.
#[test]
fn chat_ctrl_c_at_a_question_interrupts_the_turn() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let screen = drive(
        home.path(),
        &[
            expect("› "),
            send("$ touch never.txt\r"),
            expect(QUESTION),
            send(CTRL_C),
            json!({ "expect": "interrupting the turn", "timeout": 1.0 }),
            expect("turn aborted"),
            expect("› "),
            send(CTRL_D),
            exits(130),
        ],
        &strs(&chat_args(work.path())),
    );
    assert!(!work.path().join("never.txt").exists(), "{screen}");
}

/// In exec, Ctrl-C at the question cancels the run.
#[test]
fn exec_ctrl_c_at_the_question_exits_130() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().display().to_string();
    drive(
        home.path(),
        &[expect(QUESTION), send(CTRL_C), expect("interrupted; stopping the agent"), exits(130)],
        &["exec", "--cwd", &cwd, "$ touch never.txt"],
    );
    assert!(!work.path().join("never.txt").exists());
}

#[test]
fn chat_a_second_ctrl_c_within_a_second_ends_the_session() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An agent that ignores interrupts: only the cancel ladder ends it.
    let scenario =
        scenario(dir.path(), &[json!({"steps": [{"type": "message", "text": "stuck"}, {"type": "hang"}]})]);
    drive(
        home.path(),
        &[
            expect("› "),
            send("go\r"),
            expect("stuck"),
            send(CTRL_C),
            expect("interrupting the turn"),
            send(CTRL_C),
            expect("ending the session"),
            exits(130),
        ],
        &["chat", "--scenario", scenario.to_str().unwrap()],
    );
}

#[test]
fn exec_question_stays_on_screen_until_answered() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let sentinel = work.path().join("sentinel");
    let cwd = work.path().display().to_string();
    let prompt = format!("$ touch {}", sentinel.display());
    let screen = drive(
        home.path(),
        &[
            expect(QUESTION),
            // Nothing is drawn over the question: no spinner frame, no output.
            json!({ "quiet": 1.5, "forbid": "working" }),
            send(&format!("y{ENTER}")),
            expect("exit 0"),
            exits(0),
        ],
        &["exec", "--cwd", &cwd, &prompt],
    );
    assert!(sentinel.exists(), "{screen}");
    let after = &screen[screen.find(QUESTION).unwrap()..];
    assert!(after.starts_with(&format!("{QUESTION}y")), "the answer follows the question: {after:?}");
}

#[test]
fn exec_abort_answer_says_aborted_and_exits_3() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().display().to_string();
    let screen = drive(
        home.path(),
        &[
            expect(QUESTION),
            send(&format!("b{ENTER}")),
            expect("turn aborted (an approval was answered abort)"),
            exits(3),
        ],
        &["exec", "--cwd", &cwd, "$ touch x\n$ touch y\n"],
    );
    assert!(!screen.contains("(interrupted)"), "{screen}");
}

#[test]
fn exec_several_questions_never_share_a_line_with_output() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().display().to_string();
    let screen = drive(
        home.path(),
        &[
            expect(QUESTION),
            send(&format!("y{ENTER}")),
            expect("allow `echo two`"),
            expect(QUESTION),
            send(&format!("y{ENTER}")),
            expect("two"),
            exits(0),
        ],
        &["exec", "--cwd", &cwd, "$ echo one\n$ echo two\n"],
    );
    // Each question starts a line of its own: between the last newline and
    // the question there is at most the spinner, cleared (`\r ESC[2K`).
    assert_eq!(screen.matches("allow `").count(), 2, "{screen:?}");
    for (i, _) in screen.match_indices("allow `") {
        let line = &screen[screen[..i].rfind('\n').map_or(0, |n| n + 1)..i];
        let drawn = line.rsplit("\r\x1b[2K").next().unwrap();
        assert!(drawn.is_empty(), "a question shares a line with {drawn:?}: {screen:?}");
    }
}

#[test]
fn hostile_output_never_reaches_the_terminal_raw() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().display().to_string();
    let screen = drive(
        home.path(),
        &[expect("exit 0"), exits(0)],
        &[
            "exec",
            "--approve",
            "exec",
            "--cwd",
            &cwd,
            r#"$ sh -c "printf 'A\033]52;c;aGVsbG8=\007B\033]0;title\007C\033[2J\033[1AD\rE\010F'""#,
        ],
    );
    let raw = screen.replace("\r\n", "\n");
    assert!(!raw.contains("\x1b]"), "an OSC reached the terminal: {screen:?}");
    assert!(!raw.contains("\x1b[2J") && !raw.contains("\x1b[1A"), "{screen:?}");
    assert!(raw.contains("A␛]52;c;aGVsbG8=␇B␛]0;title␇C␛[2J␛[1AD␍E␈F"), "{screen:?}");
}

#[test]
fn a_hostile_argv_is_shown_exactly_in_the_question() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scenario = scenario(
        dir.path(),
        &[
            json!({"steps": [{"type": "exec", "command": ["touch", "X", "\r\u{1b}[2Kallow", "\u{202e}txt.sh"]}]}),
        ],
    );
    let screen = drive(
        home.path(),
        &[expect(QUESTION), send(&format!("n{ENTER}")), exits(5)],
        &["exec", "--scenario", scenario.to_str().unwrap(), "go"],
    );
    assert!(screen.contains(r"allow `touch X $'\r\e[2Kallow' $'\u202etxt.sh'`"), "{screen:?}");
    let question = &screen[screen.find("allow `").unwrap()..screen.find(QUESTION).unwrap()];
    assert!(!question.contains(['\u{202e}', '\x1b', '\r']), "{question:?}");
}
