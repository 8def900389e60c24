//! The real Claude Code CLI (`@anthropic-ai/claude-code@2.1.332`, the
//! native binary) in `-p` stream-json mode, driven through
//! `deputy_foreign::claude`, against the Anthropic Messages mock of
//! `tests/peers_support/mock.rs`: every line it writes must map to valid
//! Deputy events that keep Deputy's event contract, and the mapped
//! approvals must decide what really runs.
//!
//! The install (384 MB) is cached outside the checkout; see
//! `tests/peers_support`. `DEPUTY_SKIP_PEER_TESTS=1` skips these tests.

mod common;
mod peers_support;

use std::sync::Arc;

use deputy_foreign::Approval;
use deputy_foreign::claude::{ClaudeConfig, ClaudeSession, FileReader};
use deputy_protocol::{EventMsg, FileChange, ReviewDecision};
use peers_support::flows::{self, turn};
use peers_support::mock::{Api, EXEC_COMMAND, EXEC_OUTPUT, MESSAGE, ModelMock};
use peers_support::*;

struct Claude {
    drive: Drive,
    run: RunDir,
    session_id: String,
    _mock: ModelMock,
}

/// A fresh random UUID (the kernel's), for `--session-id`.
fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim().to_owned()
}

fn claude(policy: Policy) -> Claude {
    let run = RunDir::new();
    std::fs::write(run.work().join("notes.txt"), "old line\nsecond\n").unwrap();
    let mock = ModelMock::start(Api::Messages, &run.work());
    let session_id = uuid();
    let mut config = ClaudeConfig::new(run.work(), session_id.clone());
    config.read_file = Some(FileReader(Arc::new(|p: &std::path::Path| std::fs::read_to_string(p).ok())));
    let peer = Peer::spawn(claude_command(claude_bin(), &config.launch_args(), &run, mock.port));
    let mut drive = Drive::new(peer, Box::new(ClaudeSession::new(config)), policy);
    drive.until_event("session_configured");
    Claude { drive, run, session_id, _mock: mock }
}

#[test]
fn a_message_turn_maps_to_deputy_events_with_the_chosen_session_id() {
    if skip() {
        return;
    }
    let mut c = claude(never_answer());
    let EventMsg::SessionConfigured { session_id, model, cwd, .. } =
        c.drive.find("session_configured").clone()
    else {
        panic!()
    };
    assert_eq!((session_id, cwd), (c.session_id.clone(), c.run.work()));
    assert_eq!(model, "claude-opus-5-5");
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
    assert_eq!(deltas, MESSAGE, "partial messages stream as deltas");
    let EventMsg::TokenCount { info: Some(info) } = c.drive.find("token_count") else { panic!() };
    assert!(info.last_token_usage.output_tokens > 0, "{info:?}");
    // The CLI's own id is the one Deputy chose.
    assert!(
        c.drive.peer.lines.iter().any(|l| l.contains("\"subtype\":\"init\"") && l.contains(&c.session_id))
    );
    let status = c.drive.finish();
    assert!(status.success(), "claude exits 0 at end of input after a success: {status:?}");
    c.drive.validate();
}

#[test]
fn an_approved_command_runs_and_its_output_comes_as_its_exec_end() {
    if skip() {
        return;
    }
    let mut c = claude(always(ReviewDecision::Approved));
    let end = turn(&mut c.drive, "t1", "[scenario:exec] make a marker");
    assert!(matches!(end, EventMsg::TaskComplete { .. }), "{end:?}");
    let Approval::Exec(p) = c.drive.approvals()[0] else { panic!("{:?}", c.drive.approvals()) };
    assert_eq!(p.command, ["bash", "-c", EXEC_COMMAND], "the command string exactly");
    assert!(p.unsandboxed, "Claude's sandbox is off here");
    let EventMsg::ExecCommandEnd { exit_code, output, .. } = c.drive.find("exec_command_end") else {
        panic!()
    };
    assert_eq!((*exit_code, output.as_str()), (0, EXEC_OUTPUT));
    assert!(c.run.work().join("ran.txt").exists(), "the approved command ran");
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn a_denied_command_never_runs_and_the_turn_goes_on() {
    if skip() {
        return;
    }
    let mut c = claude(always(ReviewDecision::Denied));
    flows::denied_command(&mut c.drive, &c.run.work());
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn write_and_edit_approvals_show_the_change_and_applying_them_writes_the_files() {
    if skip() {
        return;
    }
    let mut c = claude(always(ReviewDecision::Approved));
    turn(&mut c.drive, "t1", "[scenario:patch] write hello.txt");
    let Approval::Patch(p) = c.drive.approvals()[0] else { panic!("{:?}", c.drive.approvals()) };
    assert_eq!(p.changes.get("hello.txt"), Some(&FileChange::add("hi from mock\n")));
    assert_eq!(std::fs::read_to_string(c.run.work().join("hello.txt")).unwrap(), "hi from mock\n");
    let EventMsg::PatchApplyEnd { success, .. } = c.drive.find("patch_apply_end") else { panic!() };
    assert!(*success);

    turn(&mut c.drive, "t2", "[scenario:edit] fix notes.txt");
    let approvals = c.drive.approvals();
    let Some(Approval::Patch(p)) = approvals.get(1) else {
        panic!("{}", c.drive.report("no second approval"))
    };
    assert_eq!(
        p.changes.get("notes.txt"),
        Some(&FileChange::update("@@ -1,2 +1,2 @@\n-old line\n+new line\n second\n", None)),
        "the diff, as Codex would show it"
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
    let mut c = claude(always(ReviewDecision::Approved));
    flows::interrupt_during_command(&mut c.drive, "claude");
    // Claude killed the command's tree itself (it may outlive `result` by a few ms).
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn an_interrupt_with_a_pending_approval_withdraws_it_and_nothing_runs() {
    if skip() {
        return;
    }
    let mut c = claude(never_answer());
    flows::interrupt_with_pending_approval(&mut c.drive, &c.run.work());
    c.drive.finish();
    c.drive.validate();
}

#[test]
fn the_pinned_binary_lives_in_the_cache_outside_the_checkout() {
    if skip() {
        return;
    }
    let bin = claude_bin();
    assert!(bin.starts_with(common::npm::cache_root()), "{}", bin.display());
    assert!(!bin.starts_with(common::repo_root()), "the npm cache must live outside the checkout");
    let version = std::process::Command::new(bin).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "2.1.332 (Claude Code)");
}
