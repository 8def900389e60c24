//! The `openai:MODEL` brain end to end: the real `deputy agent` talks to a
//! small HTTP server on 127.0.0.1 (started here) that plays recorded
//! Chat Completions SSE streams and records the requests.

mod agent_support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_support::*;
use serde_json::{Value, json};

/// What the server answers to one request.
#[derive(Clone)]
enum Reply {
    /// 200 with these SSE events (each `data` payload), then close.
    Sse(Vec<String>),
    /// 200 with these raw body pieces, a pause after each.
    Raw(Vec<(String, u64)>),
    /// This status, headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// 200, these events, then silence until the client closes the connection.
    Hold(Vec<String>),
}

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    /// Used when `replies` is empty.
    fallback: Option<Reply>,
    requests: Vec<(Vec<String>, Value)>,
    closed_by_client: Option<Instant>,
}

struct Server {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State { replies: replies.into(), ..State::default() }));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve(conn, st));
            }
        });
        Server { port, state }
    }

    fn fallback(self, reply: Reply) -> Server {
        self.state.lock().unwrap().fallback = Some(reply);
        self
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn bodies(&self) -> Vec<Value> {
        self.state.lock().unwrap().requests.iter().map(|r| r.1.clone()).collect()
    }

    fn headers(&self, i: usize) -> Vec<String> {
        self.state.lock().unwrap().requests[i].0.clone()
    }
}

fn serve(conn: TcpStream, st: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut head = Vec::new();
    let mut len = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        head.push(line);
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    assert!(head[0].starts_with("POST /v1/chat/completions "), "{head:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    let reply = {
        let mut s = st.lock().unwrap();
        s.requests.push((head, body));
        s.replies.pop_front().or_else(|| s.fallback.clone()).expect("an unexpected request")
    };
    let mut w = conn;
    let sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    let events = |evs: &[String]| evs.iter().map(|e| format!("data: {e}\n\n")).collect::<String>();
    match reply {
        Reply::Sse(evs) => {
            let _ = write!(w, "{sse_head}{}", events(&evs));
        }
        Reply::Raw(pieces) => {
            let _ = write!(w, "{sse_head}");
            for (p, pause) in pieces {
                let _ = w.write_all(p.as_bytes());
                let _ = w.flush();
                std::thread::sleep(Duration::from_millis(pause));
            }
        }
        Reply::Status(code, headers, body) => {
            let mut h =
                format!("HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            let _ = write!(w, "{h}\r\n{body}");
        }
        Reply::Hold(evs) => {
            let _ = write!(w, "{sse_head}{}", events(&evs));
            let _ = w.flush();
            // Wait for the client to close the connection.
            let mut buf = [0u8; 64];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            st.lock().unwrap().closed_by_client = Some(Instant::now());
        }
    }
}

// ---------------------------------------------------------------------------
// Recorded chunks.

fn chunk(delta: Value) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "model": "test",
           "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    .to_string()
}

fn finish(reason: &str) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        .to_string()
}

fn usage(input: u64, output: u64) -> String {
    json!({"id": "c", "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})
        .to_string()
}

fn done() -> String {
    "[DONE]".to_owned()
}

/// A plain answer, in pieces, with usage.
fn answer(pieces: &[&str]) -> Reply {
    let mut evs = vec![chunk(json!({"role": "assistant", "content": ""}))];
    evs.extend(pieces.iter().map(|p| chunk(json!({"content": p}))));
    evs.extend([finish("stop"), usage(20, 5), done()]);
    Reply::Sse(evs)
}

/// Tool calls (`(id, name, arguments JSON)`), arguments split in two pieces.
fn tool_calls(calls: &[(&str, &str, Value)]) -> Reply {
    let mut evs = vec![chunk(json!({"role": "assistant", "content": null}))];
    for (i, (id, name, args)) in calls.iter().enumerate() {
        let args = args.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        evs.push(chunk(json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                                                "function": {"name": name, "arguments": a}}]})));
        evs.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": b}}]})));
    }
    evs.extend([finish("tool_calls"), usage(30, 10), done()]);
    Reply::Sse(evs)
}

fn agent_for(server: &Server, extra: &[&str]) -> Agent {
    let mut s = Spawn::new()
        .arg("--model")
        .arg("openai:test")
        .arg("--base-url")
        .arg(server.url())
        .arg("--model-retry-backoff")
        .arg("10ms")
        .env("DEPUTY_TEST_KEY", "sk-secret-test-key");
    if !extra.contains(&"--model-idle-timeout") {
        s = s.arg("--model-idle-timeout").arg("2s");
    }
    s.cmd.env_remove("OPENAI_API_KEY");
    for a in extra {
        s = s.arg(a);
    }
    s.spawn()
}

fn events_of(agent: &Agent, turn: &str, kind: &str) -> Vec<Value> {
    agent
        .lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|m| is_event(m, kind) && m["params"]["id"] == turn)
        .map(|m| m["params"]["msg"].clone())
        .collect()
}

fn roles(body: &Value) -> Vec<String> {
    body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap().to_owned()).collect()
}

// ---------------------------------------------------------------------------

#[test]
fn plain_answer_streams_deltas_usage_and_resumes_with_it() {
    let server = Server::start(vec![Reply::Sse(vec![
        chunk(json!({"role": "assistant", "reasoning_content": "thinking"})),
        chunk(json!({"content": "Hel"})),
        chunk(json!({"content": "lo!"})),
        finish("stop"),
        usage(12, 3),
        done(),
    ])]);
    let mut a = agent_for(&server, &["--api-key-env", "DEPUTY_TEST_KEY"]);
    let configured = a.start(json!({}));
    assert_eq!(configured["model"], "openai:test");
    a.say("t1", "say hello");
    let end = a.turn_end("t1");
    assert_eq!(end["type"], "task_complete", "{end}");
    assert_eq!(end["last_agent_message"], "Hello!");
    let deltas: Vec<String> = events_of(&a, "t1", "agent_message_delta")
        .iter()
        .map(|e| e["delta"].as_str().unwrap().into())
        .collect();
    assert_eq!(deltas, ["Hel", "lo!"]);
    assert_eq!(events_of(&a, "t1", "agent_reasoning_delta")[0]["delta"], "thinking");
    let tc = events_of(&a, "t1", "token_count");
    assert_eq!(tc.len(), 1);
    assert_eq!(tc[0]["info"]["last_token_usage"]["input_tokens"], 12);
    assert_eq!(tc[0]["info"]["total_token_usage"]["total_tokens"], 15);

    let bodies = server.bodies();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert_eq!(b["model"], "test");
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["tools"][0]["function"]["name"], "shell");
    assert_eq!(b["tools"][1]["function"]["name"], "apply_patch");
    assert_eq!(roles(b), ["system", "user"]);
    assert_eq!(b["messages"][1]["content"], "say hello");
    let headers = server.headers(0).join("\n").to_ascii_lowercase();
    assert!(headers.contains("authorization: bearer sk-secret-test-key"), "{headers}");
    assert!(!a.stderr().contains("sk-secret"), "the key leaked to stderr");

    let session_id = configured["session_id"].as_str().unwrap().to_owned();
    a.shutdown_and_wait();
    let home = a.home.clone();
    // Resume: the usage comes back from the rollout.
    let mut b2 = Spawn::new().with_home(&home).arg("--model").arg("openai:test").spawn();
    let c2 = b2.start(json!({"initial_history": {"type": "resumed", "from": {"session_id": session_id}}}));
    assert_eq!(c2["token_usage"]["total_token_usage"]["total_tokens"], 15, "{c2}");
    b2.shutdown_and_wait();
}

#[test]
fn tool_call_approved_runs_and_feeds_the_result_back() {
    let server = Server::start(vec![
        tool_calls(&[("call_a", "shell", json!({"command": ["sh", "-c", "echo ran > out.txt; echo hi"]}))]),
        answer(&["Done."]),
    ]);
    let mut a = agent_for(&server, &[]);
    a.start(json!({}));
    a.say("t1", "write out.txt");
    let req = a.approval();
    assert_eq!(req["method"], "approval/exec");
    assert_eq!(req["params"]["call_id"], "call_a");
    assert_eq!(req["params"]["command"], json!(["sh", "-c", "echo ran > out.txt; echo hi"]));
    a.answer(&req, "approved");
    let end = a.event("exec_command_end");
    assert_eq!(end["msg"]["exit_code"], 0);
    let fin = a.turn_end("t1");
    assert_eq!(fin["last_agent_message"], "Done.");
    assert_eq!(std::fs::read_to_string(a.cwd.join("out.txt")).unwrap(), "ran\n");
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(roles(&bodies[1]), ["system", "user", "assistant", "tool"]);
    let m = &bodies[1]["messages"];
    assert_eq!(m[2]["tool_calls"][0]["id"], "call_a");
    assert_eq!(m[2]["tool_calls"][0]["function"]["name"], "shell");
    assert_eq!(m[3]["tool_call_id"], "call_a");
    assert!(m[3]["content"].as_str().unwrap().contains("exit code: 0\nhi"), "{}", m[3]);
    assert_eq!(events_of(&a, "t1", "token_count").len(), 2);
    a.shutdown_and_wait();
}

#[test]
fn tool_call_denied_does_not_run_and_the_model_is_told() {
    let server = Server::start(vec![
        tool_calls(&[("call_d", "shell", json!({"command": ["touch", "nope.txt"]}))]),
        answer(&["OK, I won't."]),
    ]);
    let mut a = agent_for(&server, &[]);
    a.start(json!({}));
    a.say("t1", "touch a file");
    let req = a.approval();
    a.answer(&req, "denied");
    let fin = a.turn_end("t1");
    assert_eq!(fin["type"], "task_complete");
    assert!(events_of(&a, "t1", "exec_command_begin").is_empty());
    assert!(!a.cwd.join("nope.txt").exists());
    let bodies = server.bodies();
    let m = &bodies[1]["messages"];
    assert_eq!(m[3]["tool_call_id"], "call_d");
    assert!(m[3]["content"].as_str().unwrap().contains("denied"), "{}", m[3]);
    a.shutdown_and_wait();
}

#[test]
fn apply_patch_tool_call_writes_the_file() {
    let patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello from the model\n*** End Patch\n";
    let server = Server::start(vec![
        tool_calls(&[("call_p", "apply_patch", json!({"patch": patch}))]),
        answer(&["Created hello.txt."]),
    ]);
    let mut a = agent_for(&server, &[]);
    a.start(json!({}));
    a.say("t1", "create hello.txt");
    let req = a.approval();
    assert_eq!(req["method"], "approval/patch");
    a.answer(&req, "approved");
    let end = a.event("patch_apply_end");
    assert_eq!(end["msg"]["success"], true);
    a.turn_end("t1");
    assert_eq!(std::fs::read_to_string(a.cwd.join("hello.txt")).unwrap(), "hello from the model\n");
    let bodies = server.bodies();
    assert!(bodies[1]["messages"][3]["content"].as_str().unwrap().contains("Success"));
    a.shutdown_and_wait();
}

#[test]
fn two_tool_calls_in_one_response_are_both_asked_at_once() {
    let server = Server::start(vec![
        tool_calls(&[
            ("call_1", "shell", json!({"command": ["echo", "one"]})),
            ("call_2", "shell", json!({"command": ["echo", "two"]})),
        ]),
        answer(&["Both ran."]),
    ]);
    let mut a = agent_for(&server, &[]);
    a.start(json!({}));
    a.say("t1", "run two");
    let r1 = a.approval();
    let r2 = a.approval();
    assert_eq!(r1["params"]["call_id"], "call_1");
    assert_eq!(r2["params"]["call_id"], "call_2");
    a.answer(&r2, "approved");
    a.answer(&r1, "approved");
    a.turn_end("t1");
    let ends = events_of(&a, "t1", "exec_command_end");
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[0]["call_id"], "call_1");
    assert_eq!(ends[1]["call_id"], "call_2");
    let bodies = server.bodies();
    assert_eq!(roles(&bodies[1]), ["system", "user", "assistant", "tool", "tool"]);
    assert_eq!(bodies[1]["messages"][2]["tool_calls"].as_array().unwrap().len(), 2);
    a.shutdown_and_wait();
}

/// Runs one turn against `server`; returns the turn's end, its `stream_error`
/// and `error` messages.
fn failing_turn(server: &Server, extra: &[&str]) -> (Value, Vec<String>, Vec<String>, Agent) {
    let mut a = agent_for(server, extra);
    a.start(json!({"approval_policy": "never_ask"}));
    a.say("t1", "hi");
    let end = a.turn_end("t1");
    let msgs = |kind| -> Vec<String> {
        events_of(&a, "t1", kind).iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
    };
    let (retries, errors) = (msgs("stream_error"), msgs("error"));
    (end, retries, errors, a)
}

#[test]
fn http_401_is_not_retried() {
    let server = Server::start(vec![Reply::Status(
        401,
        vec![("content-type", "application/json".into())],
        json!({"error": {"message": "Incorrect API key provided"}}).to_string(),
    )]);
    let (end, retries, errors, mut a) = failing_turn(&server, &["--api-key-env", "DEPUTY_TEST_KEY"]);
    assert_eq!(end["type"], "task_complete");
    assert!(retries.is_empty(), "{retries:?}");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("HTTP 401") && errors[0].contains("Incorrect API key"), "{errors:?}");
    assert!(errors[0].contains("$DEPUTY_TEST_KEY") && !errors[0].contains("sk-secret"), "{errors:?}");
    assert_eq!(server.bodies().len(), 1);
    a.shutdown_and_wait();
}

#[test]
fn http_429_is_retried_after_retry_after_then_succeeds() {
    let too_many = Reply::Status(429, vec![("retry-after", "0".into())], "slow down".into());
    let server = Server::start(vec![too_many.clone(), too_many, answer(&["finally"])]);
    let (end, retries, errors, mut a) = failing_turn(&server, &[]);
    assert_eq!(end["last_agent_message"], "finally");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries[0].contains("HTTP 429") && retries[0].contains("retry 1/3"), "{retries:?}");
    assert!(retries[1].contains("retry 2/3"), "{retries:?}");
    assert_eq!(server.bodies().len(), 3);
    a.shutdown_and_wait();
}

#[test]
fn http_5xx_is_retried_three_times_then_the_turn_ends_with_an_error() {
    let server = Server::start(vec![]).fallback(Reply::Status(503, vec![], "overloaded".into()));
    let (end, retries, errors, mut a) = failing_turn(&server, &[]);
    assert_eq!(end["type"], "task_complete");
    assert_eq!(retries.len(), 3, "{retries:?}");
    assert!(retries[2].contains("HTTP 503") && retries[2].contains("retry 3/3"), "{retries:?}");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("HTTP 503") && errors[0].contains("gave up after 3 retries"), "{errors:?}");
    assert_eq!(server.bodies().len(), 4);
    a.shutdown_and_wait();
}

#[test]
fn unreachable_server_is_retried_then_reported() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = Server { port, state: Arc::default() };
    let (end, retries, errors, mut a) = failing_turn(&server, &[]);
    assert_eq!(end["type"], "task_complete");
    assert_eq!(retries.len(), 3, "{retries:?}");
    assert!(errors[0].contains("cannot reach the model server"), "{errors:?}");
    a.shutdown_and_wait();
}

#[test]
fn malformed_sse_ends_the_turn_with_an_error() {
    let server = Server::start(vec![Reply::Sse(vec![chunk(json!({"content": "ok "})), "{oops".into()])]);
    let (end, retries, errors, mut a) = failing_turn(&server, &[]);
    assert_eq!(end["type"], "task_complete");
    assert!(retries.is_empty());
    assert!(errors[0].contains("malformed SSE"), "{errors:?}");
    a.shutdown_and_wait();
}

#[test]
fn a_stream_ending_early_ends_the_turn_with_an_error() {
    let server = Server::start(vec![Reply::Sse(vec![chunk(json!({"content": "half"}))])]);
    let (_, _, errors, mut a) = failing_turn(&server, &[]);
    assert!(errors[0].contains("ended before the response was complete"), "{errors:?}");
    a.shutdown_and_wait();
}

#[test]
fn a_stalled_stream_hits_the_idle_timeout() {
    let first = format!("data: {}\n\n", chunk(json!({"content": "wait…"})));
    let server = Server::start(vec![Reply::Raw(vec![(first, 5_000)])]);
    let t0 = Instant::now();
    let (end, _, errors, mut a) = failing_turn(&server, &["--model-idle-timeout", "300ms"]);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(end["type"], "task_complete");
    assert!(errors[0].contains("stalled"), "{errors:?}");
    a.shutdown_and_wait();
}

#[test]
fn interrupt_cancels_the_http_stream_at_once() {
    let server = Server::start(vec![Reply::Hold(vec![chunk(json!({"content": "streaming"}))])]);
    let mut a = agent_for(&server, &[]);
    a.start(json!({}));
    a.say("t1", "go on forever");
    a.event("agent_message_delta");
    let t0 = Instant::now();
    let id = a.interrupt("stop");
    a.result(id);
    let end = a.turn_end("t1");
    assert_eq!(end["type"], "turn_aborted");
    assert_eq!(end["reason"], "interrupted");
    let deadline = Instant::now() + Duration::from_secs(2);
    let closed = loop {
        if let Some(at) = server.state.lock().unwrap().closed_by_client {
            break at;
        }
        assert!(Instant::now() < deadline, "the HTTP connection was not closed");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(closed.duration_since(t0) < Duration::from_millis(500), "{:?}", closed.duration_since(t0));
    a.shutdown_and_wait();
}

#[test]
fn the_model_call_cap_ends_a_runaway_turn() {
    let server =
        Server::start(vec![]).fallback(tool_calls(&[("call_x", "shell", json!({"command": ["true"]}))]));
    let (end, _, errors, mut a) = failing_turn(&server, &["--max-model-calls", "3"]);
    assert_eq!(end["type"], "task_complete");
    assert_eq!(server.bodies().len(), 3);
    assert!(errors.iter().any(|e| e.contains("cap of 3 model calls")), "{errors:?}");
    a.shutdown_and_wait();
}

#[test]
fn session_start_can_name_the_endpoint() {
    let server = Server::start(vec![answer(&["from session/start"])]);
    let mut a = Spawn::new().spawn(); // default brain: shell
    let c = a.start(json!({"model": {"name": "openai:other", "base_url": server.url()}}));
    assert_eq!(c["model"], "openai:other");
    a.say("t1", "hi");
    assert_eq!(a.turn_end("t1")["last_agent_message"], "from session/start");
    assert_eq!(server.bodies()[0]["model"], "other");
    a.shutdown_and_wait();
}

#[test]
fn exec_runs_a_turn_against_the_endpoint() {
    let server = Server::start(vec![
        tool_calls(&[("call_e", "shell", json!({"command": ["echo", "hello from the tool"]}))]),
        answer(&["All done."]),
    ]);
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["exec", "--model", "openai:test", "--base-url", &server.url(), "--approve", "exec"])
        .arg("--cwd")
        .arg(cwd.path())
        .arg("list the files")
        .env("DEPUTY_HOME", home.path())
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("hello from the tool"), "{stdout}");
    assert!(stdout.contains("All done."), "{stdout}");
    assert_eq!(server.bodies().len(), 2);
}

#[test]
fn tool_calls_of_the_openai_brain_run_in_the_sandbox() {
    // The agent reaches the model server; its tools may not (not even that
    // server), nor write outside the workspace.
    let server = Server::start(vec![]);
    let port = server.port;
    let connect = format!("echo x > /dev/tcp/127.0.0.1/{port}");
    let server = server.fallback(answer(&["unused"]));
    server.state.lock().unwrap().replies = vec![
        tool_calls(&[
            ("call_w", "shell", json!({"command": ["touch", "../outside"]})),
            ("call_n", "shell", json!({"command": ["bash", "-c", connect]})),
            ("call_i", "shell", json!({"command": ["touch", "inside"]})),
        ]),
        answer(&["Done."]),
    ]
    .into();
    let dir = tempdir_outside_scratch();
    let ws = dir.path().canonicalize().unwrap().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let mut a = agent_for(&server, &[]);
    a.start(json!({"cwd": ws, "approval_policy": "never_ask", "sandbox": "workspace_write"}));
    a.say("t1", "try things");
    assert_eq!(a.turn_end("t1")["last_agent_message"], "Done.");
    let ends = events_of(&a, "t1", "exec_command_end");
    let code = |id: &str| ends.iter().find(|e| e["call_id"] == id).unwrap()["exit_code"].as_i64().unwrap();
    assert_ne!(code("call_w"), 0);
    assert_ne!(code("call_n"), 0);
    assert_eq!(code("call_i"), 0);
    assert!(ws.join("inside").exists());
    assert!(!dir.path().join("outside").exists());
    // Two model calls only: the tool's connection never reached the server.
    assert_eq!(server.bodies().len(), 2);
    let tool = &server.bodies()[1]["messages"][3];
    assert!(tool["content"].as_str().unwrap().contains("Permission denied"), "{tool}");
    a.shutdown_and_wait();
}
