//! `deputy check` against the real `deputy agent` (everything passes) and
//! against a proxy around the real agent that breaks exactly one rule
//! (`tests/broken_agent`): each broken rule is caught by the check made for
//! it, and only by the checks it really breaks.

mod broken_agent;
mod common;

use std::process::Command;

use serde_json::Value;

/// Every check of the Deputy battery, in the order it runs.
const ALL: &[&str] = &[
    "initialize",
    "version-negotiation",
    "initialize-first",
    "initialize-once",
    "session-start",
    "session-once",
    "submit-before-session",
    "framing-tolerance",
    "parse-error",
    "invalid-request",
    "unknown-method",
    "invalid-params",
    "unknown-notification",
    "batch",
    "oversized-line",
    "cancel-request-answered",
    "turn",
    "busy-reject",
    "interrupt",
    "interrupt-idle",
    "approvals-by-id",
    "approval-fail-closed",
    "approval-withdrawn",
    "shutdown",
    "eof",
    "sigterm",
    "no-process-left",
    "stdout-purity",
    "schema",
    "begin-end-pairing",
    "answered-once",
];

fn deputy() -> String {
    common::deputy_bin().to_string_lossy().into_owned()
}

/// `deputy check [extra] -- agent…`: (exit code, stdout).
fn check(extra: &[&str], agent: &[String]) -> (i32, String) {
    let out = Command::new(common::deputy_bin())
        .arg("check")
        .args(extra)
        .arg("--")
        .args(agent)
        .env_remove("RUST_LOG")
        .env_remove("DEPUTY_HOME")
        .output()
        .expect("run deputy check");
    let stdout = String::from_utf8(out.stdout).expect("the report is UTF-8");
    (out.status.code().unwrap_or(-1), stdout)
}

fn check_json(agent: &[String]) -> (i32, Value) {
    let (code, stdout) = check(&["--json"], agent);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stdout}"));
    (code, report)
}

fn deputy_agent() -> Vec<String> {
    vec![deputy(), "agent".into()]
}

/// The proxy breaking `rule` around the real agent (tests/broken_agent).
fn broken(rule: &str) -> Vec<String> {
    broken_agent::argv(rule, &deputy_agent())
}

fn with(report: &Value, outcome: &str) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == outcome)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn evidence<'a>(report: &'a Value, id: &str) -> &'a str {
    report["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()["evidence"].as_str().unwrap()
}

/// Exactly `failing` failed, nothing was skipped, and the exit status is 1.
fn assert_caught_by(rule: &str, failing: &[&str]) -> Value {
    let (code, report) = check_json(&broken(rule));
    let ids: Vec<&str> =
        report["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ALL, "the battery's checks");
    assert_eq!(with(&report, "fail"), failing, "--break {rule}: {report:#}");
    assert_eq!(with(&report, "skip"), Vec::<String>::new(), "--break {rule}: {report:#}");
    assert_eq!(code, 1, "a failure exits 1");
    assert_eq!(report["passed"], false);
    report
}

#[test]
fn deputy_agent_passes_every_check() {
    let (code, report) = check_json(&deputy_agent());
    assert_eq!(with(&report, "fail"), Vec::<String>::new(), "{report:#}");
    assert_eq!(with(&report, "skip"), Vec::<String>::new(), "{report:#}");
    assert_eq!(with(&report, "pass").len(), ALL.len());
    assert_eq!(code, 0);
    assert_eq!(report["passed"], true);
    assert_eq!(report["protocol"], "deputy");
    assert_eq!(report["summary"]["pass"], ALL.len());
    assert!(evidence(&report, "initialize").contains("protocol_version 1"));
    assert!(evidence(&report, "no-process-left").contains("setsid daemon"));
}

#[test]
fn the_relaying_proxy_itself_passes_every_check() {
    let (code, report) = check_json(&broken("none"));
    assert_eq!(with(&report, "fail"), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, 0);
}

#[test]
fn without_the_shell_model_the_command_checks_are_skipped_not_failed() {
    let (code, report) = check_json(&broken("hide-shell"));
    assert_eq!(with(&report, "fail"), Vec::<String>::new(), "{report:#}");
    assert_eq!(
        with(&report, "skip"),
        ["busy-reject", "interrupt", "approvals-by-id", "approval-fail-closed", "approval-withdrawn"]
    );
    assert!(evidence(&report, "interrupt").contains("does not offer the `shell` model"));
    // The generic parts still ran, without a turn.
    assert!(evidence(&report, "eof").starts_with("request before EOF answered, shutdown_complete"));
    assert_eq!(code, 0, "skipped checks do not fail the battery");
}

#[test]
fn a_log_line_on_stdout_fails_stdout_purity() {
    let report = assert_caught_by("stdout-log", &["stdout-purity"]);
    assert!(evidence(&report, "stdout-purity").contains("broken_agent: starting the agent"));
}

#[test]
fn a_wrong_code_for_malformed_json_fails_parse_error() {
    let report = assert_caught_by("parse-error-code", &["parse-error"]);
    assert!(evidence(&report, "parse-error").contains("expected error -32700, got error -32600"));
}

#[test]
fn a_wrong_protocol_version_fails_initialize_and_the_table_says_so() {
    let (code, table) = check(&[], &broken("wrong-version"));
    assert_eq!(code, 1);
    assert!(
        table.contains("CHECK ")
            && table.contains(" SECTION ")
            && table.contains(" RESULT ")
            && table.contains(" EVIDENCE"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("initialize ")).unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("§3 initialize") && row.contains("FAIL") && row.contains("protocol_version 2"),
        "{row}"
    );
    let failed: Vec<&str> = table.lines().filter(|l| l.contains(" FAIL ")).collect();
    assert_eq!(failed.len(), 1, "{table}");
    assert!(
        table.ends_with(&format!("{} checks: {} passed, 1 failed, 0 skipped\n", ALL.len(), ALL.len() - 1)),
        "{table}"
    );
}

#[test]
fn an_event_of_the_wrong_shape_fails_schema() {
    let report = assert_caught_by("bad-event", &["schema"]);
    assert!(evidence(&report, "schema").contains("duration_ms"), "{}", evidence(&report, "schema"));
}

#[test]
fn ignoring_interrupt_fails_interrupt_and_approval_withdrawal() {
    let report = assert_caught_by("ignore-interrupt", &["interrupt", "approval-withdrawn"]);
    assert!(evidence(&report, "interrupt").contains("within"), "{report:#}");
}

#[test]
fn running_a_command_whose_approval_failed_fails_fail_closed() {
    let report = assert_caught_by("run-after-error", &["approval-fail-closed"]);
    assert!(evidence(&report, "approval-fail-closed").starts_with("ran anyway: touch errored-"));
}

#[test]
fn answering_approvals_in_order_instead_of_by_id_fails_approvals_by_id() {
    let report = assert_caught_by("answer-in-order", &["approvals-by-id"]);
    assert!(evidence(&report, "approvals-by-id").contains("denied `touch first-"), "{report:#}");
}

#[test]
fn a_daemon_left_behind_fails_no_process_left_and_is_killed() {
    let report = assert_caught_by("leave-grandchild", &["no-process-left"]);
    assert!(evidence(&report, "no-process-left").contains("sleep 300.25"), "{report:#}");
    let left: Vec<_> = deputy_proctree::snapshot()
        .into_iter()
        .filter(|p| !p.is_zombie())
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| c == b"sleep\x00300.25\x00")
        })
        .collect();
    // The checker kills what it reports.
    assert!(left.is_empty(), "daemons still running: {left:?}");
}

#[test]
fn not_passing_end_of_input_on_fails_eof() {
    let report = assert_caught_by("eof-hang", &["eof"]);
    assert!(evidence(&report, "eof").contains("within 5000 ms"), "{report:#}");
}

#[test]
fn a_program_that_cannot_start_fails_cleanly() {
    let (code, report) = check_json(&["/nonexistent/agent".into()]);
    assert_eq!(code, 1);
    assert!(evidence(&report, "initialize").contains("cannot spawn `/nonexistent/agent`"), "{report:#}");
    assert_eq!(report["summary"]["pass"], 0, "nothing ran, so nothing passed: {report:#}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["check"][..],
        &["check", "--protocol", "klingon", "--", "x"],
        &["check", "--timeout", "soon", "--", "x"],
    ] {
        let out = Command::new(common::deputy_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Every check of the ACP battery, in the order it runs.
const ALL_ACP: &[&str] = &[
    "acp-initialize",
    "acp-version-negotiation",
    "acp-before-initialize",
    "acp-parse-error",
    "acp-invalid-request",
    "acp-unknown-method",
    "acp-session-new",
    "acp-unknown-session",
    "acp-prompt",
    "acp-permission-fail-closed",
    "acp-cancel",
    "acp-cancel-pending-permission",
    "acp-eof",
    "acp-shapes",
    "stdout-purity",
    "answered-once",
    "no-process-left",
];

fn acp_agent() -> Vec<String> {
    vec![deputy(), "agent".into(), "--protocol".into(), "acp".into()]
}

fn check_acp(agent: &[String]) -> (i32, Value) {
    let (code, stdout) = check(&["--protocol", "acp", "--json"], agent);
    let report: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stdout}"));
    let ids: Vec<&str> =
        report["checks"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ALL_ACP);
    assert_eq!(report["protocol"], "acp");
    (code, report)
}

#[test]
fn the_acp_face_passes_every_acp_check() {
    let (code, report) = check_acp(&acp_agent());
    assert_eq!(with(&report, "fail"), Vec::<String>::new(), "{report:#}");
    assert_eq!(with(&report, "skip"), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, 0);
    assert!(evidence(&report, "acp-cancel").contains("stopReason cancelled"));
}

#[test]
fn the_acp_battery_catches_a_log_line_and_a_wrong_parse_error_code() {
    let proxy = |rule| broken_agent::argv(rule, &acp_agent());
    let (code, report) = check_acp(&proxy("stdout-log"));
    assert_eq!(with(&report, "fail"), ["stdout-purity"], "{report:#}");
    assert_eq!(code, 1);
    let (code, report) = check_acp(&proxy("parse-error-code"));
    assert_eq!(with(&report, "fail"), ["acp-parse-error"], "{report:#}");
    assert_eq!(code, 1);
}

#[test]
fn a_deputy_protocol_agent_fails_the_acp_handshake() {
    let (code, report) = check_acp(&deputy_agent());
    assert_eq!(code, 1);
    let failed = with(&report, "fail");
    assert!(failed.contains(&"acp-initialize".to_owned()), "{report:#}");
}
