//! One input, one turn, then the agent shuts down by itself.

use std::path::Path;
use std::sync::Arc;

use deputy_protocol::{Event, InputItem, Op, TokenUsageInfo};
use tokio_util::sync::CancellationToken;

use crate::approver::Approver;
use crate::command::AgentCommand;
use crate::config::ConversationConfig;
use crate::conversation::{Conversation, Ending};
use crate::error::HostError;

/// A one-shot conversation: spawned, given one user input, its events
/// forwarded until the turn ends (`task_complete` or `turn_aborted`, both
/// forwarded), after which the agent is shut down (shutdown op, EOF, the
/// ladder's deadline) without the caller doing anything. Its submission side
/// is closed: [`submit`](Self::submit) always fails with
/// [`HostError::SubmissionsClosed`].
#[derive(Debug)]
pub struct OneShot {
    conversation: Conversation,
    submission_id: String,
    turn_ended: bool,
}

impl OneShot {
    /// Spawns `command`, runs the handshake and submits `input` as one
    /// `user_input`. Cancellable throughout with `cancel`.
    pub async fn run(
        command: AgentCommand,
        config: ConversationConfig,
        approver: Arc<dyn Approver>,
        input: Vec<InputItem>,
        cancel: CancellationToken,
    ) -> Result<OneShot, HostError> {
        let mut conversation = Conversation::spawn_inner(&command, config, approver, cancel, true).await?;
        match conversation.submit(Op::UserInput { items: input }).await {
            Ok(submission_id) => Ok(OneShot { conversation, submission_id, turn_ended: false }),
            Err(e) => {
                conversation.cancel().await;
                Err(e)
            }
        }
    }

    /// The next event of the turn; `None` after the turn-ending event (or when
    /// the agent is gone).
    pub async fn next_event(&mut self) -> Option<Event> {
        if self.turn_ended {
            return None;
        }
        let event = self.conversation.next_event().await?;
        if event.msg.ends_turn() {
            self.turn_ended = true;
        }
        Some(event)
    }

    /// Always [`HostError::SubmissionsClosed`]: a one-shot takes one input only.
    pub async fn submit(&self, op: Op) -> Result<String, HostError> {
        let _ = op;
        Err(HostError::SubmissionsClosed)
    }

    /// Waits until the agent has shut down (after the turn ends) and returns
    /// how it ended. Events not yet read are dropped (the agent is never
    /// blocked by them).
    pub async fn wait(mut self) -> Result<Ending, HostError> {
        self.conversation.close_events();
        self.conversation.wait().await
    }

    /// Cancels: the cancel ladder (interrupt, shutdown, EOF, deadline, kill).
    pub async fn cancel(mut self) -> Ending {
        self.conversation.cancel().await
    }

    /// The id of the input's submission (the turn id).
    pub fn submission_id(&self) -> &str {
        &self.submission_id
    }

    /// The session id.
    pub fn session_id(&self) -> &str {
        self.conversation.session_id()
    }

    /// The session's rollout path, if persisted.
    pub fn rollout_path(&self) -> Option<&Path> {
        self.conversation.rollout_path()
    }

    /// The latest token usage.
    pub fn token_usage(&self) -> Option<TokenUsageInfo> {
        self.conversation.token_usage()
    }

    /// The agent's pid (also its process group and session id).
    pub fn pid(&self) -> u32 {
        self.conversation.pid()
    }
}
