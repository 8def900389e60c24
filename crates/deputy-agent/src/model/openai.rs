//! The `openai:MODEL` brain: any OpenAI-compatible Chat Completions endpoint
//! with streaming and tool calls (OpenAI, Ollama, llama.cpp's server, vLLM,
//! LM Studio…).
//!
//! Each model call is one `POST {base_url}/chat/completions` with
//! `stream: true` and `stream_options: {include_usage: true}`, the system
//! prompt and the conversation as `messages`, and two tools declared as
//! functions: `shell` (`{"command": [string]}`) and `apply_patch`
//! (`{"patch": string}`). The SSE stream is mapped onto [`ModelEvent`]s:
//! `delta.content` → message deltas, `delta.reasoning_content` (llama.cpp,
//! vLLM, DeepSeek) or `delta.reasoning` (Ollama) → reasoning deltas,
//! `delta.tool_calls` fragments → tool calls assembled by `index`, `usage` →
//! token counts.
//!
//! - **Key**: read from the environment variable `api_key_env` (default
//!   `OPENAI_API_KEY`) at each call and sent as `Authorization: Bearer …`;
//!   no header when it is unset or empty (local servers need none). The key
//!   is never logged nor put in an error message.
//! - **Start-up**: nothing is done until the first call, which builds the
//!   HTTP client (rustls, webpki roots, HTTP/1.1).
//! - **Errors**: connection failures, 429 (its `Retry-After` honoured up to
//!   a cap) and 5xx are retryable: the engine retries them up to
//!   [`MAX_RETRIES`](crate::model::MAX_RETRIES) times with exponential
//!   backoff, each retry a `stream_error` event. 400/401/403/404…, a
//!   malformed SSE stream, a stream that stays silent longer than the idle
//!   timeout, or one that ends before the response is complete end the turn
//!   with an `error` event.
//! - **Interrupt**: dropping the stream drops the response, which closes the
//!   connection at once.

mod sse;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use deputy_protocol::{InputItem, RolloutItem};
use futures::{Stream, StreamExt as _, stream};
use serde_json::{Value, json};
use tracing::debug;

pub use sse::{ChunkAssembler, SseParser};

use super::{Model, ModelError, ModelEvent, ModelStream, Prompt};

/// The prefix of this brain's model names.
pub const PREFIX: &str = "openai:";
/// The default endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The default environment variable holding the API key.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";

/// How the HTTP side behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiSettings {
    /// The endpoint, up to `/v1` (default [`DEFAULT_BASE_URL`]).
    pub base_url: Option<String>,
    /// The environment variable holding the API key (default
    /// [`DEFAULT_API_KEY_ENV`]).
    pub api_key_env: Option<String>,
    /// Connecting to the server (default 10 s).
    pub connect_timeout: Duration,
    /// The longest silence allowed: before the response headers, and between
    /// two chunks of the stream (default 60 s).
    pub idle_timeout: Duration,
    /// The first retry's delay; doubled at each retry (default 500 ms).
    pub backoff: Duration,
    /// The longest `Retry-After` honoured (default 30 s).
    pub max_retry_after: Duration,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            base_url: None,
            api_key_env: None,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// The `openai:MODEL` brain.
#[derive(Debug)]
pub struct OpenAiModel {
    name: String,
    model: String,
    url: String,
    api_key_env: String,
    cwd: PathBuf,
    settings: OpenAiSettings,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl OpenAiModel {
    /// `name` is `openai:MODEL`; `cwd` goes into the system prompt. Cheap:
    /// the HTTP client is built on the first call.
    pub fn new(name: &str, cwd: PathBuf, settings: OpenAiSettings) -> Result<OpenAiModel, String> {
        let model = name.strip_prefix(PREFIX).unwrap_or(name);
        if model.trim().is_empty() || model == "*" {
            return Err(format!("`{name}`: name the model after `{PREFIX}`, e.g. {PREFIX}gpt-4o-mini"));
        }
        let base = settings.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("base URL `{base}` must start with http:// or https://"));
        }
        let api_key_env = settings.api_key_env.clone().unwrap_or_else(|| DEFAULT_API_KEY_ENV.to_owned());
        Ok(OpenAiModel {
            name: format!("{PREFIX}{model}"),
            model: model.to_owned(),
            url: format!("{base}/chat/completions"),
            api_key_env,
            cwd,
            settings,
            client: OnceLock::new(),
        })
    }

    fn client(&self) -> Result<&reqwest::Client, ModelError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(self.settings.connect_timeout)
                    .user_agent(concat!("deputy/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("cannot set up the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(|e| ModelError::fatal(e.clone()))
    }

    /// The request body for this prompt.
    pub fn body(&self, prompt: &Prompt) -> Value {
        json!({
            "model": self.model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": messages(&system_prompt(&self.cwd), &prompt.history),
            "tools": tools(),
        })
    }

    async fn send(&self, prompt: &Prompt) -> Result<reqwest::Response, ModelError> {
        let client = self.client()?;
        let mut req = client.post(&self.url).header("content-type", "application/json");
        if let Some(key) = std::env::var(&self.api_key_env).ok().filter(|k| !k.is_empty()) {
            req = req.bearer_auth(key);
        }
        let body = serde_json::to_vec(&self.body(prompt)).map_err(|e| ModelError::fatal(e.to_string()))?;
        debug!(url = %self.url, bytes = body.len(), "model call");
        let idle = self.settings.idle_timeout;
        let resp = match tokio::time::timeout(idle, req.body(body).send()).await {
            Err(_) => {
                return Err(ModelError::fatal(format!(
                    "the model server at {} did not answer within {}",
                    self.url,
                    secs(idle)
                )));
            }
            Ok(Err(e)) => {
                let what = if e.is_connect() { "cannot reach" } else { "request failed to" };
                return Err(ModelError::retryable(format!(
                    "{what} the model server at {}: {}",
                    self.url,
                    error_chain(&e)
                )));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s).min(self.settings.max_retry_after));
        let text = match tokio::time::timeout(idle, resp.text()).await {
            Ok(Ok(t)) => t,
            _ => String::new(),
        };
        let detail = error_detail(&text);
        let code = status.as_u16();
        let msg = match code {
            401 | 403 => format!(
                "the model server refused the request (HTTP {code}): {detail}; check the API key in ${}",
                self.api_key_env
            ),
            429 => format!("the model server is rate limiting (HTTP 429): {detail}"),
            _ => format!("the model server answered HTTP {code}: {detail}"),
        };
        if code == 429 || status.is_server_error() {
            Err(ModelError { retry_after, ..ModelError::retryable(msg) })
        } else {
            Err(ModelError::fatal(msg))
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// `error.message` of a JSON error body, else the body's start.
fn error_detail(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        e.get("message").and_then(Value::as_str).or(e.as_str()).map(str::to_owned)
    });
    let text = from_json.unwrap_or_else(|| body.trim().to_owned());
    if text.is_empty() {
        return "(no details)".to_owned();
    }
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The system prompt.
pub fn system_prompt(cwd: &std::path::Path) -> String {
    format!(
        "You are Deputy, a coding agent working in the directory {}.\n\
         Use the `shell` tool to run a command (an argv array, run without a shell: \
         use [\"sh\", \"-c\", \"…\"] for pipes or redirections) and the `apply_patch` tool to \
         create, edit or delete files. The user may deny a command or a patch; then do not insist. \
         Patches use this format:\n\
         *** Begin Patch\n*** Add File: path/new.txt\n+line\n*** Update File: path/old.txt\n@@\n context\n-old\n+new\n\
         *** Delete File: path/gone.txt\n*** End Patch\n\
         When the task is done, answer briefly without calling a tool.",
        cwd.display()
    )
}

/// The two tools, as Chat Completions function declarations.
pub fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "shell",
            "description": "Run a command in the working directory and get its exit code and output.",
            "parameters": {"type": "object", "properties": {
                "command": {"type": "array", "items": {"type": "string"},
                            "description": "The argv, e.g. [\"ls\", \"-la\"]"}
            }, "required": ["command"]}
        }},
        {"type": "function", "function": {
            "name": "apply_patch",
            "description": "Create, update or delete files with a patch (*** Begin Patch … *** End Patch).",
            "parameters": {"type": "object", "properties": {
                "patch": {"type": "string", "description": "The whole patch text"}
            }, "required": ["patch"]}
        }}
    ])
}

/// The conversation as Chat Completions messages. A response's message and
/// tool calls make one assistant message; every tool call gets a `tool`
/// answer (one that never ran, e.g. in an interrupted turn, is answered
/// "not run").
pub fn messages(system: &str, history: &[RolloutItem]) -> Vec<Value> {
    let mut out = vec![json!({"role": "system", "content": system})];
    let mut unanswered: Vec<String> = Vec::new();
    let answer_missing = |out: &mut Vec<Value>, unanswered: &mut Vec<String>| {
        for id in unanswered.drain(..) {
            out.push(json!({"role": "tool", "tool_call_id": id, "content": "the call was not run (the turn ended)"}));
        }
    };
    for item in history {
        match item {
            RolloutItem::UserInput { items, .. } => {
                answer_missing(&mut out, &mut unanswered);
                let text: Vec<&str> = items
                    .iter()
                    .map(|i| match i {
                        InputItem::Text { text } => text.as_str(),
                    })
                    .collect();
                out.push(json!({"role": "user", "content": text.join("\n")}));
            }
            RolloutItem::AgentMessage { message, .. } => {
                answer_missing(&mut out, &mut unanswered);
                out.push(json!({"role": "assistant", "content": message}));
            }
            RolloutItem::ToolCall { call_id, name, arguments, .. } => {
                let args = match arguments {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                let call =
                    json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": args}});
                let open = out
                    .last_mut()
                    .filter(|m| m["role"] == "assistant" && unanswered.len() == tool_calls_len(m));
                match open {
                    Some(m) => match m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => m["tool_calls"] = json!([call]),
                    },
                    None => {
                        answer_missing(&mut out, &mut unanswered);
                        out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
                    }
                }
                unanswered.push(call_id.clone());
            }
            RolloutItem::ToolResult { call_id, output, .. } => {
                unanswered.retain(|id| id != call_id);
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            _ => {}
        }
    }
    answer_missing(&mut out, &mut unanswered);
    out
}

fn tool_calls_len(m: &Value) -> usize {
    m.get("tool_calls").and_then(Value::as_array).map_or(0, Vec::len)
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Phase {
    Start,
    Streaming(ByteStream),
    Done,
}

struct Call<'a> {
    model: &'a OpenAiModel,
    prompt: &'a Prompt,
    phase: Phase,
    queue: VecDeque<Result<ModelEvent, ModelError>>,
    parser: SseParser,
    chunks: ChunkAssembler,
}

impl Call<'_> {
    fn fail(&mut self, e: ModelError) -> Option<Result<ModelEvent, ModelError>> {
        self.phase = Phase::Done;
        self.queue.clear();
        Some(Err(e))
    }

    /// Handles event payloads; `true` once `[DONE]` was seen.
    fn handle(&mut self, data: Vec<String>) -> Result<bool, ModelError> {
        let mut out = Vec::new();
        let mut done = false;
        for d in data {
            self.chunks.data(&d, &mut out)?;
            if d.trim() == "[DONE]" {
                done = true;
                break;
            }
        }
        self.queue.extend(out.into_iter().map(Ok));
        Ok(done)
    }

    fn complete(&mut self) {
        self.phase = Phase::Done;
        self.queue.extend(self.chunks.finish().into_iter().map(Ok));
    }

    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            match &mut self.phase {
                Phase::Done => return None,
                Phase::Start => match self.model.send(self.prompt).await {
                    Ok(resp) => self.phase = Phase::Streaming(Box::pin(resp.bytes_stream())),
                    Err(e) => return self.fail(e),
                },
                Phase::Streaming(body) => {
                    let idle = self.model.settings.idle_timeout;
                    match tokio::time::timeout(idle, body.next()).await {
                        Err(_) => {
                            return self.fail(ModelError::fatal(format!(
                                "the model stream stalled: no data for {}",
                                secs(idle)
                            )));
                        }
                        Ok(Some(Err(e))) => {
                            return self.fail(ModelError::fatal(format!(
                                "the model stream broke: {}",
                                error_chain(&e)
                            )));
                        }
                        Ok(Some(Ok(bytes))) => {
                            let data = match self.parser.push(&bytes) {
                                Ok(d) => d,
                                Err(e) => return self.fail(e),
                            };
                            match self.handle(data) {
                                Err(e) => return self.fail(e),
                                // Done: drop the body, whatever follows.
                                Ok(true) => self.complete(),
                                Ok(false) => {}
                            }
                        }
                        Ok(None) => {
                            let last = match self.parser.finish() {
                                Ok(d) => d,
                                Err(e) => return self.fail(e),
                            };
                            if let Err(e) = self.handle(last.into_iter().collect()) {
                                return self.fail(e);
                            }
                            if !self.chunks.finished {
                                return self.fail(ModelError::fatal(
                                    "the model stream ended before the response was complete",
                                ));
                            }
                            self.complete();
                        }
                    }
                }
            }
        }
    }
}

impl Model for OpenAiModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn retry_delay(&self, attempt: u32) -> Duration {
        self.settings.backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
    }

    fn stream<'a>(&'a self, prompt: &'a Prompt) -> ModelStream<'a> {
        let call = Call {
            model: self,
            prompt,
            phase: Phase::Start,
            queue: VecDeque::new(),
            parser: SseParser::default(),
            chunks: ChunkAssembler::default(),
        };
        Box::pin(stream::unfold(call, |mut c| async move { c.next().await.map(|ev| (ev, c)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(v: Value) -> RolloutItem {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn history_becomes_messages() {
        let h = vec![
            item(json!({"type":"user_input","turn_id":"t","items":[{"type":"text","text":"hi"}]})),
            item(json!({"type":"agent_message","turn_id":"t","message":"ok"})),
            item(
                json!({"type":"tool_call","turn_id":"t","call_id":"a","name":"shell","arguments":{"command":["ls"]}}),
            ),
            item(
                json!({"type":"tool_call","turn_id":"t","call_id":"b","name":"shell","arguments":{"command":["pwd"]}}),
            ),
            item(json!({"type":"tool_result","turn_id":"t","call_id":"a","success":true,"output":"x"})),
            item(json!({"type":"tool_result","turn_id":"t","call_id":"b","success":true,"output":"y"})),
            item(
                json!({"type":"tool_call","turn_id":"t","call_id":"c","name":"shell","arguments":{"command":["rm"]}}),
            ),
            item(json!({"type":"user_input","turn_id":"u","items":[{"type":"text","text":"again"}]})),
        ];
        let m = messages("sys", &h);
        let roles: Vec<&str> = m.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "user"]);
        assert_eq!(m[2]["content"], "ok");
        assert_eq!(m[2]["tool_calls"][1]["id"], "b");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], r#"{"command":["ls"]}"#);
        assert_eq!(m[5]["content"], Value::Null);
        assert_eq!(m[6]["tool_call_id"], "c");
    }

    #[test]
    fn names_urls_and_backoff() {
        let s = OpenAiSettings { base_url: Some("http://h:1/v1/".into()), ..OpenAiSettings::default() };
        let m = OpenAiModel::new("openai:llama3.2", "/w".into(), s).unwrap();
        assert_eq!(m.name(), "openai:llama3.2");
        assert_eq!(m.url, "http://h:1/v1/chat/completions");
        assert_eq!(m.api_key_env, "OPENAI_API_KEY");
        assert_eq!(m.retry_delay(1), Duration::from_millis(500));
        assert_eq!(m.retry_delay(3), Duration::from_millis(2000));
        assert!(OpenAiModel::new("openai:", "/w".into(), OpenAiSettings::default()).is_err());
        let s = OpenAiSettings { base_url: Some("ftp://x".into()), ..OpenAiSettings::default() };
        assert!(OpenAiModel::new("openai:x", "/w".into(), s).is_err());
        let p = Prompt { turn_id: "t".into(), turn_index: 0, history: vec![] };
        let b = m.body(&p);
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["tools"][1]["function"]["name"], "apply_patch");
        assert_eq!(error_detail(r#"{"error":{"message":"bad key"}}"#), "bad key");
        assert_eq!(error_detail(""), "(no details)");
    }
}
