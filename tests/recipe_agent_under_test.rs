//! Testing an agent: drive it line by line with `AgentUnderTest`.

use std::process::Command;

use deputy_protocol::{EventMsg, ReviewDecision, SessionStartParams};
use deputy_testkit::AgentUnderTest;

#[test]
fn the_agent_runs_an_approved_command_and_leaves_nothing_behind() -> Result<(), Box<dyn std::error::Error>> {
    // The agent under test: yours (e.g. env!("CARGO_BIN_EXE_my-agent")).
    let mut cmd = Command::new(option_env!("CARGO_BIN_EXE_deputy").unwrap_or("deputy"));
    cmd.arg("agent");
    let home = tempfile::tempdir()?;
    cmd.env("DEPUTY_HOME", home.path());
    let mut agent = AgentUnderTest::spawn(cmd)?;

    agent.initialize()?;
    let dir = tempfile::tempdir()?;
    agent.start_session(SessionStartParams::new(dir.path().canonicalize()?))?;
    let turn = agent.submit_text("$ echo hi")?;
    let approval = agent.expect_approval()?;
    assert_eq!(approval.command().unwrap(), ["echo", "hi"]);
    agent.answer_approval(&approval, ReviewDecision::Approved)?;
    let end = agent.expect_event(&turn, "exec_command_end")?;
    assert!(matches!(end.msg, EventMsg::ExecCommandEnd { exit_code: 0, ref output, .. } if output == "hi\n"));
    agent.expect_event(&turn, "task_complete")?;

    agent.shutdown()?;
    assert!(agent.wait_exit()?.success());
    agent.assert_no_process_left()?;
    assert!(agent.stdout_problems().is_empty(), "only protocol lines on stdout");
    Ok(())
}
