//! Testing an agent black-box: `deputy exec --json --agent '…'` runs one
//! turn against it and prints every event as a JSON line.

use serde_json::Value;

#[test]
fn the_agent_echoes_through_deputy_exec() {
    let deputy = option_env!("CARGO_BIN_EXE_deputy").unwrap_or("deputy");
    // The agent under test, as a command line: yours (e.g. "my-agent --stdio").
    let agent = format!("{deputy} agent");
    let home = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::new(deputy)
        .args(["exec", "--json", "--approve", "exec", "--agent", &agent, "$ echo hi"])
        .env("DEPUTY_HOME", home.path())
        .assert()
        .success();
    let events: Vec<Value> = String::from_utf8_lossy(&out.get_output().stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let end = events.iter().find(|e| e["msg"]["type"] == "exec_command_end").expect("the command ran");
    assert_eq!(end["msg"]["exit_code"], 0);
    assert_eq!(end["msg"]["output"], "hi\n");
    assert_eq!(events.last().unwrap()["msg"]["type"], "task_complete");
}
