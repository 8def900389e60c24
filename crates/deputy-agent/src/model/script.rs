//! The `script` brain: plays a scenario file, for tests, benchmarks and host
//! developers. The format is documented in PROTOCOL.md, appendix A.
//!
//! One turn per non-empty line, each a JSON object `{"steps": [STEP, …]}`;
//! turn N of this process plays line N. Steps run in order; a step that
//! needs a tool (`exec`, `patch`, `ask_approval_only`) ends the model call
//! with that tool call, and the next call (after the tool ran) resumes with
//! the following step.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use deputy_protocol::TokenUsage;
use futures::stream;
use serde::{Deserialize, Serialize};

use super::{Fault, Model, ModelError, ModelEvent, ModelStream, Prompt, Tool, ToolCall};
use crate::util::call_id;

/// The default `flood` delta: with a short turn id, each event line is about
/// 150 bytes.
pub const DEFAULT_FLOOD_DELTA: &str = "The quick brown fox jumps over the lazy dog. ";
/// Default `chunk_chars` of a `message` step.
pub const DEFAULT_CHUNK_CHARS: usize = 16;

/// One step of a scripted turn. It serializes to the scenario format
/// (PROTOCOL.md appendix A), so tools can write scenarios from these values
/// (`deputy-testkit`'s `ScriptedAgent` does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Streamed as `agent_message_delta`s of `chunk_chars` characters, then
    /// one `agent_message`.
    Message {
        /// The whole message.
        text: String,
        /// Characters per delta; absent: `DEFAULT_CHUNK_CHARS`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunk_chars: Option<usize>,
    },
    /// One `agent_reasoning`.
    Reasoning {
        /// The reasoning's text.
        text: String,
    },
    /// A `shell` tool call: approval policy, then the exec tool.
    Exec {
        /// The argv to run.
        command: Vec<String>,
        /// Why, as shown in the approval.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An `apply_patch` tool call.
    Patch {
        /// The patch text, in the `*** Begin Patch` format.
        patch: String,
    },
    /// Waits (interruptible).
    Sleep {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// One `token_count` with this usage.
    TokenCount {
        /// Reported input tokens.
        input_tokens: u64,
        /// Reported output tokens.
        output_tokens: u64,
    },
    /// `n` `agent_message_delta`s as fast as the transport takes them.
    Flood {
        /// How many deltas.
        n: u64,
        /// The text of each delta; absent: `DEFAULT_FLOOD_DELTA`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<String>,
    },
    /// Waits until the turn is interrupted.
    WaitForInterrupt,
    /// `n` approval round trips, `in_flight` (default 1: sequential)
    /// outstanding at a time; nothing runs; one agent message with the counts
    /// and the round trip's p50/p99 at the end.
    AskApprovalOnly {
        /// How many round trips.
        n: u64,
        /// How many may be outstanding at once (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_flight: Option<u64>,
    },
    /// Writes `stderr`, then exits the process with `code`.
    Exit {
        /// The exit status.
        code: i32,
        /// Written to stderr before exiting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stderr: Option<String>,
    },
    /// Never answers or exits again (only SIGKILL ends it).
    Hang,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnLine {
    steps: Vec<Step>,
}

/// A parsed scenario: the steps of each turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The steps of each turn, in order: one entry per `user_input`.
    pub turns: Vec<Vec<Step>>,
}

impl Scenario {
    /// Parses scenario text; errors name the line and the decoder's message.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let mut turns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let turn: TurnLine = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            turns.push(turn.steps);
        }
        Ok(Scenario { turns })
    }

    /// The scenario file's text: one `{"steps": […]}` line per turn, which
    /// [`Scenario::parse`] reads back as the same scenario.
    pub fn to_jsonl(&self) -> String {
        #[derive(Serialize)]
        struct TurnLineRef<'a> {
            steps: &'a [Step],
        }
        let mut text = String::new();
        for steps in &self.turns {
            let line = serde_json::to_string(&TurnLineRef { steps }).expect("steps always serialize");
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The `script` brain.
#[derive(Debug)]
pub struct ScriptBrain {
    scenario: Scenario,
    /// (turn index, next step) where the last call of the turn stopped.
    progress: Mutex<(u64, usize)>,
}

impl ScriptBrain {
    /// A brain that plays `scenario` from its first turn.
    pub fn new(scenario: Scenario) -> Self {
        ScriptBrain { scenario, progress: Mutex::new((u64::MAX, 0)) }
    }

    fn set_progress(&self, turn: u64, step: usize) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = (turn, step);
    }
}

struct Player<'a> {
    brain: &'a ScriptBrain,
    turn: u64,
    steps: &'a [Step],
    next: usize,
    queue: VecDeque<ModelEvent>,
    flood_left: u64,
    flood_delta: &'a str,
    stop_after_queue: bool,
}

impl Player<'_> {
    async fn next_event(&mut self) -> Option<ModelEvent> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            if self.flood_left > 0 {
                self.flood_left -= 1;
                return Some(ModelEvent::MessageDelta(self.flood_delta.to_owned()));
            }
            if self.stop_after_queue || self.next >= self.steps.len() {
                self.brain.set_progress(self.turn, self.next);
                return None;
            }
            let step = &self.steps[self.next];
            self.next += 1;
            match step {
                Step::Message { text, chunk_chars } => {
                    let n = chunk_chars.unwrap_or(DEFAULT_CHUNK_CHARS).max(1);
                    let chars: Vec<char> = text.chars().collect();
                    for chunk in chars.chunks(n) {
                        self.queue.push_back(ModelEvent::MessageDelta(chunk.iter().collect()));
                    }
                    self.queue.push_back(ModelEvent::Message(text.clone()));
                }
                Step::Reasoning { text } => self.queue.push_back(ModelEvent::Reasoning(text.clone())),
                Step::Exec { command, reason } => {
                    self.tool(Tool::Shell { command: command.clone(), reason: reason.clone() });
                }
                Step::Patch { patch } => self.tool(Tool::ApplyPatch { patch: patch.clone() }),
                Step::AskApprovalOnly { n, in_flight } => {
                    self.tool(Tool::ApprovalProbe { n: *n, in_flight: in_flight.unwrap_or(1) })
                }
                Step::Sleep { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
                Step::TokenCount { input_tokens, output_tokens } => {
                    self.queue.push_back(ModelEvent::Usage(TokenUsage {
                        input_tokens: *input_tokens,
                        output_tokens: *output_tokens,
                        total_tokens: input_tokens + output_tokens,
                        ..TokenUsage::default()
                    }));
                }
                Step::Flood { n, delta } => {
                    self.flood_left = *n;
                    self.flood_delta = delta.as_deref().unwrap_or(DEFAULT_FLOOD_DELTA);
                }
                Step::WaitForInterrupt => std::future::pending::<()>().await,
                Step::Exit { code, stderr } => {
                    self.queue
                        .push_back(ModelEvent::Fault(Fault::Exit { code: *code, stderr: stderr.clone() }));
                }
                Step::Hang => self.queue.push_back(ModelEvent::Fault(Fault::Hang)),
            }
        }
    }

    fn tool(&mut self, tool: Tool) {
        self.queue.push_back(ModelEvent::ToolCall(ToolCall { call_id: call_id(), tool }));
        self.stop_after_queue = true;
    }
}

impl Model for ScriptBrain {
    fn name(&self) -> &str {
        "script"
    }

    fn stream<'a>(&'a self, prompt: &'a Prompt) -> ModelStream<'a> {
        let turn = prompt.turn_index;
        let Some(steps) = self.scenario.turns.get(turn as usize) else {
            let err = ModelError::fatal(format!("scenario has no turn {}", turn + 1));
            return Box::pin(stream::iter([Err(err)]));
        };
        let start = {
            let p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            if p.0 == turn { p.1 } else { 0 }
        };
        let player = Player {
            brain: self,
            turn,
            steps,
            next: start,
            queue: VecDeque::new(),
            flood_left: 0,
            flood_delta: DEFAULT_FLOOD_DELTA,
            stop_after_queue: false,
        };
        Box::pin(stream::unfold(player, |mut p| async move { p.next_event().await.map(|ev| (Ok(ev), p)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_protocol::RolloutItem;
    use futures::StreamExt as _;

    fn prompt(turn: u64) -> Prompt {
        Prompt { turn_id: format!("t{turn}"), turn_index: turn, history: Vec::<RolloutItem>::new() }
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = Scenario::parse("{\"steps\":[]}\n\n{\"steps\":[{\"type\":\"dance\"}]}").unwrap_err();
        assert!(e.starts_with("line 3: unknown variant `dance`"), "{e}");
        let e = Scenario::parse("{\"steps\":[{\"type\":\"sleep\"}]}").unwrap_err();
        assert!(e.contains("missing field `ms`"), "{e}");
        let e =
            Scenario::parse("{\"steps\":[{\"type\":\"ask_approval_only\",\"n\":2,\"in_flight\":\"many\"}]}")
                .unwrap_err();
        assert!(e.starts_with("line 1: invalid type: string \"many\""), "{e}");
        let s = Scenario::parse("{\"steps\":[{\"type\":\"ask_approval_only\",\"n\":2,\"in_flight\":4}]}")
            .unwrap();
        assert_eq!(s.turns[0], vec![Step::AskApprovalOnly { n: 2, in_flight: Some(4) }]);
        let s = Scenario::parse("{\"steps\":[{\"type\":\"hang\"}]}\n{\"steps\":[]}\n").unwrap();
        assert_eq!(s.turns.len(), 2);
    }

    #[test]
    fn to_jsonl_reads_back_as_the_same_scenario() {
        let text = concat!(
            r#"{"steps":[{"type":"message","text":"hi","chunk_chars":2},{"type":"exec","command":["ls"],"reason":"look"},"#,
            r#"{"type":"flood","n":3},{"type":"exit","code":3,"stderr":"bye"},{"type":"wait_for_interrupt"}]}"#,
            "\n",
            r#"{"steps":[{"type":"sleep","ms":5},{"type":"ask_approval_only","n":2},{"type":"hang"}]}"#,
            "\n"
        );
        let s = Scenario::parse(text).unwrap();
        assert_eq!(s.to_jsonl(), text, "absent options are left out, as written");
        assert_eq!(Scenario::parse(&s.to_jsonl()).unwrap(), s);
    }

    #[tokio::test]
    async fn plays_steps_and_resumes_after_tool_calls() {
        let s = Scenario::parse(
            r#"{"steps":[{"type":"message","text":"hello","chunk_chars":2},{"type":"exec","command":["true"]},{"type":"token_count","input_tokens":3,"output_tokens":4},{"type":"flood","n":3,"delta":"x"}]}"#,
        )
        .unwrap();
        let brain = ScriptBrain::new(s);
        let p = prompt(0);
        let first: Vec<_> = brain.stream(&p).map(Result::unwrap).collect().await;
        assert_eq!(first.len(), 5, "{first:?}"); // he, ll, o, message, tool call
        assert_eq!(first[3], ModelEvent::Message("hello".into()));
        assert!(matches!(&first[4], ModelEvent::ToolCall(ToolCall { tool: Tool::Shell { .. }, .. })));
        let second: Vec<_> = brain.stream(&p).map(Result::unwrap).collect().await;
        assert_eq!(second.len(), 4);
        assert!(matches!(second[0], ModelEvent::Usage(TokenUsage { total_tokens: 7, .. })));
        assert_eq!(second[3], ModelEvent::MessageDelta("x".into()));
        let missing: Vec<_> = brain.stream(&prompt(1)).collect().await;
        assert_eq!(missing, vec![Err(ModelError::fatal("scenario has no turn 2"))]);
    }
}
