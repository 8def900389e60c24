//! Server-sent events: splits a byte stream into the `data` payloads of its
//! events, and turns Chat Completions chunks into [`ModelEvent`]s.

use std::collections::BTreeMap;

use deputy_protocol::TokenUsage;
use serde_json::Value;

use crate::model::{ModelError, ModelEvent, ToolCall};
use crate::util::call_id;

/// The most bytes one SSE event may hold before the stream is called malformed.
const MAX_EVENT_BYTES: usize = 16 << 20;

/// Incremental SSE parser: feed it bytes as they arrive, get back the `data`
/// of each complete event (several `data:` lines joined with `\n`). Comments
/// (`:`…) and other fields (`event:`, `id:`, `retry:`) are ignored; `\n`,
/// `\r\n` and `\r` line ends are accepted.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
    /// The last byte was a `\r` (a following `\n` belongs to it).
    after_cr: bool,
}

impl SseParser {
    /// Feeds bytes; returns the data of the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, ModelError> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.end_line(&line, &mut out)?;
                }
                _ => {
                    self.line.push(b);
                    if self.line.len() + self.data.as_ref().map_or(0, String::len) > MAX_EVENT_BYTES {
                        return Err(malformed("an event is larger than 16 MiB"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The end of the stream: a last event not followed by a blank line.
    pub fn finish(&mut self) -> Result<Option<String>, ModelError> {
        let line = std::mem::take(&mut self.line);
        let mut out = Vec::new();
        if !line.is_empty() {
            self.end_line(&line, &mut out)?;
        }
        Ok(out.pop().or_else(|| self.data.take()))
    }

    fn end_line(&mut self, line: &[u8], out: &mut Vec<String>) -> Result<(), ModelError> {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(data);
            }
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| malformed("a line is not UTF-8"))?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        Ok(())
    }
}

fn malformed(what: impl std::fmt::Display) -> ModelError {
    ModelError::fatal(format!("malformed SSE stream from the model server: {what}"))
}

fn snippet(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() { format!("{}…", &s[..end]) } else { s.to_owned() }
}

/// One tool call being assembled from fragments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Turns the chunks of one streamed completion into events: deltas as they
/// come, then (at [`ChunkAssembler::finish`]) the complete reasoning, message,
/// tool calls (by `index`, arguments joined across chunks) and usage.
#[derive(Debug, Default)]
pub struct ChunkAssembler {
    message: String,
    reasoning: String,
    calls: BTreeMap<u64, PartialCall>,
    usage: Option<TokenUsage>,
    /// A `finish_reason` or `[DONE]` was seen.
    pub finished: bool,
}

impl ChunkAssembler {
    /// Handles one `data` payload; pushes the delta events it carries.
    pub fn data(&mut self, data: &str, out: &mut Vec<ModelEvent>) -> Result<(), ModelError> {
        if data.trim() == "[DONE]" {
            self.finished = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| malformed(format!("data is not JSON ({e}): {}", snippet(data))))?;
        if let Some(err) = chunk.get("error") {
            let msg =
                err.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or(err.to_string());
            return Err(ModelError::fatal(format!("the model server reported an error: {msg}")));
        }
        if !chunk.is_object() {
            return Err(malformed(format!("data is not a JSON object: {}", snippet(data))));
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
            let input = n(u.get("prompt_tokens"));
            let output = n(u.get("completion_tokens"));
            self.usage = Some(TokenUsage {
                input_tokens: input,
                cached_input_tokens: n(u.pointer("/prompt_tokens_details/cached_tokens")),
                output_tokens: output,
                reasoning_output_tokens: n(u.pointer("/completion_tokens_details/reasoning_tokens")),
                total_tokens: u.get("total_tokens").and_then(Value::as_u64).unwrap_or(input + output),
            });
        }
        let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
            return Ok(());
        };
        for choice in choices.iter().filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0) {
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                self.finished = true;
            }
            let Some(delta) = choice.get("delta") else { continue };
            let reasoning = delta
                .get("reasoning_content")
                .and_then(Value::as_str)
                .or_else(|| delta.get("reasoning").and_then(Value::as_str));
            if let Some(r) = reasoning.filter(|r| !r.is_empty()) {
                self.reasoning.push_str(r);
                out.push(ModelEvent::ReasoningDelta(r.to_owned()));
            }
            if let Some(c) = delta.get("content").and_then(Value::as_str).filter(|c| !c.is_empty()) {
                self.message.push_str(c);
                out.push(ModelEvent::MessageDelta(c.to_owned()));
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (pos, tc) in calls.iter().enumerate() {
                    let index = tc.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
                    let call = self.calls.entry(index).or_default();
                    if let Some(id) = tc.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                        call.id = Some(id.to_owned());
                    }
                    if let Some(f) = tc.get("function") {
                        if let Some(name) = f.get("name").and_then(Value::as_str) {
                            call.name.push_str(name);
                        }
                        match f.get("arguments") {
                            Some(Value::String(a)) => call.arguments.push_str(a),
                            // Some servers send the arguments as an object.
                            Some(v @ Value::Object(_)) => call.arguments.push_str(&v.to_string()),
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The complete items of the response, in order: reasoning, message,
    /// tool calls, usage.
    pub fn finish(&mut self) -> Vec<ModelEvent> {
        let mut out = Vec::new();
        if !self.reasoning.is_empty() {
            out.push(ModelEvent::Reasoning(std::mem::take(&mut self.reasoning)));
        }
        if !self.message.is_empty() {
            out.push(ModelEvent::Message(std::mem::take(&mut self.message)));
        }
        for (_, c) in std::mem::take(&mut self.calls) {
            let args = if c.arguments.trim().is_empty() { "{}" } else { c.arguments.as_str() };
            let id = c.id.unwrap_or_else(call_id);
            out.push(ModelEvent::ToolCall(ToolCall::from_function(id, &c.name, args)));
        }
        if let Some(u) = self.usage.take() {
            out.push(ModelEvent::Usage(u));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Tool;

    #[test]
    fn splits_events_across_chunks_and_line_ends() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nda").unwrap().is_empty());
        assert_eq!(p.push(b"ta: {\"a\":1}\r\n\r\ndata: x\ndata: y\n").unwrap(), ["{\"a\":1}"]);
        assert_eq!(p.push(b"\nevent: e\nid: 3\ndata:[DONE]\r\r").unwrap(), ["x\ny", "[DONE]"]);
        assert!(p.push(b"data: tail").unwrap().is_empty());
        assert_eq!(p.finish().unwrap().as_deref(), Some("tail"));
        assert_eq!(p.finish().unwrap(), None);
    }

    #[test]
    fn byte_by_byte_is_the_same() {
        let text = "data: {\"x\":\"é\"}\n\ndata: [DONE]\n\n";
        let mut p = SseParser::default();
        let mut got = Vec::new();
        for b in text.as_bytes() {
            got.extend(p.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got, ["{\"x\":\"é\"}", "[DONE]"]);
    }

    fn feed(a: &mut ChunkAssembler, chunks: &[&str]) -> Vec<ModelEvent> {
        let mut out = Vec::new();
        for c in chunks {
            a.data(c, &mut out).unwrap();
        }
        out.extend(a.finish());
        out
    }

    #[test]
    fn assembles_fragmented_tool_calls_by_index() {
        let mut a = ChunkAssembler::default();
        let ev = feed(
            &mut a,
            &[
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Run"}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"content":"ning."}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"shell","arguments":""}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","function":{"name":"apply_","arguments":"{\"pat"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\":[\"l"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"name":"patch","arguments":"ch\":\"x\"}"}},{"index":0,"function":{"arguments":"s\"]}"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
                r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
                "[DONE]",
            ],
        );
        assert!(a.finished);
        assert_eq!(
            ev,
            vec![
                ModelEvent::MessageDelta("Run".into()),
                ModelEvent::MessageDelta("ning.".into()),
                ModelEvent::Message("Running.".into()),
                ModelEvent::ToolCall(ToolCall {
                    call_id: "c1".into(),
                    tool: Tool::Shell { command: vec!["ls".into()], reason: None }
                }),
                ModelEvent::ToolCall(ToolCall {
                    call_id: "c2".into(),
                    tool: Tool::ApplyPatch { patch: "x".into() }
                }),
                ModelEvent::Usage(TokenUsage {
                    input_tokens: 10,
                    output_tokens: 5,
                    total_tokens: 15,
                    ..TokenUsage::default()
                }),
            ]
        );
    }

    #[test]
    fn reasoning_both_spellings_and_bad_data() {
        let mut a = ChunkAssembler::default();
        let ev = feed(
            &mut a,
            &[
                r#"{"choices":[{"delta":{"reasoning_content":"hm"}}]}"#,
                r#"{"choices":[{"delta":{"reasoning":"m"}}]}"#,
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"shell","arguments":"{bad"}}]}}]}"#,
            ],
        );
        assert_eq!(ev[0], ModelEvent::ReasoningDelta("hm".into()));
        assert_eq!(ev[2], ModelEvent::Reasoning("hmm".into()));
        let ModelEvent::ToolCall(c) = &ev[3] else { panic!("{ev:?}") };
        assert!(c.call_id.starts_with("call_"));
        assert!(matches!(c.tool, Tool::Invalid { .. }));
        assert!(!a.finished);
        let mut out = Vec::new();
        let e = a.data("{not json", &mut out).unwrap_err();
        assert!(e.message.starts_with("malformed SSE stream"), "{e:?}");
        assert!(!e.retryable);
        let e = a.data(r#"{"error":{"message":"overloaded"}}"#, &mut out).unwrap_err();
        assert!(e.message.contains("overloaded"));
    }
}
