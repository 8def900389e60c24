//! The test flows every foreign agent goes through the same way (the
//! agent-specific checks stay in `tests/peer_*.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use deputy_protocol::{EventMsg, Op, ReviewDecision, TurnAbortReason};

use super::{Drive, all_gone, wait_for_processes};

/// Runs one turn with `prompt` to its end event.
pub fn turn(d: &mut Drive, id: &str, prompt: &str) -> EventMsg {
    let since = d.outs.len();
    d.submit(id, &Op::text(prompt)).unwrap();
    d.until_turn_end(since)
}

/// The `exec` scenario with a drive that denies: asked once, never run
/// (no events, no sentinel file in `work`), and the turn goes on.
pub fn denied_command(d: &mut Drive, work: &Path) {
    let end = turn(d, "t1", "[scenario:exec] make a marker");
    assert!(matches!(end, EventMsg::TaskComplete { .. }), "{end:?}");
    assert_eq!(d.approvals().len(), 1);
    assert!(!d.kinds().contains(&"exec_command_begin"), "a denied command has no events");
    assert!(!work.join("ran.txt").exists(), "the denied command ran");
}

/// The `sleep` scenario with a drive that approves, interrupted while
/// `sh -c 'sleep 30; echo done'` runs: `turn_aborted`, the command's end
/// (interrupted, 137) before it, and within 5 s no process of the command
/// left. Prints the times; the session must take another turn after.
pub fn interrupt_during_command(d: &mut Drive, agent: &str) {
    d.submit("t1", &Op::text("[scenario:sleep] wait")).unwrap();
    d.until_event("exec_command_begin");
    // The command's tree: sh and its sleep (a session of their own, under the agent).
    let command_tree = wait_for_processes(&mut d.peer, "sleep 30", 2);
    let since = d.outs.len();
    let asked = Instant::now();
    d.submit("i1", &Op::Interrupt).unwrap();
    let end = d.until_turn_end(since);
    let ended = asked.elapsed();
    assert!(matches!(end, EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. }), "{end:?}");
    let EventMsg::ExecCommandEnd { interrupted, exit_code, .. } = d.find("exec_command_end") else {
        unreachable!()
    };
    assert_eq!((*interrupted, *exit_code), (true, 137));
    let gone = all_gone(&command_tree, Duration::from_secs(5));
    let Some(gone) = gone else {
        panic!(
            "{}",
            d.report(&format!("alive 5 s after the interrupt: {:?} of {command_tree:?}", d.peer.survivors()))
        )
    };
    eprintln!(
        "{agent}: interrupt → turn_aborted {:.1} ms, → every process of the command gone {:.1} ms",
        ended.as_secs_f64() * 1000.0,
        (ended + gone).as_secs_f64() * 1000.0
    );
    let next = turn(d, "t2", "[scenario:message] still there?");
    assert!(matches!(next, EventMsg::TaskComplete { .. }), "the session goes on: {next:?}");
}

/// The `exec` scenario with a drive that never answers, interrupted while
/// the approval is pending: `turn_aborted`, the approval withdrawn, a late
/// answer dropped, and nothing ran (no events, no sentinel in `work`).
pub fn interrupt_with_pending_approval(d: &mut Drive, work: &Path) {
    d.submit("t1", &Op::text("[scenario:exec] make a marker")).unwrap();
    let asked = d.until_pending();
    let since = d.outs.len();
    d.submit("i1", &Op::Interrupt).unwrap();
    let end = d.until_turn_end(since);
    assert!(matches!(end, EventMsg::TurnAborted { reason: TurnAbortReason::Interrupted, .. }), "{end:?}");
    assert_eq!(d.withdrawn(), [asked.key()], "the approver is told");
    assert!(!d.answer(asked.key(), ReviewDecision::Approved), "a late answer is dropped");
    // Lower bound: nothing ran in the time a command would have needed.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!work.join("ran.txt").exists());
    assert!(!d.kinds().contains(&"exec_command_begin"));
}
