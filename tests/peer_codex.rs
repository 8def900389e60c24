//! The real Codex app-server (`@openai/codex@0.171.0`, the native binary)
//! driven through `deputy_foreign::codex`, against the OpenAI Responses
//! mock of `tests/peers_support/mock.rs`: every line it writes must map to
//! valid Deputy events that keep Deputy's event contract, and the mapped
//! approvals must decide what really runs.
//!
//! The install (424 MB) is cached outside the checkout; see
//! `tests/peers_support`. `DEPUTY_SKIP_PEER_TESTS=1` skips these tests.

mod common;
mod peers_support;

use deputy_foreign::codex::{CodexConfig, CodexSession};
use deputy_foreign::{Approval, Output};
use deputy_protocol::{EventMsg, FileChange, ReviewDecision};
use peers_support::flows::{self, turn};
use peers_support::mock::{Api, EXEC_COMMAND, EXEC_OUTPUT, MESSAGE, ModelMock};
use peers_support::*;

struct Codex {
    drive: Drive,
    run: RunDir,
    _mock: ModelMock,
}

fn codex(policy: Policy) -> Codex {
    let run = RunDir::new();
    std::fs::write(run.work().join("notes.txt"), "old line\nsecond\n").unwrap();
    let mock = ModelMock::start(Api::Responses, &run.work());
    let peer = Peer::spawn(codex_command(codex_bin(), &["app-server"], &run, mock.port));
    let session = CodexSession::new(CodexConfig::new(run.work()));
    let mut drive = Drive::new(peer, Box::new(session), policy);
    drive.until_event("session_configured");
    Codex { drive, run, _mock: mock }
}

/// Runs one turn with `prompt` to its end event.
#[test]
fn a_message_turn_maps_to_deputy_events() {
    if skip() {
        return;
    }
    let mut c = codex(never_answer());
    let EventMsg::SessionConfigured { model, cwd, .. } = c.drive.find("session_configured").clone() else {
        panic!()
    };
    assert_eq!((model.as_str(), cwd), ("gpt-5.5", c.run.work()));
    let end = turn(&mut c.drive, "t1", "[scenario:message] say hello");
    assert!(
        matches!(&end, EventMsg::TaskComplete { last_agent_message: Some(m), .. } if m == MESSAGE),
        "{end:?}"
    );
    let EventMsg::AgentMessage { message } = c.drive.find("agent_message") else { panic!() };
    assert_eq!(message, MESSAGE);
    let deltas: String = c
        .drive
        .events()
        .iter()
        .filter_map(|e| match &e.msg {
            EventMsg::AgentMessageDelta { delta } => Some(delta.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, MESSAGE, "the deltas add up to the message");
    let EventMsg::TokenCount { info: Some(info) } = c.drive.find("token_count") else { panic!() };
    assert_eq!(info.last_token_usage.total_tokens, 15, "the mock's usage");
    let status = c.drive.finish();
    assert!(status.success(), "codex exits 0 at end of input: {status:?}");
    c.drive.validate();
    assert!(c.drive.events().iter().filter(|e| e.msg.kind() == "task_complete").all(|e| e.id == "t1"));
}

#[test]
fn an_approved_command_runs_and_its_output_comes_as_its_exec_end() {
    if skip() {
        return;
    }
    let mut c = codex(always(ReviewDecision::Approved));
    let end = turn(&mut c.drive, "t1", "[scenario:exec] make a marker");
    assert!(matches!(end, EventMsg::TaskComplete { .. }), "{end:?}");
    let Approval::Exec(p) = c.drive.approvals()[0] else { panic!("{:?}", c.drive.approvals()) };
    assert_eq!(p.command, ["/bin/bash", "-lc", EXEC_COMMAND], "the argv as Codex runs it");
    assert_eq!(p.cwd, c.run.work());
    assert!(p.reason.as_deref().is_some_and(|r| r.contains("mock wants to run")), "{:?}", p.reason);
    let EventMsg::ExecCommandEnd { exit_code, output, .. } = c.drive.find("exec_command_end") else {
        panic!()
    };
    assert_eq!(*exit_code, 0);
    assert!(output.contains(EXEC_OUTPUT), "{output:?}");
    assert!(c.run.work().join("ran.txt").exists(), "the approved command ran");
    let EventMsg::TaskComplete { last_agent_message: Some(m), .. } = end else { panic!() };
    assert!(m.contains(EXEC_OUTPUT), "the model saw the output: {m}");
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn a_denied_command_never_runs_and_the_turn_goes_on() {
    if skip() {
        return;
    }
    let mut c = codex(always(ReviewDecision::Denied));
    flows::denied_command(&mut c.drive, &c.run.work());
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn patch_approvals_show_the_changes_and_applying_them_writes_the_files() {
    if skip() {
        return;
    }
    let mut c = codex(always(ReviewDecision::Approved));
    turn(&mut c.drive, "t1", "[scenario:patch] write hello.txt");
    let Approval::Patch(p) = c.drive.approvals()[0] else { panic!() };
    assert_eq!(p.changes.get("hello.txt"), Some(&FileChange::add("hi from mock\n")));
    assert!(p.outside_workspace.is_empty());
    assert_eq!(std::fs::read_to_string(c.run.work().join("hello.txt")).unwrap(), "hi from mock\n");
    let EventMsg::PatchApplyEnd { success, .. } = c.drive.find("patch_apply_end") else { panic!() };
    assert!(*success);

    turn(&mut c.drive, "t2", "[scenario:edit] fix notes.txt");
    let Approval::Patch(p) = c.drive.approvals()[1] else { panic!() };
    assert_eq!(
        p.changes.get("notes.txt"),
        Some(&FileChange::update("@@ -1,2 +1,2 @@\n-old line\n+new line\n second\n", None))
    );
    assert_eq!(std::fs::read_to_string(c.run.work().join("notes.txt")).unwrap(), "new line\nsecond\n");
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn an_interrupt_during_a_command_aborts_the_turn_and_no_process_of_it_is_left() {
    if skip() {
        return;
    }
    let mut c = codex(always(ReviewDecision::Approved));
    flows::interrupt_during_command(&mut c.drive, "codex");
    // Codex keeps an interrupted command running; the mapper's clean ended it.
    let clean = c
        .drive
        .outs
        .iter()
        .any(|o| matches!(o, Output::Send(l) if l.contains("thread/backgroundTerminals/clean")));
    assert!(clean, "{}", c.drive.report("no clean was sent"));
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn an_interrupt_with_a_pending_approval_withdraws_it_and_nothing_runs() {
    if skip() {
        return;
    }
    let mut c = codex(never_answer());
    flows::interrupt_with_pending_approval(&mut c.drive, &c.run.work());
    c.drive.finish();
    c.drive.validate();
}

/// The installs are reused from the cache outside the checkout, and are the
/// pinned versions (codex-acp too: the ACP dialect's third-party agent).
#[test]
fn the_pinned_binaries_live_in_the_cache_outside_the_checkout() {
    if skip() {
        return;
    }
    for bin in [codex_bin(), codex_acp_bin()] {
        assert!(bin.starts_with(common::npm::cache_root()), "{}", bin.display());
        assert!(!bin.starts_with(common::repo_root()), "the npm cache must live outside the checkout");
        assert!(bin.is_file());
    }
    let version = std::process::Command::new(codex_bin()).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "codex-cli 0.171.0");
}
