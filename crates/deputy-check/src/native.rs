//! The battery for Deputy's own protocol (PROTOCOL.md §1–§5).

use std::time::{Duration, Instant};

use deputy_protocol::error_codes as codes;
use deputy_protocol::{ModelSelection, Op, ReviewDecision, SessionStartParams, methods};
use deputy_testkit::{ApprovalRequest, is_event_of};
use serde_json::{Value, json};

use crate::audit;
use crate::runner::{
    Checked, Doing as _, Failure, NOT_JSON, Run, Runner, Spec, Verdict, describe_answer, error_code, exists,
    gone_within, ms, want_error,
};

/// How long an interrupted turn may take to end (PROTOCOL.md aims at 50 ms).
pub(crate) const INTERRUPT_BOUND: Duration = Duration::from_secs(2);
/// How long an agent may take to exit after `shutdown`, end of input or
/// SIGTERM (PROTOCOL.md: about a second).
pub(crate) const EXIT_BOUND: Duration = Duration::from_secs(5);
/// How long the battery waits to see that something does not happen.
const QUIET: Duration = Duration::from_millis(200);

macro_rules! spec {
    ($name:ident, $id:literal, $section:literal, $what:literal) => {
        pub(crate) const $name: Spec = Spec { id: $id, section: $section, what: $what };
    };
}

spec!(
    INITIALIZE,
    "initialize",
    "§3 initialize",
    "`initialize` with protocol_version 1 is answered with an InitializeResult of version 1"
);
spec!(
    VERSION,
    "version-negotiation",
    "§3 initialize",
    "an unsupported protocol_version is answered -32004 with data.supported"
);
spec!(INIT_FIRST, "initialize-first", "§2 item 1", "requests before `initialize` are answered -32002");
spec!(INIT_ONCE, "initialize-once", "§2 item 1", "a second `initialize` is answered -32003");
spec!(
    SESSION_START,
    "session-start",
    "§2 item 2",
    "`session_configured` comes before the `session/start` answer, with the same session id"
);
spec!(SESSION_ONCE, "session-once", "§2 item 2", "a second `session/start` is answered -32011");
spec!(NO_SESSION, "submit-before-session", "§3 submit", "`submit` before `session/start` is answered -32010");
spec!(
    FRAMING,
    "framing-tolerance",
    "§1",
    "a byte-order mark at the start, empty lines and CRLF line ends are accepted"
);
spec!(
    PARSE_ERROR,
    "parse-error",
    "§1, §4",
    "a line that is not JSON, or not UTF-8, is answered -32700 with id null"
);
spec!(
    INVALID_REQUEST,
    "invalid-request",
    "§1 message kinds, §4",
    "JSON that is not a JSON-RPC message (and an empty batch) is answered -32600 with id null"
);
spec!(
    UNKNOWN_METHOD,
    "unknown-method",
    "§1, §4",
    "an unknown method is answered -32601, integer and string ids echoed exactly"
);
spec!(
    INVALID_PARAMS,
    "invalid-params",
    "§3, §4",
    "params that do not decode (a relative or numeric cwd, an unknown op) are answered -32602"
);
spec!(
    UNKNOWN_NOTIFICATION,
    "unknown-notification",
    "§4",
    "an unknown notification is ignored: no answer, later requests still answered"
);
spec!(BATCH, "batch", "§1", "a batch of requests is answered with one array holding every answer");
spec!(
    OVERSIZED,
    "oversized-line",
    "§1",
    "a line longer than capabilities.max_line_bytes is answered -32600 (id null) and the next line is served"
);
spec!(
    CANCEL_ANSWERED,
    "cancel-request-answered",
    "§1 flow control",
    "`$/cancelRequest` sent as a request (with an id) is answered null"
);
spec!(
    TURN,
    "turn",
    "§2 items 3-4",
    "a user_input gets its {id}, `task_started`, then exactly one end event, all with its submission id"
);
spec!(
    BUSY,
    "busy-reject",
    "§2 item 4",
    "a user_input while a turn runs is answered -32014 (on_busy: reject)"
);
spec!(
    INTERRUPT,
    "interrupt",
    "§2 item 5",
    "`interrupt` kills the running command (exec_command_end interrupted) and ends the turn with turn_aborted/interrupted promptly"
);
spec!(INTERRUPT_IDLE, "interrupt-idle", "§2 item 5", "`interrupt` with no turn running writes no event");
spec!(
    APPROVALS_BY_ID,
    "approvals-by-id",
    "§3 approval/*, §5",
    "two approvals outstanding at once are answered by request id, in reverse order: each decision applies to its own command"
);
spec!(
    FAIL_CLOSED,
    "approval-fail-closed",
    "§3 approval/*",
    "an approval answered with a JSON-RPC error, or with a result that does not decode, counts as denied: nothing runs"
);
spec!(
    WITHDRAWN,
    "approval-withdrawn",
    "§2 item 5, §3 $/cancelRequest",
    "an interrupt withdraws the pending approval with $/cancelRequest; the command never runs"
);
spec!(
    SHUTDOWN,
    "shutdown",
    "§2 item 6",
    "`shutdown` aborts the turn, writes shutdown_complete with its id, answers later submits -32015, exits 0"
);
spec!(
    EOF,
    "eof",
    "§1, §2 item 7",
    "end of stdin: requests read before it answered, turn aborted (shutdown), shutdown_complete \"\", exit 0; a partial last line is no message"
);
spec!(
    SIGTERM,
    "sigterm",
    "§2 item 8",
    "SIGTERM is a graceful shutdown: turn aborted, shutdown_complete \"\", exit 0"
);
spec!(
    NO_PROCESS_LEFT,
    "no-process-left",
    "§2 (after item 8), §5",
    "nothing a command starts outlives it, and no agent leaves a process behind"
);
spec!(PURITY, "stdout-purity", "§1", "every line on stdout, of every agent run, is a JSON-RPC message");
spec!(
    SCHEMA,
    "schema",
    "schema/json",
    "every message validates against the JSON Schema (events, approvals, cancels, results)"
);
spec!(
    PAIRING,
    "begin-end-pairing",
    "§5",
    "each exec_command_begin/patch_apply_begin gets exactly one end, before its turn's end event"
);
spec!(
    ANSWERED_ONCE,
    "answered-once",
    "§1 flow control",
    "no request is answered twice, and no answer names an id that was never sent"
);

/// Why the checks that make the agent run commands are skipped.
const NO_SHELL: &str = "the agent does not offer the `shell` model (capabilities.models), so it cannot be made to run a command on request";

/// What the `initialize` check learned, for the checks after it.
#[derive(Default, Clone)]
struct Learned {
    /// `Some(true)`: `shell` is in capabilities.models; `None`: unknown
    /// (initialize failed).
    shell: Option<bool>,
    max_line_bytes: Option<u64>,
}

pub(crate) fn run(r: &mut Runner) {
    let mut learned = Learned::default();
    r.check(&INITIALIZE, |r| initialize(r, &mut learned));
    r.check(&VERSION, version_negotiation);
    r.check(&INIT_FIRST, initialize_first);
    r.check(&INIT_ONCE, initialize_once);
    r.check(&SESSION_START, session_start);
    r.check(&SESSION_ONCE, session_once);
    r.check(&NO_SESSION, submit_before_session);
    r.check(&FRAMING, framing_tolerance);
    r.check(&PARSE_ERROR, parse_error);
    r.check(&INVALID_REQUEST, invalid_request);
    r.check(&UNKNOWN_METHOD, unknown_method);
    r.check(&INVALID_PARAMS, invalid_params);
    r.check(&UNKNOWN_NOTIFICATION, unknown_notification);
    r.check(&BATCH, batch);
    let max = learned.max_line_bytes;
    r.check(&OVERSIZED, |r| oversized(r, max));
    r.check(&CANCEL_ANSWERED, cancel_answered);
    r.check(&TURN, turn);
    let shell = learned.shell;
    r.check(&BUSY, |r| needs_shell(shell, r, busy_reject));
    r.check(&INTERRUPT, |r| needs_shell(shell, r, interrupt));
    r.check(&INTERRUPT_IDLE, interrupt_idle);
    r.check(&APPROVALS_BY_ID, |r| needs_shell(shell, r, approvals_by_id));
    r.check(&FAIL_CLOSED, |r| needs_shell(shell, r, fail_closed));
    r.check(&WITHDRAWN, |r| needs_shell(shell, r, withdrawn));
    let with_turn = shell == Some(true);
    r.check(&SHUTDOWN, |r| shutdown(r, with_turn));
    r.check(&EOF, |r| eof(r, with_turn));
    r.check(&SIGTERM, |r| sigterm(r, with_turn));
    r.check(&NO_PROCESS_LEFT, |r| no_process_left(r, shell));
    r.check(&PURITY, |r| audit::purity(&r.recorded));
    let schemas = crate::schema::Schemas::new();
    r.check(&SCHEMA, |r| audit::schema(&r.recorded, &schemas));
    r.check(&PAIRING, |r| audit::pairing(&r.recorded));
    r.check(&ANSWERED_ONCE, |r| audit::answered_once(&r.recorded));
}

fn needs_shell(shell: Option<bool>, r: &mut Runner, check: fn(&mut Runner) -> Checked) -> Checked {
    match shell {
        Some(true) => check(r),
        Some(false) => Ok(Verdict::Skip(NO_SHELL.into())),
        None => Ok(Verdict::Skip(
            "`initialize` failed, so it is unknown whether the agent offers the `shell` model".into(),
        )),
    }
}

impl Run {
    fn init(&mut self) -> Result<(), Failure> {
        self.agent.initialize().doing("initialize").map(|_| ())
    }

    fn params(&self, shell: bool) -> SessionStartParams {
        let mut params = SessionStartParams::new(&self.cwd);
        if shell {
            params.model = Some(ModelSelection::named("shell"));
        }
        params
    }

    /// `initialize` and `session/start` (with the shell model if asked).
    fn ready(&mut self, shell: bool) -> Result<(), Failure> {
        self.init()?;
        let params = self.params(shell);
        self.agent.start_session(params).doing("session/start")?;
        Ok(())
    }

    /// Submits a user_input and waits for its answer; returns the id.
    fn say(&mut self, id: &str, text: &str) -> Result<String, Failure> {
        self.agent.submit_with_id(id, Op::text(text)).doing(&format!("submit {id:?}"))
    }

    fn approval(&mut self) -> Result<ApprovalRequest, Failure> {
        self.agent.expect_approval().doing("waiting for an approval request")
    }

    fn turn_end(&mut self, turn: &str, bound: Duration) -> Result<Value, Failure> {
        let turn = turn.to_owned();
        self.within(bound, &format!("end event of turn {turn:?}"), move |m| {
            (is_event_of(m, "task_complete") || is_event_of(m, "turn_aborted")) && m["params"]["id"] == turn
        })
    }

    /// Waits for the agent to withdraw its request `id` (`$/cancelRequest`).
    fn withdrawn(&mut self, id: &Value, bound: Duration) -> Result<(), Failure> {
        let id = id.clone();
        let what = format!("$/cancelRequest for request {id}");
        self.within(bound, &what, move |m| m["method"] == methods::CANCEL_REQUEST && m["params"]["id"] == id)
            .map(|_| ())
    }

    /// Waits for `turn_aborted` with this reason to end `turn`.
    fn aborted(&mut self, turn: &str, reason: &str, bound: Duration) -> Result<Value, Failure> {
        let end = self.turn_end(turn, bound)?;
        if !is_event_of(&end, "turn_aborted") {
            return Err(format!(
                "turn {turn:?} ended with {}, not turn_aborted",
                end["params"]["msg"]["type"]
            )
            .into());
        }
        want_msg_field(&end, "reason", &json!(reason), "turn_aborted")?;
        Ok(end)
    }

    /// Waits for `shutdown_complete` with this (submission) id.
    fn shutdown_complete(&mut self, id: &str, bound: Duration) -> Result<(), Failure> {
        let wanted = id.to_owned();
        self.within(bound, &format!("shutdown_complete with id {id:?}"), move |m| {
            is_event_of(m, "shutdown_complete") && m["params"]["id"] == wanted.as_str()
        })
        .map(|_| ())
    }

    fn event_for_call(&mut self, kind: &str, call_id: &str, bound: Duration) -> Result<Value, Failure> {
        let call = call_id.to_owned();
        self.within(bound, &format!("`{kind}` for call {call_id:?}"), move |m| {
            is_event_of(m, kind) && m["params"]["msg"]["call_id"] == call
        })
    }
}

fn want_msg_field(m: &Value, field: &str, want: &Value, what: &str) -> Result<(), Failure> {
    let got = &m["params"]["msg"][field];
    if got != want {
        return Err(format!("{what}: {field} is {got}, expected {want}").into());
    }
    Ok(())
}

// ---- handshake ---------------------------------------------------------------

fn initialize(r: &mut Runner, learned: &mut Learned) -> Checked {
    r.with_agent("initialize", |run| {
        let answer = run.ask(
            json!("init"),
            methods::INITIALIZE,
            json!({"protocol_version": 1, "client_info": {"name": "deputy-check", "version": env!("CARGO_PKG_VERSION")}, "capabilities": {}}),
        )?;
        if let Some(e) = answer.get("error") {
            return Err(format!("answered with error {}", e).into());
        }
        let result = answer.get("result").cloned().unwrap_or(Value::Null);
        let decoded: deputy_protocol::InitializeResult = serde_json::from_value(result.clone())
            .map_err(|e| format!("the result does not decode as InitializeResult: {e}"))?;
        learned.shell = Some(decoded.capabilities.models.iter().any(|m| m == "shell"));
        learned.max_line_bytes = decoded.capabilities.max_line_bytes;
        let agent = format!(
            "{} {}",
            decoded.agent_info.name,
            decoded.agent_info.version.as_deref().unwrap_or("(no version)")
        );
        if decoded.protocol_version != deputy_protocol::PROTOCOL_VERSION {
            return Err(format!(
                "protocol_version {} in the result, expected {} (agent {agent})",
                decoded.protocol_version,
                deputy_protocol::PROTOCOL_VERSION
            )
            .into());
        }
        Ok(Verdict::Pass(format!(
            "protocol_version 1; agent {agent}; models [{}]; max_line_bytes {}",
            decoded.capabilities.models.join(", "),
            decoded.capabilities.max_line_bytes.map(|n| n.to_string()).unwrap_or_else(|| "not announced".into())
        )))
    })
}

fn version_negotiation(r: &mut Runner) -> Checked {
    r.with_agent("version-negotiation", |run| {
        let answer = run.ask(
            json!("v99"),
            methods::INITIALIZE,
            json!({"protocol_version": 99, "client_info": {"name": "deputy-check"}, "capabilities": {}}),
        )?;
        want_error(&answer, codes::UNSUPPORTED_PROTOCOL_VERSION, "initialize with protocol_version 99")?;
        let supported = &answer["error"]["data"]["supported"];
        let lists_one = supported.as_array().is_some_and(|a| a.contains(&json!(1)));
        if !lists_one {
            return Err(
                format!("-32004, but data.supported is {supported} (expected a list holding 1)").into()
            );
        }
        Ok(Verdict::Pass(format!("protocol_version 99 → -32004, data.supported {supported}")))
    })
}

fn initialize_first(r: &mut Runner) -> Checked {
    r.with_agent("initialize-first", |run| {
        let params = serde_json::to_value(run.params(false)).expect("params serialize");
        let a = run.ask(json!("early-start"), methods::SESSION_START, params)?;
        want_error(&a, codes::NOT_INITIALIZED, "session/start before initialize")?;
        let b = run.ask(json!("early-submit"), methods::SUBMIT, json!({"id": "early", "op": {"type": "user_input", "items": [{"type": "text", "text": "too early"}]}}))?;
        want_error(&b, codes::NOT_INITIALIZED, "submit before initialize")?;
        run.init()?;
        Ok(Verdict::Pass("session/start → -32002, submit → -32002, then initialize answered".into()))
    })
}

fn initialize_once(r: &mut Runner) -> Checked {
    r.with_agent("initialize-once", |run| {
        run.init()?;
        let a = run.ask(
            json!("again"),
            methods::INITIALIZE,
            json!({"protocol_version": 1, "client_info": {"name": "deputy-check"}, "capabilities": {}}),
        )?;
        want_error(&a, codes::ALREADY_INITIALIZED, "a second initialize")?;
        Ok(Verdict::Pass("second initialize → -32003".into()))
    })
}

fn session_start(r: &mut Runner) -> Checked {
    r.with_agent("session-start", |run| {
        run.init()?;
        let params = run.params(false);
        // The driver fails this if session_configured did not come first.
        let result = run.agent.start_session(params).doing("session/start")?;
        let event = run.agent.expect_event("", "session_configured").doing("session_configured")?;
        let deputy_protocol::EventMsg::SessionConfigured { session_id, .. } = &event.msg else {
            return Err("session_configured did not decode".into());
        };
        if *session_id != result.session_id {
            return Err(format!(
                "session_configured names session {session_id}, the answer {}",
                result.session_id
            )
            .into());
        }
        Ok(Verdict::Pass(format!("session_configured (id \"\") before the answer; session {session_id}")))
    })
}

fn session_once(r: &mut Runner) -> Checked {
    r.with_agent("session-once", |run| {
        run.ready(false)?;
        let params = serde_json::to_value(run.params(false)).expect("params serialize");
        let a = run.ask(json!("second-session"), methods::SESSION_START, params)?;
        want_error(&a, codes::SESSION_ALREADY_STARTED, "a second session/start")?;
        Ok(Verdict::Pass("second session/start → -32011".into()))
    })
}

fn submit_before_session(r: &mut Runner) -> Checked {
    r.with_agent("submit-before-session", |run| {
        run.init()?;
        let a = run.ask(
            json!("early-submit"),
            methods::SUBMIT,
            json!({"id": "early", "op": {"type": "user_input", "items": [{"type": "text", "text": "hello"}]}}),
        )?;
        want_error(&a, codes::NO_SESSION, "submit before session/start")?;
        Ok(Verdict::Pass("submit → -32010".into()))
    })
}

// ---- framing and error codes -------------------------------------------------

fn initialize_line(id: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {"protocol_version": 1, "client_info": {"name": "deputy-check"}, "capabilities": {}}}).to_string()
}

fn framing_tolerance(r: &mut Runner) -> Checked {
    r.with_agent("framing-tolerance", |run| {
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend_from_slice(initialize_line("bom").as_bytes());
        bytes.extend_from_slice(b"\r\n\n\r\n");
        run.agent.send_raw(&bytes).doing("writing")?;
        let a = run.agent.response(&json!("bom")).doing("the initialize that followed a byte-order mark")?;
        if a.get("result").is_none() {
            return Err(format!("the initialize after a byte-order mark got {}", describe_answer(&a)).into());
        }
        // After the answer: requests are served concurrently, so one sent
        // with `initialize` could see -32002.
        run.agent
            .send_raw(
                b"\n{\"jsonrpc\":\"2.0\",\"id\":\"crlf\",\"method\":\"deputy-check/no-such-method\"}\r\n",
            )
            .doing("writing")?;
        let b = run.agent.response(&json!("crlf")).doing("a request after empty lines, CRLF-terminated")?;
        want_error(&b, codes::METHOD_NOT_FOUND, "the CRLF-terminated request")?;
        let complaint = run.agent.wait_message(QUIET, |m| m.get("id") == Some(&Value::Null));
        if let Some(c) = complaint {
            return Err(format!("an empty line was answered: {}", describe_answer(&c)).into());
        }
        Ok(Verdict::Pass(
            "BOM + initialize answered; empty lines skipped; CRLF request answered -32601".into(),
        ))
    })
}

fn parse_error(r: &mut Runner) -> Checked {
    r.with_agent("parse-error", |run| {
        run.init()?;
        run.malformed(&NOT_JSON)?;
        let c = run.ask(json!("after"), "deputy-check/no-such-method", json!({}))?;
        want_error(&c, codes::METHOD_NOT_FOUND, "the request after them")?;
        Ok(Verdict::Pass(
            "not JSON → -32700 (id null); not UTF-8 → -32700 (id null); next request served".into(),
        ))
    })
}

fn invalid_request(r: &mut Runner) -> Checked {
    r.with_agent("invalid-request", |run| {
        run.init()?;
        run.malformed(&[
            (
                b"{\"jsonrpc\":\"2.0\",\"foo\":1}\n",
                "an object that is no JSON-RPC message",
                codes::INVALID_REQUEST,
            ),
            (b"42\n", "a JSON number", codes::INVALID_REQUEST),
            (b"[]\n", "an empty batch", codes::INVALID_REQUEST),
        ])?;
        Ok(Verdict::Pass("{\"foo\":1}, 42 and [] → -32600 (id null) each".into()))
    })
}

fn unknown_method(r: &mut Runner) -> Checked {
    r.with_agent("unknown-method", |run| {
        run.init()?;
        let a = run.ask(json!(7), "deputy-check/no-such-method", json!({}))?;
        want_error(&a, codes::METHOD_NOT_FOUND, "request id 7")?;
        let id = json!("id with spaces, ü and \"quotes\"");
        let b = run.ask(id.clone(), "deputy-check/no-such-method", json!({}))?;
        want_error(&b, codes::METHOD_NOT_FOUND, "a string id")?;
        Ok(Verdict::Pass("-32601 for ids 7 and a string id, echoed exactly".into()))
    })
}

fn invalid_params(r: &mut Runner) -> Checked {
    r.with_agent("invalid-params", |run| {
        run.init()?;
        let a = run.ask(json!("rel"), methods::SESSION_START, json!({"cwd": "relative/dir"}))?;
        want_error(&a, codes::INVALID_PARAMS, "session/start with a relative cwd")?;
        let b = run.ask(json!("num"), methods::SESSION_START, json!({"cwd": 42}))?;
        want_error(&b, codes::INVALID_PARAMS, "session/start with cwd 42")?;
        let params = run.params(false);
        run.agent.start_session(params).doing("session/start (valid)")?;
        let c = run.ask(
            json!("op"),
            methods::SUBMIT,
            json!({"id": "bad-op", "op": {"type": "deputy_check_no_such_op"}}),
        )?;
        want_error(&c, codes::INVALID_PARAMS, "submit with an unknown op")?;
        let data = c["error"].get("data").map(Value::to_string).unwrap_or_default();
        if !data.contains("deputy_check_no_such_op") {
            return Err(format!("the unknown op got -32602, but its data does not name it: {data:?}").into());
        }
        Ok(Verdict::Pass("relative cwd, cwd 42, unknown op → -32602 (data names the op)".into()))
    })
}

fn unknown_notification(r: &mut Runner) -> Checked {
    r.with_agent("unknown-notification", |run| {
        run.init()?;
        run.agent.notify("deputy-check/no-such-notification", json!({})).doing("notify")?;
        let a = run.ask(json!("after"), "deputy-check/no-such-method", json!({}))?;
        want_error(&a, codes::METHOD_NOT_FOUND, "the request after it")?;
        if let Some(m) = run
            .agent
            .wait_message(QUIET, |m| m.get("method").is_none() && m.get("id") != Some(&json!("after")))
        {
            return Err(format!("the notification was answered: {}", describe_answer(&m)).into());
        }
        Ok(Verdict::Pass("no answer; the next request answered".into()))
    })
}

fn batch(r: &mut Runner) -> Checked {
    r.with_agent("batch", |run| {
        run.init()?;
        let line = br#"[{"jsonrpc":"2.0","id":"b1","method":"deputy-check/a"},{"jsonrpc":"2.0","id":"b2","method":"deputy-check/b"}]"#;
        let mut l = line.to_vec();
        l.push(b'\n');
        run.agent.send_raw(&l).doing("writing a batch")?;
        let answer = run.within(run.agent.timeout(), "array answering the batch", |m| m.is_array())?;
        let items = answer.as_array().cloned().unwrap_or_default();
        let mut ids: Vec<String> = items.iter().map(|i| i["id"].to_string()).collect();
        ids.sort();
        if ids != ["\"b1\"", "\"b2\""] || items.iter().any(|i| error_code(i) != Some(codes::METHOD_NOT_FOUND)) {
            return Err(format!("the batch was answered with {answer}").into());
        }
        Ok(Verdict::Pass("one array with both answers (-32601 each)".into()))
    })
}

/// The longest line the battery sends to test the limit.
const OVERSIZED_CAP: u64 = 64 * 1024 * 1024;

fn oversized(r: &mut Runner, max: Option<u64>) -> Checked {
    let Some(max) = max else {
        return Ok(Verdict::Skip("the agent announces no capabilities.max_line_bytes".into()));
    };
    if max > OVERSIZED_CAP {
        return Ok(Verdict::Skip(format!(
            "max_line_bytes {max} is over the {OVERSIZED_CAP} bytes this check sends"
        )));
    }
    r.with_agent("oversized-line", |run| {
        run.init()?;
        let head = br#"{"jsonrpc":"2.0","id":"big","method":"deputy-check/big","params":{"pad":""#;
        let tail = br#""}}"#;
        let len = max as usize + 1;
        let mut line = Vec::with_capacity(len + 1);
        line.extend_from_slice(head);
        line.resize(len - tail.len(), b'a');
        line.extend_from_slice(tail);
        line.push(b'\n');
        let started = Instant::now();
        let a = run.null_id_answer(&line, &format!("a line of {len} bytes"))?;
        want_error(&a, codes::INVALID_REQUEST, "the oversized line")?;
        let took = started.elapsed();
        let b = run.ask(json!("after-big"), "deputy-check/no-such-method", json!({}))?;
        want_error(&b, codes::METHOD_NOT_FOUND, "the request after it")?;
        if from_agent(run).any(|m| m.get("id") == Some(&json!("big"))) {
            return Err("the oversized request was answered by id".into());
        }
        Ok(Verdict::Pass(format!("{len} bytes → -32600 (id null) in {}; next request served", ms(took))))
    })
}

fn cancel_answered(r: &mut Runner) -> Checked {
    r.with_agent("cancel-request-answered", |run| {
        run.init()?;
        let a = run.ask(json!("cancel-as-request"), methods::CANCEL_REQUEST, json!({"id": 424242}))?;
        if a.get("result") != Some(&Value::Null) {
            return Err(format!("$/cancelRequest with an id got {}", describe_answer(&a)).into());
        }
        Ok(Verdict::Pass("answered null".into()))
    })
}

// ---- turns ---------------------------------------------------------------------

fn turn(r: &mut Runner) -> Checked {
    r.with_agent("turn", |run| {
        run.ready(false)?;
        let started = Instant::now();
        let id = run.say("check-turn", "hello from deputy check")?;
        let first = run.within(run.agent.timeout(), "event of the turn", |m| {
            m["method"] == methods::EVENT && m["params"]["id"] == "check-turn"
        })?;
        if !is_event_of(&first, "task_started") {
            return Err(format!(
                "the turn's first event is {}, not task_started",
                first["params"]["msg"]["type"]
            )
            .into());
        }
        want_msg_field(&first, "turn_id", &json!("check-turn"), "task_started")?;
        let end = run.turn_end(&id, run.agent.timeout())?;
        let took = started.elapsed();
        want_msg_field(&end, "turn_id", &json!("check-turn"), "the end event")?;
        let kind = end["params"]["msg"]["type"].as_str().unwrap_or("?").to_owned();
        if let Some(again) = run.agent.wait_message(QUIET, |m| {
            (is_event_of(m, "task_complete") || is_event_of(m, "turn_aborted"))
                && m["params"]["id"] == "check-turn"
        }) {
            return Err(format!("a second end event: {}", again["params"]["msg"]).into());
        }
        let events = from_agent(run)
            .filter(|m| m["method"] == methods::EVENT && m["params"]["id"] == "check-turn")
            .count();
        Ok(Verdict::Pass(format!(
            "answer {{id}}, task_started … {kind} ({events} events with the id) in {}",
            ms(took)
        )))
    })
}

fn busy_reject(r: &mut Runner) -> Checked {
    r.with_agent("busy-reject", |run| {
        run.ready(true)?;
        run.say("busy-1", "$ true")?;
        let approval = run.approval()?;
        let a = run.ask(
            json!("second-input"),
            methods::SUBMIT,
            json!({"id": "busy-2", "op": {"type": "user_input", "items": [{"type": "text", "text": "me too"}]}}),
        )?;
        want_error(&a, codes::TURN_IN_PROGRESS, "a user_input while a turn runs")?;
        run.agent.answer_approval(&approval, ReviewDecision::Denied).doing("answering")?;
        run.turn_end("busy-1", run.agent.timeout())?;
        Ok(Verdict::Pass("second user_input → -32014 while the first turn waited on an approval".into()))
    })
}

fn interrupt(r: &mut Runner) -> Checked {
    let marker = format!("sleep 30.{}", r.nonce());
    r.with_agent("interrupt", |run| {
        run.ready(true)?;
        let turn = run.say("int-turn", &format!("$ {marker}"))?;
        let approval = run.approval()?;
        let call = approval.call_id().unwrap_or_default().to_owned();
        run.agent.answer_approval(&approval, ReviewDecision::Approved).doing("approving")?;
        run.event_for_call("exec_command_begin", &call, run.agent.timeout())?;
        let started = Instant::now();
        run.agent.submit_with_id("int-stop", Op::Interrupt).doing("submit interrupt")?;
        run.aborted(&turn, "interrupted", INTERRUPT_BOUND.saturating_sub(started.elapsed()))?;
        let took = started.elapsed();
        let exec_end =
            from_agent(run).find(|m| is_event_of(m, "exec_command_end") && m["params"]["msg"]["call_id"] == call.as_str());
        let Some(exec_end) = exec_end else {
            return Err("no exec_command_end for the interrupted command before turn_aborted".into());
        };
        want_msg_field(&exec_end, "interrupted", &json!(true), "exec_command_end")?;
        want_msg_field(&exec_end, "exit_code", &json!(137), "exec_command_end")?;
        gone_within(&marker, Duration::from_secs(1))?;
        Ok(Verdict::Pass(format!(
            "turn_aborted (interrupted) {} after interrupt (aim 50 ms, bound {}); exec_command_end interrupted, 137; `{marker}` gone",
            ms(took),
            ms(INTERRUPT_BOUND)
        )))
    })
}

fn interrupt_idle(r: &mut Runner) -> Checked {
    r.with_agent("interrupt-idle", |run| {
        run.ready(false)?;
        run.agent.submit_with_id("idle-stop", Op::Interrupt).doing("submit interrupt")?;
        if let Some(e) = run
            .agent
            .wait_message(QUIET, |m| m["method"] == methods::EVENT && m["params"]["id"] == "idle-stop")
        {
            return Err(format!("an idle interrupt wrote {}", e["params"]["msg"]).into());
        }
        Ok(Verdict::Pass(format!("answered, no event within {}", ms(QUIET))))
    })
}

// ---- approvals -------------------------------------------------------------------

/// Submits two commands in one input and waits for both approvals (the
/// shell model asks for every call of one input at once, §5).
fn two_approvals(
    run: &mut Run,
    turn: &str,
    first: &str,
    second: &str,
) -> Result<(ApprovalRequest, ApprovalRequest), Failure> {
    run.say(turn, &format!("$ {first}\n$ {second}"))?;
    let a = run.approval()?;
    let b = run.approval().map_err(|f| Failure {
        evidence: format!("the second approval did not come while the first was pending ({})", f.evidence),
        detail: f.detail,
    })?;
    if a.id == b.id || a.call_id() == b.call_id() {
        return Err(format!("both approvals have request id {} / call id {:?}", a.id, a.call_id()).into());
    }
    Ok((a, b))
}

fn began(run: &Run, call: &str) -> bool {
    from_agent(run).any(|m| is_event_of(&m, "exec_command_begin") && m["params"]["msg"]["call_id"] == call)
}

/// Every message the agent wrote so far (taken or not), in order.
fn from_agent(run: &Run) -> impl Iterator<Item = Value> + '_ {
    run.agent
        .transcript()
        .iter()
        .filter(|e| e.direction == deputy_testkit::Direction::FromAgent && e.problem.is_none())
        .filter_map(|e| serde_json::from_slice::<Value>(&e.bytes).ok())
}

fn approvals_by_id(r: &mut Runner) -> Checked {
    let n = r.nonce();
    let (first, second) = (format!("first-{n}"), format!("second-{n}"));
    r.with_agent("approvals-by-id", |run| {
        run.ready(true)?;
        let (a, b) = two_approvals(run, "by-id", &format!("touch {first}"), &format!("touch {second}"))?;
        let (a_call, b_call) = (a.call_id().unwrap_or_default().to_owned(), b.call_id().unwrap_or_default().to_owned());
        // The second first: an agent that applies answers in order, or by
        // turn, gets it wrong.
        run.agent.answer_approval(&b, ReviewDecision::Approved).doing("approving the second")?;
        run.agent.answer_approval(&a, ReviewDecision::Denied).doing("denying the first")?;
        run.turn_end("by-id", run.agent.timeout())?;
        let (a_ran, b_ran) = (exists(&run.cwd, &first), exists(&run.cwd, &second));
        if a_ran || !b_ran || began(run, &a_call) || !began(run, &b_call) {
            return Err(format!(
                "approved `touch {second}` (request {}) ran: {b_ran}; denied `touch {first}` (request {}) ran: {a_ran}",
                b.id, a.id
            )
            .into());
        }
        Ok(Verdict::Pass(format!(
            "requests {} and {} pending together; answered in reverse: only the approved command ran",
            a.id, b.id
        )))
    })
}

fn fail_closed(r: &mut Runner) -> Checked {
    let n = r.nonce();
    let (first, second) = (format!("errored-{n}"), format!("undecodable-{n}"));
    r.with_agent("approval-fail-closed", |run| {
        run.ready(true)?;
        let (a, b) = two_approvals(run, "closed", &format!("touch {first}"), &format!("touch {second}"))?;
        run.agent
            .answer_error(&a.id, codes::INTERNAL_ERROR, "deputy check: the host failed")
            .doing("answering with an error")?;
        run.agent.answer(&b.id, json!({"decision": "maybe-later"})).doing("answering with garbage")?;
        let end = run.turn_end("closed", run.agent.timeout())?;
        let ran: Vec<&str> = [(&a, &first), (&b, &second)]
            .iter()
            .filter(|(req, file)| exists(&run.cwd, file) || began(run, req.call_id().unwrap_or_default()))
            .map(|(_, file)| file.as_str())
            .collect();
        if !ran.is_empty() {
            return Err(format!(
                "ran anyway: {}",
                ran.iter().map(|f| format!("touch {f}")).collect::<Vec<_>>().join(", ")
            )
            .into());
        }
        Ok(Verdict::Pass(format!(
            "error answer and {{\"decision\":\"maybe-later\"}}: neither command ran; the turn ended with {}",
            end["params"]["msg"]["type"].as_str().unwrap_or("?")
        )))
    })
}

fn withdrawn(r: &mut Runner) -> Checked {
    let file = format!("withdrawn-{}", r.nonce());
    r.with_agent("approval-withdrawn", |run| {
        run.ready(true)?;
        run.say("wd", &format!("$ touch {file}"))?;
        let approval = run.approval()?;
        let started = Instant::now();
        run.agent.submit_with_id("wd-stop", Op::Interrupt).doing("submit interrupt")?;
        run.withdrawn(&approval.id, INTERRUPT_BOUND)?;
        run.aborted("wd", "interrupted", INTERRUPT_BOUND.saturating_sub(started.elapsed()))?;
        let took = started.elapsed();
        // A late answer must not make it run.
        run.agent.answer_approval(&approval, ReviewDecision::Approved).doing("answering late")?;
        std::thread::sleep(QUIET);
        if exists(&run.cwd, &file) {
            return Err(format!("`touch {file}` ran after its approval was withdrawn").into());
        }
        Ok(Verdict::Pass(format!(
            "$/cancelRequest for request {} and turn_aborted (interrupted) within {}; a late approval ran nothing",
            approval.id,
            ms(took)
        )))
    })
}

// ---- ending ----------------------------------------------------------------------

fn shutdown(r: &mut Runner, with_turn: bool) -> Checked {
    let file = format!("shut-{}", r.nonce());
    r.with_agent("shutdown", |run| {
        run.ready(with_turn)?;
        let pending = if with_turn {
            run.say("shut-turn", &format!("$ touch {file}"))?;
            Some(run.approval()?)
        } else {
            None
        };
        let bye = json!({"jsonrpc": "2.0", "id": "bye", "method": "submit", "params": {"id": "check-bye", "op": {"type": "shutdown"}}});
        let late = json!({"jsonrpc": "2.0", "id": "late", "method": "submit", "params": {"id": "too-late", "op": {"type": "user_input", "items": [{"type": "text", "text": "too late"}]}}});
        let started = Instant::now();
        run.agent.send_raw(format!("{bye}\n{late}\n").as_bytes()).doing("writing shutdown")?;
        let a = run.agent.response(&json!("bye")).doing("the answer to shutdown")?;
        if a["result"]["id"] != "check-bye" {
            return Err(format!("shutdown was answered {}", describe_answer(&a)).into());
        }
        let b = run.agent.response(&json!("late")).doing("the answer to a submit after shutdown")?;
        want_error(&b, codes::SHUTTING_DOWN, "a submit after shutdown")?;
        let mut seen = Vec::new();
        if let Some(approval) = &pending {
            run.withdrawn(&approval.id, EXIT_BOUND)?;
            run.aborted("shut-turn", "shutdown", EXIT_BOUND)?;
            seen.push("approval withdrawn, turn_aborted (shutdown)");
        }
        run.shutdown_complete("check-bye", EXIT_BOUND)?;
        let took = run.exit_zero(started, EXIT_BOUND)?;
        if !run.agent.stdout_closed() {
            return Err("exited, but its stdout is still open (a process holds it)".into());
        }
        if with_turn && exists(&run.cwd, &file) {
            return Err(format!("`touch {file}` ran though its approval was never answered").into());
        }
        seen.push("shutdown_complete (check-bye)");
        Ok(Verdict::Pass(format!("{}; later submit → -32015; exit 0 in {}", seen.join(", "), ms(took))))
    })
}

fn eof(r: &mut Runner, with_turn: bool) -> Checked {
    let n = r.nonce();
    let (marker, file) = (format!("sleep 30.{n}"), format!("eof-{n}"));
    r.with_agent("eof", |run| {
        run.ready(with_turn)?;
        let mut calls = None;
        if with_turn {
            let (running, pending) = two_approvals(run, "eof-turn", &marker, &format!("touch {file}"))?;
            let call = running.call_id().unwrap_or_default().to_owned();
            run.agent.answer_approval(&running, ReviewDecision::Approved).doing("approving")?;
            run.event_for_call("exec_command_begin", &call, run.agent.timeout())?;
            calls = Some((call, pending));
        }
        let before = br#"{"jsonrpc":"2.0","id":"before-eof","method":"deputy-check/no-such-method"}"#;
        let partial = br#"{"jsonrpc":"2.0","id":"partial","method":"deputy-check/no-such-method"}"#;
        let mut bytes = before.to_vec();
        bytes.push(b'\n');
        bytes.extend_from_slice(partial);
        run.agent.send_raw(&bytes).doing("writing")?;
        run.agent.close_stdin();
        let started = Instant::now();
        let a = run
            .agent
            .response(&json!("before-eof"))
            .doing("the answer to a request written just before EOF")?;
        want_error(&a, codes::METHOD_NOT_FOUND, "the request before EOF")?;
        let mut seen = vec!["request before EOF answered"];
        if let Some((call, pending)) = &calls {
            let end = run.event_for_call("exec_command_end", call, EXIT_BOUND)?;
            want_msg_field(&end, "interrupted", &json!(true), "exec_command_end")?;
            run.withdrawn(&pending.id, EXIT_BOUND)?;
            run.aborted("eof-turn", "shutdown", EXIT_BOUND)?;
            seen.push("command killed (interrupted), approval withdrawn, turn_aborted (shutdown)");
        }
        run.shutdown_complete("", EXIT_BOUND)?;
        let took = run.exit_zero(started, EXIT_BOUND)?;
        run.agent.drain();
        if run.agent.pending().any(|m| m.get("id") == Some(&json!("partial"))) {
            return Err("the partial line at EOF was answered as a request".into());
        }
        if with_turn {
            if exists(&run.cwd, &file) {
                return Err(format!("`touch {file}` ran though its approval was pending at EOF").into());
            }
            gone_within(&marker, Duration::from_secs(1))?;
        }
        seen.push("shutdown_complete (\"\")");
        Ok(Verdict::Pass(format!(
            "{}; partial line ignored; exit 0 in {} after EOF",
            seen.join(", "),
            ms(took)
        )))
    })
}

fn sigterm(r: &mut Runner, with_turn: bool) -> Checked {
    let marker = format!("sleep 30.{}", r.nonce());
    r.with_agent("sigterm", |run| {
        run.ready(with_turn)?;
        let mut call = None;
        if with_turn {
            run.say("term-turn", &format!("$ {marker}"))?;
            let approval = run.approval()?;
            call = approval.call_id().map(str::to_owned);
            run.agent.answer_approval(&approval, ReviewDecision::Approved).doing("approving")?;
            run.event_for_call(
                "exec_command_begin",
                call.as_deref().unwrap_or_default(),
                run.agent.timeout(),
            )?;
        }
        let started = Instant::now();
        run.agent.signal(libc::SIGTERM).doing("SIGTERM")?;
        let mut seen = Vec::new();
        if let Some(call) = &call {
            let end = run.event_for_call("exec_command_end", call, EXIT_BOUND)?;
            want_msg_field(&end, "interrupted", &json!(true), "exec_command_end")?;
            run.aborted("term-turn", "shutdown", EXIT_BOUND)?;
            seen.push("command killed, turn_aborted (shutdown)");
        }
        run.shutdown_complete("", EXIT_BOUND)?;
        let took = run.exit_zero(started, EXIT_BOUND)?;
        if with_turn {
            gone_within(&marker, Duration::from_secs(1))?;
        }
        seen.push("shutdown_complete (\"\")");
        Ok(Verdict::Pass(format!("{}; exit 0 in {} after SIGTERM", seen.join(", "), ms(took))))
    })
}

// ---- processes -------------------------------------------------------------------

fn no_process_left(r: &mut Runner, shell: Option<bool>) -> Checked {
    let n = r.nonce();
    let (bg, daemon) = (format!("sleep 60.{n}"), format!("sleep 61.{n}"));
    let mut own = String::from(match shell {
        Some(false) => "no command run (the agent has no `shell` model)",
        _ => "no command run (`initialize` failed)",
    });
    if shell == Some(true) {
        let verdict = r.with_agent("no-process-left", |run| {
            run.ready(true)?;
            let line = format!("$ sh -c '{bg} & (setsid {daemon} &); echo started'");
            let turn = run.say("leave", &line)?;
            let approval = run.approval()?;
            run.agent.answer_approval(&approval, ReviewDecision::Approved).doing("approving")?;
            run.turn_end(&turn, run.agent.timeout())?;
            gone_within(&bg, Duration::from_secs(1)).map_err(|e| format!("after the command ended: {e}"))?;
            gone_within(&daemon, Duration::from_secs(1))
                .map_err(|e| format!("after the command ended: {e}"))?;
            run.agent.shutdown().doing("shutdown")?;
            run.agent.wait_exit().doing("waiting for the exit")?;
            Ok(Verdict::Pass(String::new()))
        });
        verdict?;
        own = "a background job and a setsid daemon of a command were gone when it ended".into();
    }
    r.leftovers_verdict(&own)
}
