//! The battery for the Agent Client Protocol face (PROTOCOL.md §8):
//! handshake and version negotiation, framing and error codes, sessions,
//! a prompt, permissions failing closed, cancel, end of input, and the
//! audits that apply to any JSON-RPC agent.
//!
//! What it does not do: validate against the official ACP JSON Schema
//! (it is not part of this crate; `tests/acp_agent.rs` does that with the
//! official SDK). `acp-shapes` checks the fields the protocol requires of
//! the messages this battery provokes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::audit;
use crate::native::{EXIT_BOUND, INTERRUPT_BOUND};
use crate::runner::{
    Checked, Doing as _, Failure, NOT_JSON, Run, Runner, Spec, Verdict, describe_answer, exists, gone_within,
    ms, want_error,
};

macro_rules! spec {
    ($name:ident, $id:literal, $section:literal, $what:literal) => {
        const $name: Spec = Spec { id: $id, section: $section, what: $what };
    };
}

spec!(
    INITIALIZE,
    "acp-initialize",
    "§8 methods",
    "`initialize` with protocolVersion 1 is answered with protocolVersion 1 and agentCapabilities"
);
spec!(
    VERSION,
    "acp-version-negotiation",
    "§8 methods",
    "an unknown protocolVersion is answered (not an error) with a version the agent speaks"
);
spec!(
    BEFORE_INIT,
    "acp-before-initialize",
    "§8 methods",
    "a session method before `initialize` is answered -32600"
);
spec!(
    PARSE_ERROR,
    "acp-parse-error",
    "§8, §1, §4",
    "a line that is not JSON, or not UTF-8, is answered -32700 with id null"
);
spec!(
    INVALID_REQUEST,
    "acp-invalid-request",
    "§8, §1, §4",
    "JSON that is no JSON-RPC message, and an empty batch, are answered -32600 with id null"
);
spec!(
    UNKNOWN_METHOD,
    "acp-unknown-method",
    "§8 methods",
    "unknown methods (with or without `_`) are answered -32601; unknown notifications ignored"
);
spec!(SESSION_NEW, "acp-session-new", "§8 methods", "`session/new` is answered with a sessionId");
spec!(
    UNKNOWN_SESSION,
    "acp-unknown-session",
    "§8 methods",
    "`session/prompt` for an unknown session is answered -32002"
);
spec!(
    PROMPT,
    "acp-prompt",
    "§8 methods, events",
    "a text prompt streams session/update for its session, then is answered stopReason end_turn"
);
spec!(
    FAIL_CLOSED,
    "acp-permission-fail-closed",
    "§8 approvals",
    "a permission request answered with a JSON-RPC error counts as rejected: the tool does not run"
);
spec!(
    CANCEL,
    "acp-cancel",
    "§8 methods, stop reasons",
    "`session/cancel` kills the running tool and the prompt is answered stopReason cancelled"
);
spec!(
    CANCEL_PENDING,
    "acp-cancel-pending-permission",
    "§8 methods",
    "`session/cancel` withdraws a pending permission request ($/cancel_request) and nothing runs"
);
spec!(EOF, "acp-eof", "§8, §1", "end of stdin: the agent exits 0, a pending permission's tool never runs");
spec!(
    SHAPES,
    "acp-shapes",
    "§8",
    "session/update, session/request_permission and prompt answers have the fields ACP requires"
);
spec!(PURITY, "stdout-purity", "§1", "every line on stdout, of every agent run, is a JSON-RPC message");
spec!(
    ANSWERED_ONCE,
    "answered-once",
    "§1 flow control",
    "no request is answered twice, and no answer names an id that was never sent"
);
spec!(NO_PROCESS_LEFT, "no-process-left", "§8, §2 (after item 8)", "no agent leaves a process behind");

const NO_COMMANDS: &str = "the agent did not ask permission to run `$ touch …` (a prompt Deputy's shell brain runs), so its tools cannot be driven";

pub(crate) fn run(r: &mut Runner) {
    r.check(&INITIALIZE, initialize);
    r.check(&VERSION, version_negotiation);
    r.check(&BEFORE_INIT, before_initialize);
    r.check(&PARSE_ERROR, parse_error);
    r.check(&INVALID_REQUEST, invalid_request);
    r.check(&UNKNOWN_METHOD, unknown_method);
    r.check(&SESSION_NEW, session_new);
    r.check(&UNKNOWN_SESSION, unknown_session);
    r.check(&PROMPT, prompt);
    let mut runs_tools = None;
    r.check(&FAIL_CLOSED, |r| fail_closed(r, &mut runs_tools));
    let tools = runs_tools;
    r.check(&CANCEL, |r| needs_tools(tools, r, cancel));
    r.check(&CANCEL_PENDING, |r| needs_tools(tools, r, cancel_pending));
    r.check(&EOF, |r| eof(r, tools == Some(true)));
    r.check(&SHAPES, |r| shapes(&r.recorded));
    r.check(&PURITY, |r| audit::purity(&r.recorded));
    r.check(&ANSWERED_ONCE, |r| audit::answered_once(&r.recorded));
    r.check(&NO_PROCESS_LEFT, |r| r.leftovers_verdict(""));
}

fn needs_tools(tools: Option<bool>, r: &mut Runner, check: fn(&mut Runner) -> Checked) -> Checked {
    match tools {
        Some(true) => check(r),
        Some(false) => Ok(Verdict::Skip(NO_COMMANDS.into())),
        None => Ok(Verdict::Skip(
            "`acp-permission-fail-closed` could not tell whether the agent runs tools".into(),
        )),
    }
}

fn init_params(version: u64) -> Value {
    json!({"protocolVersion": version, "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false}, "clientInfo": {"name": "deputy-check", "version": env!("CARGO_PKG_VERSION")}})
}

impl Run {
    fn acp_init(&mut self) -> Result<Value, Failure> {
        let a = self.ask(json!("init"), "initialize", init_params(1))?;
        a.get("result").cloned().ok_or_else(|| format!("initialize got {}", describe_answer(&a)).into())
    }

    /// `initialize` and `session/new`; returns the session id.
    fn acp_session(&mut self) -> Result<String, Failure> {
        self.acp_init()?;
        let a = self.ask(json!("new"), "session/new", json!({"cwd": self.cwd, "mcpServers": []}))?;
        a["result"]["sessionId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("session/new got {}", describe_answer(&a)).into())
    }

    fn prompt(&mut self, id: &str, session: &str, text: &str) -> Result<(), Failure> {
        self.agent
            .request_with_id(
                json!(id),
                "session/prompt",
                json!({"sessionId": session, "prompt": [{"type": "text", "text": text}]}),
            )
            .doing("session/prompt")
    }

    /// Waits for the prompt's answer or a permission request, whichever
    /// comes first.
    fn answer_or_permission(&mut self, prompt_id: &str) -> Result<Value, Failure> {
        let id = json!(prompt_id);
        self.within(self.agent.timeout(), "permission request or prompt answer", move |m| {
            m["method"] == "session/request_permission"
                || (m.get("method").is_none() && m.get("id") == Some(&id))
        })
    }

    fn prompt_answer(&mut self, prompt_id: &str, bound: Duration) -> Result<Value, Failure> {
        let id = json!(prompt_id);
        self.within(bound, &format!("answer to session/prompt {prompt_id:?}"), move |m| {
            m.get("method").is_none() && m.get("id") == Some(&id)
        })
    }
}

fn stop_reason(answer: &Value) -> &str {
    answer["result"]["stopReason"].as_str().unwrap_or("(none)")
}

/// The option of a permission request with this kind.
fn option_of(request: &Value, kind: &str) -> Option<String> {
    request["params"]["options"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind)
        .and_then(|o| o["optionId"].as_str())
        .map(str::to_owned)
}

fn initialize(r: &mut Runner) -> Checked {
    r.with_agent("acp-initialize", |run| {
        let result = run.acp_init()?;
        if result["protocolVersion"] != 1 {
            return Err(
                format!("protocolVersion {} in the result, expected 1", result["protocolVersion"]).into()
            );
        }
        if !result["agentCapabilities"].is_object() && result.get("agentCapabilities").is_some() {
            return Err(format!("agentCapabilities is {}", result["agentCapabilities"]).into());
        }
        Ok(Verdict::Pass(format!(
            "protocolVersion 1; agent {}; loadSession {}",
            result["agentInfo"]["name"].as_str().unwrap_or("(unnamed)"),
            result["agentCapabilities"]["loadSession"]
        )))
    })
}

fn version_negotiation(r: &mut Runner) -> Checked {
    r.with_agent("acp-version-negotiation", |run| {
        let a = run.ask(json!("v99"), "initialize", init_params(99))?;
        let v = &a["result"]["protocolVersion"];
        if !v.as_u64().is_some_and(|v| (1..99).contains(&v)) {
            return Err(format!(
                "protocolVersion 99 got {} (expected a version the agent speaks)",
                describe_answer(&a)
            )
            .into());
        }
        Ok(Verdict::Pass(format!("protocolVersion 99 → protocolVersion {v}")))
    })
}

fn before_initialize(r: &mut Runner) -> Checked {
    r.with_agent("acp-before-initialize", |run| {
        let cwd = run.cwd.clone();
        let a = run.ask(json!("early"), "session/new", json!({"cwd": cwd, "mcpServers": []}))?;
        want_error(&a, -32600, "session/new before initialize")?;
        run.acp_init()?;
        Ok(Verdict::Pass("session/new → -32600, then initialize answered".into()))
    })
}

fn parse_error(r: &mut Runner) -> Checked {
    r.with_agent("acp-parse-error", |run| {
        run.acp_init()?;
        run.malformed(&NOT_JSON)?;
        Ok(Verdict::Pass("not JSON → -32700 (id null); not UTF-8 → -32700 (id null)".into()))
    })
}

fn invalid_request(r: &mut Runner) -> Checked {
    r.with_agent("acp-invalid-request", |run| {
        run.acp_init()?;
        run.malformed(&[
            (b"{\"jsonrpc\":\"2.0\",\"foo\":1}\n", "an object that is no message", -32600),
            (b"[]\n", "an empty batch", -32600),
        ])?;
        Ok(Verdict::Pass("{\"foo\":1} and [] → -32600 (id null)".into()))
    })
}

fn unknown_method(r: &mut Runner) -> Checked {
    r.with_agent("acp-unknown-method", |run| {
        run.acp_init()?;
        run.agent.notify("deputy-check/no-such-notification", json!({})).doing("notify")?;
        let a = run.ask(json!("u1"), "deputy-check/no-such-method", json!({}))?;
        want_error(&a, -32601, "an unknown method")?;
        let b = run.ask(json!("u2"), "_deputy-check/no-such-extension", json!({}))?;
        want_error(&b, -32601, "an unknown `_` method")?;
        if let Some(m) = run.agent.wait_message(Duration::from_millis(200), |m| {
            m.get("method").is_none() && m.get("id") == Some(&Value::Null)
        }) {
            return Err(format!("the unknown notification was answered: {}", describe_answer(&m)).into());
        }
        Ok(Verdict::Pass(
            "-32601 for `deputy-check/…` and `_deputy-check/…`; the notification ignored".into(),
        ))
    })
}

fn session_new(r: &mut Runner) -> Checked {
    r.with_agent("acp-session-new", |run| {
        let id = run.acp_session()?;
        Ok(Verdict::Pass(format!("sessionId {id}")))
    })
}

fn unknown_session(r: &mut Runner) -> Checked {
    r.with_agent("acp-unknown-session", |run| {
        run.acp_session()?;
        run.prompt("p", "deputy-check-no-such-session", "hello")?;
        let a = run.prompt_answer("p", run.agent.timeout())?;
        want_error(&a, -32002, "a prompt for an unknown session")?;
        Ok(Verdict::Pass("-32002".into()))
    })
}

fn prompt(r: &mut Runner) -> Checked {
    r.with_agent("acp-prompt", |run| {
        let session = run.acp_session()?;
        let started = Instant::now();
        run.prompt("p", &session, "hello from deputy check")?;
        let s = session.clone();
        run.within(run.agent.timeout(), "session/update for the session", move |m| {
            m["method"] == "session/update" && m["params"]["sessionId"] == s.as_str()
        })?;
        let a = run.prompt_answer("p", run.agent.timeout())?;
        if stop_reason(&a) != "end_turn" {
            return Err(format!("the prompt got {}", describe_answer(&a)).into());
        }
        Ok(Verdict::Pass(format!("session/update, then stopReason end_turn in {}", ms(started.elapsed()))))
    })
}

fn fail_closed(r: &mut Runner, runs_tools: &mut Option<bool>) -> Checked {
    let file = format!("acp-errored-{}", r.nonce());
    r.with_agent("acp-permission-fail-closed", |run| {
        let session = run.acp_session()?;
        run.prompt("p", &session, &format!("$ touch {file}"))?;
        let first = run.answer_or_permission("p")?;
        if first["method"] != "session/request_permission" {
            *runs_tools = Some(false);
            return Ok(Verdict::Skip(NO_COMMANDS.into()));
        }
        *runs_tools = Some(true);
        run.agent.answer_error(&first["id"], -32603, "deputy check: the client failed").doing("answering")?;
        let a = run.prompt_answer("p", run.agent.timeout())?;
        std::thread::sleep(Duration::from_millis(100));
        if exists(&run.cwd, &file) {
            return Err(format!(
                "`touch {file}` ran though its permission request was answered with an error"
            )
            .into());
        }
        Ok(Verdict::Pass(format!("error answer: nothing ran; stopReason {}", stop_reason(&a))))
    })
}

fn cancel(r: &mut Runner) -> Checked {
    let marker = format!("sleep 30.{}", r.nonce());
    r.with_agent("acp-cancel", |run| {
        let session = run.acp_session()?;
        run.prompt("p", &session, &format!("$ {marker}"))?;
        let request = run.answer_or_permission("p")?;
        let Some(allow) = option_of(&request, "allow_once") else {
            return Err(format!("no allow_once option in {}", request["params"]["options"]).into());
        };
        let call = request["params"]["toolCall"]["toolCallId"].clone();
        run.agent
            .answer(&request["id"], json!({"outcome": {"outcome": "selected", "optionId": allow}}))
            .doing("allowing")?;
        run.within(run.agent.timeout(), "tool_call_update in_progress", move |m| {
            m["params"]["update"]["sessionUpdate"] == "tool_call_update"
                && m["params"]["update"]["toolCallId"] == call
                && m["params"]["update"]["status"] == "in_progress"
        })?;
        run.agent.observe_processes();
        let started = Instant::now();
        run.agent.notify("session/cancel", json!({"sessionId": session})).doing("session/cancel")?;
        let a = run.prompt_answer("p", INTERRUPT_BOUND)?;
        let took = started.elapsed();
        if stop_reason(&a) != "cancelled" {
            return Err(format!("after session/cancel the prompt got {}", describe_answer(&a)).into());
        }
        gone_within(&marker, Duration::from_secs(1))?;
        Ok(Verdict::Pass(format!("stopReason cancelled {} after session/cancel; `{marker}` gone", ms(took))))
    })
}

fn cancel_pending(r: &mut Runner) -> Checked {
    let file = format!("acp-withdrawn-{}", r.nonce());
    r.with_agent("acp-cancel-pending-permission", |run| {
        let session = run.acp_session()?;
        run.prompt("p", &session, &format!("$ touch {file}"))?;
        let request = run.answer_or_permission("p")?;
        let id = request["id"].clone();
        run.agent.notify("session/cancel", json!({"sessionId": session})).doing("session/cancel")?;
        let wanted = id.clone();
        run.within(INTERRUPT_BOUND, &format!("$/cancel_request for request {id}"), move |m| {
            m["method"] == "$/cancel_request" && m["params"]["requestId"] == wanted
        })?;
        let a = run.prompt_answer("p", INTERRUPT_BOUND)?;
        if stop_reason(&a) != "cancelled" {
            return Err(format!("after session/cancel the prompt got {}", describe_answer(&a)).into());
        }
        if let Some(allow) = option_of(&request, "allow_once") {
            // A late "allow" must not make it run.
            run.agent
                .answer(&id, json!({"outcome": {"outcome": "selected", "optionId": allow}}))
                .doing("allowing late")?;
        }
        std::thread::sleep(Duration::from_millis(200));
        if exists(&run.cwd, &file) {
            return Err(format!("`touch {file}` ran after its permission request was withdrawn").into());
        }
        Ok(Verdict::Pass(format!(
            "$/cancel_request for request {id}; stopReason cancelled; a late allow ran nothing"
        )))
    })
}

fn eof(r: &mut Runner, tools: bool) -> Checked {
    let file = format!("acp-eof-{}", r.nonce());
    r.with_agent("acp-eof", |run| {
        let session = run.acp_session()?;
        if tools {
            run.prompt("p", &session, &format!("$ touch {file}"))?;
            run.answer_or_permission("p")?;
        }
        run.agent.close_stdin();
        let started = Instant::now();
        let took = run.exit_zero(started, EXIT_BOUND)?;
        if tools && exists(&run.cwd, &file) {
            return Err(format!("`touch {file}` ran though its permission was pending at EOF").into());
        }
        let with = if tools { " with a permission pending (its tool never ran)" } else { "" };
        Ok(Verdict::Pass(format!("exit 0 in {} after EOF{with}", ms(took))))
    })
}

const STOP_REASONS: &[&str] = &["end_turn", "max_tokens", "max_turn_requests", "refusal", "cancelled"];
const OPTION_KINDS: &[&str] = &["allow_once", "allow_always", "reject_once", "reject_always"];

/// The fields ACP requires of what the battery provoked.
fn shapes(recorded: &[crate::runner::Recorded]) -> Checked {
    let mut problems = Vec::new();
    let mut checked = 0;
    for rec in recorded {
        let mut prompts = std::collections::HashSet::new();
        for e in &rec.transcript {
            if e.direction == deputy_testkit::Direction::ToAgent {
                for line in e.bytes.split(|b| *b == b'\n') {
                    if let Ok(m) = serde_json::from_slice::<Value>(line)
                        && m["method"] == "session/prompt"
                    {
                        prompts.insert(m["id"].to_string());
                    }
                }
                continue;
            }
            let Ok(m) = serde_json::from_slice::<Value>(&e.bytes) else { continue };
            let p = &m["params"];
            let problem = match m["method"].as_str() {
                Some("session/update") => {
                    checked += 1;
                    if !p["sessionId"].is_string() {
                        Some("session/update without a sessionId".to_owned())
                    } else if !p["update"]["sessionUpdate"].is_string() {
                        Some("session/update without update.sessionUpdate".to_owned())
                    } else {
                        None
                    }
                }
                Some("session/request_permission") => {
                    checked += 1;
                    let options = p["options"].as_array();
                    if !p["sessionId"].is_string() || !p["toolCall"]["toolCallId"].is_string() {
                        Some("session/request_permission without sessionId or toolCall.toolCallId".to_owned())
                    } else if options.is_none_or(|o| {
                        o.is_empty()
                            || o.iter().any(|o| {
                                !o["optionId"].is_string()
                                    || !o["name"].is_string()
                                    || !OPTION_KINDS.contains(&o["kind"].as_str().unwrap_or(""))
                            })
                    }) {
                        Some(format!("bad permission options {}", p["options"]))
                    } else {
                        None
                    }
                }
                None if prompts.contains(&m["id"].to_string()) && m.get("result").is_some() => {
                    checked += 1;
                    let reason = m["result"]["stopReason"].as_str().unwrap_or("");
                    (!STOP_REASONS.contains(&reason))
                        .then(|| format!("prompt answered with stopReason {:?}", reason))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                problems.push(format!("`{}`: {problem}", rec.label));
            }
        }
    }
    if checked == 0 {
        return Ok(Verdict::Skip(
            "nothing to audit: no session/update, permission request or prompt answer".into(),
        ));
    }
    if problems.is_empty() {
        return Ok(Verdict::Pass(format!(
            "{checked} updates, permission requests and prompt answers well formed"
        )));
    }
    let more = if problems.len() > 3 { format!(" (and {} more)", problems.len() - 3) } else { String::new() };
    Err(format!("{} of {checked}: {}{more}", problems.len(), problems[..problems.len().min(3)].join("; "))
        .into())
}
