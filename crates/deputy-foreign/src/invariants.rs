//! Deputy's event contract, checked on a mapped stream: what a host may
//! rely on whatever the dialect (PROTOCOL.md §3 `event`, §5 "Begin/end
//! pairing"). Used by this crate's tests and the real-program tests; a host
//! may use it in its own.

use std::collections::{HashMap, HashSet};

use deputy_protocol::EventMsg;

use crate::{Approval, Output};

/// Checks, in order:
/// - `session_configured` comes at most once, before every turn's events
///   (warnings may precede it);
/// - every `exec_command_begin` / `patch_apply_begin` has exactly one end
///   with the same `call_id`, after it and before its turn's end event; an
///   asked call's begin comes after its approval; output deltas come between
///   begin and end;
/// - every turn ends at most once, and nothing of it comes after its end;
/// - `shutdown_complete` is the last event.
///
/// Returns the first violation, described.
pub fn check(outputs: &[Output]) -> Result<(), String> {
    let mut configured = false;
    let mut turn_events = false;
    let mut asked: HashSet<String> = HashSet::new();
    // call id → (turn id, is exec)
    let mut open: HashMap<String, (String, bool)> = HashMap::new();
    let mut done_calls: HashSet<String> = HashSet::new();
    let mut ended_turns: HashSet<String> = HashSet::new();
    let mut shut_down = false;
    for (i, out) in outputs.iter().enumerate() {
        let at = |what: String| Err(format!("output {i}: {what} ({out:?})"));
        match out {
            Output::Approve(a) => {
                let call = match a {
                    Approval::Exec(p) => &p.call_id,
                    Approval::Patch(p) => &p.call_id,
                    Approval::Other(p) => &p.call_id,
                };
                asked.insert(call.clone());
            }
            Output::Event(e) => {
                if shut_down {
                    return at("an event after shutdown_complete".into());
                }
                let msg = &e.msg;
                match msg {
                    EventMsg::SessionConfigured { .. } => {
                        if configured {
                            return at("a second session_configured".into());
                        }
                        if turn_events {
                            return at("session_configured after a turn's events".into());
                        }
                        configured = true;
                    }
                    EventMsg::ShutdownComplete => shut_down = true,
                    // Warnings may come before the session is configured.
                    EventMsg::Warning { .. } | EventMsg::BackgroundEvent { .. } => {}
                    _ => turn_events = true,
                }
                let turn_of_call = match msg {
                    EventMsg::ExecCommandBegin { turn_id, .. }
                    | EventMsg::ExecCommandEnd { turn_id, .. }
                    | EventMsg::PatchApplyBegin { turn_id, .. }
                    | EventMsg::PatchApplyEnd { turn_id, .. } => Some(turn_id),
                    _ => None,
                };
                if let Some(t) = turn_of_call
                    && ended_turns.contains(t)
                {
                    return at(format!("a tool event of turn {t:?} after its end"));
                }
                match msg {
                    EventMsg::ExecCommandBegin { call_id, turn_id, .. }
                    | EventMsg::PatchApplyBegin { call_id, turn_id, .. } => {
                        let exec = matches!(msg, EventMsg::ExecCommandBegin { .. });
                        if open.contains_key(call_id) || done_calls.contains(call_id) {
                            return at(format!("a second begin for {call_id:?}"));
                        }
                        if let EventMsg::PatchApplyBegin { auto_approved: false, .. } = msg
                            && !asked.contains(call_id)
                        {
                            return at(format!("patch {call_id:?} not auto-approved but never asked"));
                        }
                        open.insert(call_id.clone(), (turn_id.clone(), exec));
                    }
                    EventMsg::ExecCommandEnd { call_id, .. } | EventMsg::PatchApplyEnd { call_id, .. } => {
                        let exec = matches!(msg, EventMsg::ExecCommandEnd { .. });
                        match open.remove(call_id) {
                            Some((_, e)) if e == exec => {
                                done_calls.insert(call_id.clone());
                            }
                            Some(_) => return at(format!("{call_id:?} ended as the other kind of tool")),
                            None => return at(format!("an end for {call_id:?} without its begin")),
                        }
                    }
                    EventMsg::ExecCommandOutputDelta { call_id, .. } if !open.contains_key(call_id) => {
                        return at(format!("output of {call_id:?} outside its begin and end"));
                    }
                    EventMsg::TaskComplete { turn_id, .. } | EventMsg::TurnAborted { turn_id, .. } => {
                        if let Some((call, _)) = open.iter().find(|(_, (t, _))| t == turn_id) {
                            return at(format!("turn {turn_id:?} ended with {call:?} still open"));
                        }
                        if !turn_id.is_empty() && !ended_turns.insert(turn_id.clone()) {
                            return at(format!("turn {turn_id:?} ended twice"));
                        }
                    }
                    _ => {}
                }
            }
            Output::Send(_) | Output::Withdrawn(_) | Output::CloseInput | Output::Failed(_) => {}
        }
    }
    if let Some((call, _)) = open.iter().next() {
        return Err(format!("{call:?} began and never ended"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use deputy_protocol::{Event, TurnAbortReason};

    use super::*;

    fn ev(msg: EventMsg) -> Output {
        Output::Event(Event { id: "s".into(), msg })
    }

    fn begin(call: &str) -> Output {
        ev(EventMsg::ExecCommandBegin {
            call_id: call.into(),
            turn_id: "t".into(),
            command: vec!["true".into()],
            cwd: "/".into(),
            unsandboxed: false,
        })
    }

    fn end(call: &str) -> Output {
        ev(EventMsg::ExecCommandEnd {
            call_id: call.into(),
            turn_id: "t".into(),
            exit_code: 0,
            duration_ms: 0,
            output: String::new(),
            truncated: false,
            timed_out: false,
            interrupted: false,
        })
    }

    fn done() -> Output {
        ev(EventMsg::TaskComplete { turn_id: "t".into(), last_agent_message: None })
    }

    #[test]
    fn a_well_formed_turn_passes_and_each_violation_is_named() {
        assert_eq!(check(&[begin("c"), end("c"), done()]), Ok(()));
        let bad = |outs: &[Output], why: &str| {
            let e = check(outs).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        bad(&[end("c")], "without its begin");
        bad(&[begin("c"), begin("c")], "a second begin");
        bad(&[begin("c"), done()], "still open");
        bad(&[begin("c")], "never ended");
        bad(&[begin("c"), end("c"), done(), done()], "ended twice");
        bad(&[begin("c"), end("c"), done(), begin("d")], "after its end");
        bad(
            &[
                ev(EventMsg::ShutdownComplete),
                ev(EventMsg::TurnAborted { turn_id: "t".into(), reason: TurnAbortReason::Shutdown }),
            ],
            "after shutdown_complete",
        );
    }
}
