//! Testing a host: a scripted fake agent instead of a real one.
//! (`deputy-testkit` runs it from this test executable; no binary needed.)

use std::sync::Arc;

use deputy_host::{CancellationToken, ConversationConfig, DenyAll, OneShot};
use deputy_protocol::{EventMsg, InputItem, SessionStartParams};
use deputy_testkit::ScriptedAgent;

/// A Rust host (here `deputy-host`'s `OneShot` with a deny-all approver).
#[tokio::test]
async fn a_denied_command_never_runs() {
    let agent = ScriptedAgent::new().message("hi").exec(["touch", "nope"]).message("bye");
    let dir = tempfile::tempdir().unwrap();
    let session = SessionStartParams::new(dir.path().canonicalize().unwrap());
    let mut turn = OneShot::run(
        agent.agent_command(),
        ConversationConfig::new(session),
        Arc::new(DenyAll),
        vec![InputItem::Text { text: "go".into() }],
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut messages = Vec::new();
    while let Some(event) = turn.next_event().await {
        assert!(!matches!(event.msg, EventMsg::ExecCommandBegin { .. }), "it ran");
        if let EventMsg::AgentMessage { message } = event.msg {
            messages.push(message);
        }
    }
    assert_eq!(messages, ["hi", "bye"]);
    assert!(!dir.path().join("nope").exists());
}

/// A host CLI (here `deputy exec`) with assert_cmd: the fake agent as its
/// `--agent` command line.
#[test]
fn the_cli_times_out_an_agent_that_waits_forever() {
    let agent = ScriptedAgent::new().message("hi").exec(["ls"]).wait_for_interrupt();
    let dir = tempfile::tempdir().unwrap();
    let host = option_env!("CARGO_BIN_EXE_deputy").unwrap_or("deputy");
    assert_cmd::Command::new(host)
        .args(["exec", "--json", "--approve", "exec", "--timeout", "1s"])
        .arg("--agent")
        .arg(agent.command_line())
        .arg("go")
        .current_dir(dir.path())
        .assert()
        .code(124)
        .stdout(predicates::str::contains(r#""type":"exec_command_end""#));
}
