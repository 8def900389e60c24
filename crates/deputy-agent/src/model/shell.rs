//! The `shell` brain: deterministic, no network, the default.
//!
//! It reads the latest user input line by line:
//! - a line starting with `$ ` is a command: the rest is split into an argv
//!   like a POSIX shell splits words (single quotes, double quotes, backslash
//!   escapes; no expansion, no operators — write `$ sh -c '…'` for those) and
//!   asked for as a `shell` tool call;
//! - a block from a line `*** Begin Patch` to a line `*** End Patch` is asked
//!   for as an `apply_patch` tool call;
//! - every other non-empty line is part of the answer, which echoes them back
//!   as one agent message (streamed line by line as deltas first).
//!
//! The answer and the tool calls come in one response, tool calls in input
//! order (so their approvals can be pending at the same time). After the
//! tools ran, the follow-up call answers nothing and the turn completes. Each
//! turn reports one token count: a token per 4 bytes of input and of output.

use deputy_protocol::TokenUsage;
use futures::stream;

use super::{Model, ModelEvent, ModelStream, Prompt, Tool, ToolCall, estimate_tokens};
use crate::util::call_id;

/// The `shell` brain.
#[derive(Debug, Default)]
pub struct ShellBrain;

impl Model for ShellBrain {
    fn name(&self) -> &str {
        "shell"
    }

    fn stream<'a>(&'a self, prompt: &'a Prompt) -> ModelStream<'a> {
        if prompt.has_tool_results_this_turn() {
            return Box::pin(stream::empty());
        }
        let input = prompt.last_user_text();
        Box::pin(stream::iter(respond(&input).into_iter().map(Ok)))
    }
}

/// The events answering `input`.
pub fn respond(input: &str) -> Vec<ModelEvent> {
    let mut text_lines: Vec<&str> = Vec::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    let mut output_bytes = 0;
    let mut lines = input.lines();
    while let Some(line) = lines.next() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            output_bytes += cmd.len();
            let tool = match split_command(cmd) {
                Ok(argv) if !argv.is_empty() => Tool::Shell { command: argv, reason: None },
                Ok(_) => continue,
                Err(error) => Tool::Invalid {
                    name: "shell".into(),
                    arguments: serde_json::Value::String(cmd.to_owned()),
                    error,
                },
            };
            calls.push(ToolCall { call_id: call_id(), tool });
        } else if line.trim() == "*** Begin Patch" {
            let mut patch = String::from(line.trim());
            patch.push('\n');
            for l in lines.by_ref() {
                patch.push_str(l);
                patch.push('\n');
                if l.trim() == "*** End Patch" {
                    break;
                }
            }
            output_bytes += patch.len();
            calls.push(ToolCall { call_id: call_id(), tool: Tool::ApplyPatch { patch } });
        } else if !line.trim().is_empty() {
            text_lines.push(line);
        }
    }
    let mut events = Vec::new();
    if !text_lines.is_empty() {
        let n = text_lines.len();
        for (i, l) in text_lines.iter().enumerate() {
            let delta = if i + 1 < n { format!("{l}\n") } else { (*l).to_owned() };
            events.push(ModelEvent::MessageDelta(delta));
        }
        let message = text_lines.join("\n");
        output_bytes += message.len();
        events.push(ModelEvent::Message(message));
    }
    events.extend(calls.into_iter().map(ModelEvent::ToolCall));
    let input_tokens = estimate_tokens(input.len());
    let output_tokens = estimate_tokens(output_bytes);
    events.push(ModelEvent::Usage(TokenUsage {
        input_tokens,
        output_tokens,
        total_tokens: input_tokens + output_tokens,
        ..TokenUsage::default()
    }));
    events
}

/// Splits a command line into words like a POSIX shell (quotes and
/// backslashes; no expansion).
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => cur.push(ch),
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(ch) => cur.push(ch),
                    None => return Err("trailing backslash".into()),
                }
            }
            ch => {
                in_word = true;
                cur.push(ch);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split_command("echo hello  world").unwrap(), ["echo", "hello", "world"]);
        assert_eq!(split_command(r#"sh -c 'echo hi > f'"#).unwrap(), ["sh", "-c", "echo hi > f"]);
        assert_eq!(
            split_command(r#"printf "a \"b\" \n" x\ y ''"#).unwrap(),
            ["printf", "a \"b\" \\n", "x y", ""]
        );
        assert!(split_command("echo 'oops").is_err());
    }

    #[test]
    fn commands_patches_and_text() {
        let ev = respond("hello\n$ echo hi\n*** Begin Patch\n*** Add File: a\n+x\n*** End Patch\nbye");
        let kinds: Vec<&str> = ev
            .iter()
            .map(|e| match e {
                ModelEvent::MessageDelta(_) => "delta",
                ModelEvent::Message(_) => "message",
                ModelEvent::ToolCall(c) => c.name(),
                ModelEvent::Usage(_) => "usage",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["delta", "delta", "message", "shell", "apply_patch", "usage"]);
        assert_eq!(ev[2], ModelEvent::Message("hello\nbye".into()));
        let ModelEvent::ToolCall(ToolCall { tool: Tool::ApplyPatch { patch }, .. }) = &ev[4] else {
            panic!()
        };
        assert_eq!(patch, "*** Begin Patch\n*** Add File: a\n+x\n*** End Patch\n");
        let ModelEvent::Usage(u) = ev[5] else { panic!() };
        assert!(u.input_tokens > 0 && u.output_tokens > 0);
        assert_eq!(u.total_tokens, u.input_tokens + u.output_tokens);
    }
}
