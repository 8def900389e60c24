//! Each foreign agent's **own** behaviour when it is stopped while a command
//! runs — the baseline Deputy's cancel ladder is measured against
//! (docs/peers-cancel.md has the figures). Not part of the suite (each run
//! takes up to 30 s, and they measure, they do not decide):
//!
//! ```text
//! cargo test --test peer_cancel -- --ignored --nocapture --test-threads 1
//! ```
//!
//! For every agent and action: the agent runs `sh -c 'sleep 30; echo done'`
//! (approved), the test takes the agent's whole process tree, acts (closes
//! stdin, or signals the agent's process group), then polls every 2 ms for
//! the agent's exit and for the end of every process of that tree. A
//! process still alive at the end of the wait is a survivor (killed by the
//! test afterwards). `PEER_CANCEL_RUNS` sets the runs per case (default 5;
//! the 30 s case runs at most 3 times).

mod common;
mod peers_support;

use std::time::{Duration, Instant};

use deputy_foreign::claude::{ClaudeConfig, ClaudeSession};
use deputy_foreign::codex::{CodexConfig, CodexSession};
use deputy_protocol::{Op, ReviewDecision};
use peers_support::mock::{Api, ModelMock};
use peers_support::*;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Eof,
    Term,
    Kill,
}

struct Sample {
    exit: Option<(Duration, String)>,
    gone: Option<Duration>,
    survivors: Vec<String>,
}

/// Acts on a peer whose command runs, and watches.
fn measure(peer: &mut Peer, action: Action, wait: Duration) -> Sample {
    let tree = peer.tree();
    let start = Instant::now();
    match action {
        Action::Eof => peer.close_stdin(),
        Action::Term => peer.signal_group(libc::SIGTERM),
        Action::Kill => peer.signal_group(libc::SIGKILL),
    }
    let mut exit = None;
    let mut gone = None;
    while start.elapsed() < wait && (exit.is_none() || gone.is_none()) {
        if exit.is_none()
            && let Some(st) = peer.child.try_wait().unwrap()
        {
            let how = match (st.code(), std::os::unix::process::ExitStatusExt::signal(&st)) {
                (Some(c), _) => format!("rc {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "?".into(),
            };
            exit = Some((start.elapsed(), how));
        }
        if gone.is_none() && tree.iter().all(|p| !common::alive(*p)) {
            gone = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let survivors =
        tree.iter().filter(|p| common::alive(**p)).map(|p| format!("{p} {}", cmdline(*p))).collect();
    Sample { exit, gone, survivors }
}

fn runs(action: Action, slow: bool) -> usize {
    let n = std::env::var("PEER_CANCEL_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    if slow && action == Action::Eof { n.min(3) } else { n }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(agent: &str, action: Action, samples: &[Sample]) {
    let range = |v: Vec<f64>| -> String {
        if v.is_empty() {
            return "never".into();
        }
        let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        if hi >= 1000.0 {
            format!("{:.2}–{:.2} s", lo / 1000.0, hi / 1000.0)
        } else {
            format!("{lo:.1}–{hi:.1} ms")
        }
    };
    let exits: Vec<f64> = samples.iter().filter_map(|s| s.exit.as_ref().map(|e| ms(e.0))).collect();
    let how: Vec<&str> = samples.iter().filter_map(|s| s.exit.as_ref().map(|e| e.1.as_str())).collect();
    let mut how = how.clone();
    how.dedup();
    let gone: Vec<f64> = samples.iter().filter_map(|s| s.gone.map(ms)).collect();
    let never = samples.iter().filter(|s| s.gone.is_none()).count();
    let survivors: Vec<&String> = samples.iter().flat_map(|s| &s.survivors).collect();
    println!(
        "| {agent} | {action:?} | {} ({}) | {}{} | {} |",
        range(exits),
        how.join(", "),
        range(gone),
        if never > 0 { format!(" ({never} of {} runs: not all gone)", samples.len()) } else { String::new() },
        if survivors.is_empty() { "none".to_owned() } else { format!("{survivors:?}") },
    );
}

fn codex_running() -> (Drive, RunDir, ModelMock) {
    let run = RunDir::new();
    let mock = ModelMock::start(Api::Responses, &run.work());
    let peer = Peer::spawn(codex_command(codex_bin(), &["app-server"], &run, mock.port));
    let mut drive = Drive::new(
        peer,
        Box::new(CodexSession::new(CodexConfig::new(run.work()))),
        always(ReviewDecision::Approved),
    );
    drive.until_event("session_configured");
    drive.submit("t1", &Op::text("[scenario:sleep] wait")).unwrap();
    drive.until_event("exec_command_begin");
    wait_for_processes(&mut drive.peer, "sleep 30", 2);
    (drive, run, mock)
}

fn claude_running() -> (Drive, RunDir, ModelMock) {
    let run = RunDir::new();
    let mock = ModelMock::start(Api::Messages, &run.work());
    let config = ClaudeConfig::new(
        run.work(),
        std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim(),
    );
    let peer = Peer::spawn(claude_command(claude_bin(), &config.launch_args(), &run, mock.port));
    let mut drive = Drive::new(peer, Box::new(ClaudeSession::new(config)), always(ReviewDecision::Approved));
    drive.until_event("session_configured");
    drive.submit("t1", &Op::text("[scenario:sleep] wait")).unwrap();
    drive.until_event("exec_command_begin");
    wait_for_processes(&mut drive.peer, "sleep 30", 2);
    (drive, run, mock)
}

/// codex-acp with the command running, driven by raw ACP lines.
fn codex_acp_running() -> (Peer, RunDir, ModelMock) {
    let run = RunDir::new();
    let mock = ModelMock::start(Api::Responses, &run.work());
    let mut peer = Peer::spawn(codex_command(codex_acp_bin(), &[], &run, mock.port));
    let next = |peer: &mut Peer, want: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            match peer.next_line(deadline.saturating_duration_since(Instant::now())) {
                Next::Line(l) => {
                    let v: Value = serde_json::from_str(&l).unwrap();
                    if v["method"] == "session/request_permission" {
                        peer.send(
                            &json!({"jsonrpc": "2.0", "id": v["id"], "result": {"outcome": {"outcome": "selected", "optionId": "approved"}}})
                                .to_string(),
                        );
                    }
                    if want(&v) {
                        return v;
                    }
                }
                other => panic!("codex-acp: {other:?}; stderr: {}", peer.stderr_tail()),
            }
        }
    };
    peer.send(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1,
        "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false},
        "clientInfo": {"name": "deputy", "version": "0.1.0"}}})
        .to_string(),
    );
    next(&mut peer, &|v| v["id"] == 1);
    peer.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": run.work(), "mcpServers": []}}).to_string());
    let session = next(&mut peer, &|v| v["id"] == 2)["result"]["sessionId"].clone();
    peer.send(
        &json!({"jsonrpc": "2.0", "id": 3, "method": "session/prompt", "params": {"sessionId": session,
        "prompt": [{"type": "text", "text": "[scenario:sleep] wait"}]}})
        .to_string(),
    );
    next(&mut peer, &|v| v["method"] == "session/request_permission");
    wait_for_processes(&mut peer, "sleep 30", 2);
    (peer, run, mock)
}

#[test]
#[ignore = "measures; run by hand (see the module docs)"]
fn codex_app_server_on_its_own() {
    for action in [Action::Eof, Action::Term, Action::Kill] {
        let samples: Vec<Sample> = (0..runs(action, false))
            .map(|_| {
                let (mut d, _run, _mock) = codex_running();
                measure(&mut d.peer, action, Duration::from_secs(5))
            })
            .collect();
        report("codex app-server 0.171.0", action, &samples);
    }
}

#[test]
#[ignore = "measures; run by hand (see the module docs)"]
fn claude_code_on_its_own() {
    for action in [Action::Eof, Action::Term, Action::Kill] {
        let wait = if action == Action::Eof { Duration::from_secs(40) } else { Duration::from_secs(5) };
        let samples: Vec<Sample> = (0..runs(action, true))
            .map(|_| {
                // (Its stdout is read on a thread into memory all along: a
                // full pipe does not stall it.)
                let (mut d, _run, _mock) = claude_running();
                measure(&mut d.peer, action, wait)
            })
            .collect();
        report("Claude Code 2.1.332", action, &samples);
    }
}

#[test]
#[ignore = "measures; run by hand (see the module docs)"]
fn codex_acp_on_its_own() {
    for action in [Action::Eof, Action::Term, Action::Kill] {
        let wait = if action == Action::Eof { Duration::from_secs(10) } else { Duration::from_secs(5) };
        let samples: Vec<Sample> = (0..runs(action, false))
            .map(|_| {
                let (mut peer, _run, _mock) = codex_acp_running();
                measure(&mut peer, action, wait)
            })
            .collect();
        report("codex-acp 0.16.0", action, &samples);
    }
}
