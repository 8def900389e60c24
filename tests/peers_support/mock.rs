//! Model-API mocks for the real foreign agents, on 127.0.0.1: OpenAI's
//! **Responses** API (`POST /v1/responses`, for Codex and codex-acp) and
//! Anthropic's **Messages** API (`POST /v1/messages`, for Claude Code),
//! both streaming SSE, with the shapes PEERS.md records as working.
//!
//! The mocks are stateless: each reply is chosen from a `[scenario:NAME]`
//! marker in the last user message that has one, and from whether a tool
//! result of that turn came back (Codex: after the marker; Claude Code,
//! which reorders its history: with a tool id of that turn) — so a test
//! picks a behaviour by the prompt alone:
//!
//! | scenario | first reply | after a tool result |
//! |---|---|---|
//! | `message` | the text [`MESSAGE`] | — |
//! | `exec` | run `touch ran.txt && echo hello-from-exec` (needs approval) | `Done: <the tool's output>` |
//! | `patch` | create `hello.txt` with `hi from mock\n` (Codex `apply_patch`, Claude `Write`) | `Done: …` |
//! | `edit` | change `old line` to `new line` in `notes.txt` (Codex `apply_patch` update, Claude `Edit`) | `Done: …` |
//! | `sleep` | run `sh -c 'sleep 30; echo done'` (needs approval; a grandchild) | `Done: …` |
//!
//! Any request without a marker (a title, a side question) gets a short
//! text. Every request is recorded (path and body) for assertions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// The `message` scenario's answer.
pub const MESSAGE: &str = "Hello from the mock.";
/// The `exec` scenario's command and what it prints.
pub const EXEC_COMMAND: &str = "touch ran.txt && echo hello-from-exec";
pub const EXEC_OUTPUT: &str = "hello-from-exec";
/// The `sleep` scenario's command.
pub const SLEEP_COMMAND: &str = "sh -c 'sleep 30; echo done'";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Api {
    /// OpenAI Responses, for Codex.
    Responses,
    /// Anthropic Messages, for Claude Code.
    Messages,
}

/// A running mock (it lives as long as the test process; one per test).
pub struct ModelMock {
    pub port: u16,
    pub api: Api,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

impl ModelMock {
    /// Starts a mock. `work` is the agent's working directory (Claude's
    /// edit tools take absolute paths).
    pub fn start(api: Api, work: &Path) -> ModelMock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let work = work.to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (recorded, work) = (Arc::clone(&recorded), work.clone());
                std::thread::spawn(move || serve(conn, api, &work, &recorded));
            }
        });
        ModelMock { port, api, requests }
    }

    /// Every request so far: `(request line, JSON body)`.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves one connection: requests one after another (Claude keeps the
/// connection alive; Codex opens one per request).
fn serve(conn: TcpStream, api: Api, work: &Path, recorded: &Mutex<Vec<(String, Value)>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let Some((request_line, body)) = read_request(&mut reader) else { return };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        recorded.lock().unwrap().push((request_line.clone(), body.clone()));
        if let Some(log) = std::env::var_os("DEPUTY_MOCK_LOG") {
            // Debugging aid: every request body, one per line.
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            let _ = writeln!(f, "{request_line} {body}");
        }
        let (status, content_type, payload) = if request_line.contains("/count_tokens") {
            ("200 OK", "application/json", json!({"input_tokens": 10}).to_string())
        } else if request_line.starts_with("POST /v1/responses") && api == Api::Responses {
            ("200 OK", "text/event-stream", sse(&responses_reply(&body)))
        } else if request_line.starts_with("POST /v1/messages") && api == Api::Messages {
            ("200 OK", "text/event-stream", sse(&messages_reply(&body, work)))
        } else {
            (
                "404 Not Found",
                "application/json",
                json!({"error": "the mock does not serve this"}).to_string(),
            )
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-cache\r\n\r\n",
            payload.len()
        );
        if w.write_all(head.as_bytes())
            .and_then(|_| w.write_all(payload.as_bytes()))
            .and_then(|_| w.flush())
            .is_err()
        {
            return;
        }
    }
}

/// One HTTP/1.1 request: its request line and body (`Content-Length` or chunked).
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut request_line = String::new();
    if r.read_line(&mut request_line).ok()? == 0 {
        return None;
    }
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            chunked = true;
        }
        assert!(!line.starts_with("content-encoding:"), "the mock reads uncompressed bodies only: {line}");
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some((request_line.trim_end().to_owned(), body))
}

fn sse(events: &[Value]) -> String {
    events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect()
}

/// The scenario named in `texts` (the marker's NAME).
fn scenario_in(text: &str) -> Option<String> {
    let start = text.find("[scenario:")? + "[scenario:".len();
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_owned())
}

/// The tool's output shown in the final message, cut short.
fn done_text(output: &str) -> String {
    let mut end = output.len().min(300);
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!("Done: {}", &output[..end])
}

// ---------------------------------------------------------------------------
// OpenAI Responses (Codex).

fn responses_reply(body: &Value) -> Vec<Value> {
    let input = body["input"].as_array().cloned().unwrap_or_default();
    let marked = input.iter().rposition(|item| {
        item["type"] == "message"
            && item["role"] == "user"
            && scenario_in(&item["content"].to_string()).is_some()
    });
    let Some(at) = marked else { return responses_message("ok") };
    let scenario = scenario_in(&input[at]["content"].to_string()).unwrap();
    let outputs: Vec<&Value> = input[at..]
        .iter()
        .filter(|i| matches!(i["type"].as_str(), Some("function_call_output" | "custom_tool_call_output")))
        .collect();
    if let Some(last) = outputs.last() {
        let text = match &last["output"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return responses_message(&done_text(&text));
    }
    // Call ids unique in the conversation (a stateless mock: from its length).
    let n = input.len();
    let exec = |cmd: &str, yield_ms: u64| {
        responses_call(
            json!({"type": "function_call", "call_id": format!("call_exec_{n}"), "name": "exec_command",
            "arguments": json!({"cmd": cmd, "sandbox_permissions": "require_escalated",
                                "justification": format!("mock wants to run {cmd}"), "yield_time_ms": yield_ms}).to_string()}),
        )
    };
    let patch = |text: &str| {
        responses_call(
            json!({"type": "custom_tool_call", "call_id": format!("call_patch_{n}"), "name": "apply_patch", "input": text}),
        )
    };
    match scenario.as_str() {
        "message" => responses_message(MESSAGE),
        "exec" => exec(EXEC_COMMAND, 2000),
        // The tool call blocks on the command (it never yields early).
        "sleep" => exec(SLEEP_COMMAND, 30_000),
        "patch" => patch("*** Begin Patch\n*** Add File: hello.txt\n+hi from mock\n*** End Patch\n"),
        "edit" => {
            patch("*** Begin Patch\n*** Update File: notes.txt\n@@\n-old line\n+new line\n*** End Patch\n")
        }
        other => responses_message(&format!("the mock has no scenario {other:?}")),
    }
}

fn responses_done() -> Value {
    json!({"type": "response.completed", "response": {"id": "resp_mock_1", "usage": {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}}})
}

fn responses_message(text: &str) -> Vec<Value> {
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let delta = |d: &str| json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": d});
    vec![
        json!({"type": "response.created", "response": {"id": "resp_mock_1"}}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "message", "role": "assistant", "id": "msg_mock", "content": []}}),
        delta(&text[..cut]),
        delta(&text[cut..]),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "message", "role": "assistant",
               "id": "msg_mock", "content": [{"type": "output_text", "text": text}]}}),
        responses_done(),
    ]
}

fn responses_call(item: Value) -> Vec<Value> {
    vec![
        json!({"type": "response.created", "response": {"id": "resp_mock_1"}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        responses_done(),
    ]
}

// ---------------------------------------------------------------------------
// Anthropic Messages (Claude Code).

fn messages_reply(body: &Value, work: &Path) -> Vec<Value> {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let blocks: Vec<Value> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| match &m["content"] {
            Value::Array(b) => b.clone(),
            other => vec![json!({"type": "text", "text": other})],
        })
        .collect();
    // Claude Code rewrites its history (tool results first, the new prompt
    // last, in one message), so order says little: the turn is the number
    // of prompts with a marker, and the mock's tool ids carry it.
    let markers: Vec<String> = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| scenario_in(b["text"].as_str()?))
        .collect();
    let Some(scenario) = markers.last().cloned() else { return messages_text(body, "ok") };
    let turn = format!("toolu_t{}_", markers.len());
    let results: Vec<&Value> = blocks
        .iter()
        .filter(|b| {
            b["type"] == "tool_result" && b["tool_use_id"].as_str().is_some_and(|id| id.starts_with(&turn))
        })
        .collect();
    if let Some(last) = results.last() {
        let text = match &last["content"] {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => {
                blocks.iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n")
            }
            other => other.to_string(),
        };
        return messages_text(body, &done_text(&text));
    }
    let file = |name: &str| -> String { PathBuf::from(work).join(name).to_string_lossy().into_owned() };
    let tool = |name: &str, input: Value| messages_tool(body, &format!("{turn}{scenario}"), name, input);
    match scenario.as_str() {
        "message" => messages_text(body, MESSAGE),
        "exec" => tool("Bash", json!({"command": EXEC_COMMAND, "description": "Create a marker file"})),
        "sleep" => tool("Bash", json!({"command": SLEEP_COMMAND, "description": "Wait"})),
        "patch" => tool("Write", json!({"file_path": file("hello.txt"), "content": "hi from mock\n"})),
        "edit" => tool(
            "Edit",
            json!({"file_path": file("notes.txt"), "old_string": "old line", "new_string": "new line"}),
        ),
        other => messages_text(body, &format!("the mock has no scenario {other:?}")),
    }
}

fn messages_start(body: &Value) -> Value {
    json!({"type": "message_start", "message": {"id": "msg_mock_1", "type": "message", "role": "assistant",
        "model": body["model"], "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
}

fn messages_end(stop: &str) -> [Value; 2] {
    [
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ]
}

fn messages_text(body: &Value, text: &str) -> Vec<Value> {
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let delta = |t: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}});
    let mut evs = vec![
        messages_start(body),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        delta(&text[..cut]),
        delta(&text[cut..]),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    evs.extend(messages_end("end_turn"));
    evs
}

fn messages_tool(body: &Value, id: &str, name: &str, input: Value) -> Vec<Value> {
    let mut evs = vec![
        messages_start(body),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
        json!({"type": "content_block_stop", "index": 0}),
    ];
    evs.extend(messages_end("tool_use"));
    evs
}
