//! Checks over everything every agent of the battery wrote: stdout purity,
//! the schema, begin/end pairing, one answer per request. They run last, on
//! the transcripts the scenarios left.

use std::collections::{HashMap, HashSet};

use deputy_protocol::methods;
use deputy_testkit::Direction;
use deputy_testkit::wire::excerpt;
use serde_json::Value;

use crate::runner::{Checked, Recorded, Verdict};
use crate::schema::Schemas;

/// The messages the agent wrote, in order (batch answers flattened).
fn from_agent(rec: &Recorded) -> Vec<Value> {
    let mut out = Vec::new();
    for e in &rec.transcript {
        if e.direction != Direction::FromAgent || e.problem.is_some() {
            continue;
        }
        match deputy_testkit::wire::parse_message_line(&e.bytes) {
            Ok(Value::Array(items)) => out.extend(items),
            Ok(v) => out.push(v),
            Err(_) => {}
        }
    }
    out
}

/// The requests the battery sent, id (as JSON text) → method.
fn sent_requests(rec: &Recorded) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for e in &rec.transcript {
        if e.direction != Direction::ToAgent {
            continue;
        }
        // A huge line (the oversized-line check's) is no request to answer.
        for line in e.bytes.split(|b| *b == b'\n').filter(|l| l.len() < 1 << 20) {
            let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            let Ok(v) = serde_json::from_slice::<Value>(line) else { continue };
            let items = match v {
                Value::Array(items) => items,
                v => vec![v],
            };
            for m in items {
                if let (Some(id), Some(method)) = (m.get("id"), m["method"].as_str()) {
                    out.insert(id.to_string(), method.to_owned());
                }
            }
        }
    }
    out
}

fn finish(problems: Vec<String>, total: usize, pass: String) -> Checked {
    if problems.is_empty() && total == 0 {
        return Ok(Verdict::Skip("nothing to audit: no agent of the battery wrote a message".into()));
    }
    if problems.is_empty() {
        return Ok(Verdict::Pass(pass));
    }
    let shown: Vec<&str> = problems.iter().take(3).map(String::as_str).collect();
    let more = if problems.len() > 3 { format!(" (and {} more)", problems.len() - 3) } else { String::new() };
    Err(format!("{} of {total}: {}{more}", problems.len(), shown.join("; ")).into())
}

/// Every stdout line is a JSON-RPC message (§1).
pub(crate) fn purity(recorded: &[Recorded]) -> Checked {
    let mut problems = Vec::new();
    let mut lines = 0;
    for rec in recorded {
        for e in rec.transcript.iter().filter(|e| e.direction == Direction::FromAgent) {
            lines += 1;
            if let Some(problem) = &e.problem {
                problems.push(format!("`{}` line {:?}: {problem}", rec.label, excerpt(&e.bytes, 60)));
            }
        }
    }
    finish(
        problems,
        lines,
        format!("{lines} lines from {} agents, every one a JSON-RPC message", recorded.len()),
    )
}

/// Every message validates against the schema of its method (params) or of
/// the request it answers (result).
pub(crate) fn schema(recorded: &[Recorded], schemas: &Schemas) -> Checked {
    let mut problems = Vec::new();
    let mut checked = 0;
    for rec in recorded {
        let sent = sent_requests(rec);
        for m in from_agent(rec) {
            let (kind, value) = match m["method"].as_str() {
                Some(methods::EVENT) => ("Event", m.get("params")),
                Some(methods::APPROVAL_EXEC) => ("ExecApprovalParams", m.get("params")),
                Some(methods::APPROVAL_PATCH) => ("PatchApprovalParams", m.get("params")),
                Some(methods::CANCEL_REQUEST) => ("CancelRequestParams", m.get("params")),
                Some(other) => {
                    problems.push(format!(
                        "`{}`: `{other}` is no agent-to-host method of protocol v1",
                        rec.label
                    ));
                    continue;
                }
                None => {
                    if m.get("error").is_some() {
                        continue; // the envelope check covers error objects
                    }
                    let method = sent.get(&m["id"].to_string()).map(String::as_str);
                    let kind = match method {
                        Some(methods::INITIALIZE) => "InitializeResult",
                        Some(methods::SESSION_START) => "SessionStartResult",
                        Some(methods::SUBMIT) => "SubmitResult",
                        _ => continue,
                    };
                    (kind, m.get("result"))
                }
            };
            checked += 1;
            let value = value.cloned().unwrap_or(Value::Null);
            let violations = schemas.violations(kind, &value);
            if !violations.is_empty() {
                problems.push(format!("`{}`: {kind}: {}", rec.label, violations.join(", ")));
            }
        }
    }
    if checked == 0 {
        return Ok(Verdict::Skip("no event, approval request, cancel or result came to validate".into()));
    }
    finish(problems, checked, format!("{checked} messages valid (events, approvals, cancels, results)"))
}

/// Each begin gets exactly one end with its call id, before its turn's end
/// event (§5).
pub(crate) fn pairing(recorded: &[Recorded]) -> Checked {
    let mut problems = Vec::new();
    let mut pairs = 0;
    for rec in recorded {
        // call id → (turn id, which end it waits for)
        let mut open: HashMap<String, (String, &'static str)> = HashMap::new();
        let mut closed: HashSet<String> = HashSet::new();
        for m in from_agent(rec) {
            if m["method"] != methods::EVENT {
                continue;
            }
            let msg = &m["params"]["msg"];
            let call = msg["call_id"].as_str().unwrap_or_default().to_owned();
            match msg["type"].as_str().unwrap_or_default() {
                kind @ ("exec_command_begin" | "patch_apply_begin") => {
                    let end =
                        if kind == "exec_command_begin" { "exec_command_end" } else { "patch_apply_end" };
                    if open
                        .insert(call.clone(), (msg["turn_id"].as_str().unwrap_or_default().to_owned(), end))
                        .is_some()
                        || closed.contains(&call)
                    {
                        problems.push(format!("`{}`: call {call:?} began twice", rec.label));
                    }
                }
                kind @ ("exec_command_end" | "patch_apply_end") => {
                    match open.remove(&call) {
                        Some((_, want)) if want == kind => {
                            pairs += 1;
                            closed.insert(call);
                        }
                        Some((_, want)) => problems
                            .push(format!("`{}`: call {call:?} ended with {kind}, not {want}", rec.label)),
                        None if closed.contains(&call) => {
                            problems.push(format!("`{}`: call {call:?} ended twice", rec.label))
                        }
                        None => problems
                            .push(format!("`{}`: {kind} for call {call:?} that never began", rec.label)),
                    }
                }
                "task_complete" | "turn_aborted" => {
                    let turn = msg["turn_id"].as_str().unwrap_or_default();
                    let unfinished: Vec<String> =
                        open.iter().filter(|(_, (t, _))| t == turn).map(|(c, _)| c.clone()).collect();
                    for c in unfinished {
                        problems.push(format!("`{}`: turn {turn:?} ended before call {c:?} did", rec.label));
                        open.remove(&c);
                    }
                }
                _ => {}
            }
        }
    }
    if recorded.iter().all(|r| from_agent(r).is_empty()) {
        return Ok(Verdict::Skip("nothing to audit: no agent of the battery wrote a message".into()));
    }
    if problems.is_empty() && pairs == 0 {
        return Ok(Verdict::Pass("no command or patch ran, so nothing to pair".into()));
    }
    finish(problems, pairs, format!("{pairs} begin/end pairs, each closed before its turn ended"))
}

/// No request answered twice; no answer to an id that was never sent (id
/// null aside: the answers to invalid lines).
pub(crate) fn answered_once(recorded: &[Recorded]) -> Checked {
    let mut problems = Vec::new();
    let mut answers = 0;
    for rec in recorded {
        let sent = sent_requests(rec);
        let mut seen: HashSet<String> = HashSet::new();
        for m in from_agent(rec) {
            if m.get("method").is_some() || m.get("id").is_none_or(Value::is_null) {
                continue;
            }
            answers += 1;
            let id = m["id"].to_string();
            if !sent.contains_key(&id) {
                problems.push(format!("`{}`: an answer to id {id}, which was never sent", rec.label));
            } else if !seen.insert(id.clone()) {
                problems.push(format!("`{}`: request {id} answered twice", rec.label));
            }
        }
    }
    finish(problems, answers, format!("{answers} answers, one per request"))
}
