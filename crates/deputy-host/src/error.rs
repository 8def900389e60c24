//! The host's error type.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use deputy_rpc::{ErrorObject, RpcError};

/// How much of the stderr tail an error's `Display` shows (the field keeps all of it).
const DISPLAY_TAIL_BYTES: usize = 4 * 1024;

/// Why something the host asked of the agent failed.
///
/// Every variant about the agent process going away carries the last 64 KiB of
/// what the agent wrote to stderr (`stderr_tail`); `Display` shows its last
/// few KiB. The type is `Clone` so one terminal error can be handed to every
/// caller that asks (pending submissions, [`crate::Conversation::wait`], …).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The agent program could not be started.
    #[error("failed to start the agent `{program}`: {source}")]
    Spawn {
        /// The program, as given.
        program: String,
        /// Why it could not start.
        #[source]
        source: Arc<io::Error>,
    },
    /// The agent did not answer `initialize` and `session/start` in time.
    #[error("the agent did not complete the handshake within {timeout:?}{}", Tail(stderr_tail))]
    HandshakeTimeout {
        /// The handshake timeout that passed.
        timeout: Duration,
        /// The end of the agent's stderr.
        stderr_tail: String,
    },
    /// The agent answered a handshake request (`initialize`, `session/start`;
    /// over ACP `session/new` or `session/load`) with an error.
    #[error("the agent rejected `{method}`: {error}{}", Tail(stderr_tail))]
    Handshake {
        /// The request it rejected.
        method: &'static str,
        /// Its error answer.
        error: ErrorObject,
        /// The end of the agent's stderr.
        stderr_tail: String,
    },
    /// The agent speaks another protocol version.
    #[error("the agent speaks protocol version {agent}, this host speaks {host}")]
    ProtocolVersion {
        /// The version this host speaks (of the agent's protocol).
        host: u32,
        /// The version the agent answered.
        agent: u32,
    },
    /// The agent process exited (crashed, exited, or was killed by someone else)
    /// while the conversation was live.
    #[error("the agent exited unexpectedly ({}){}", Status(status), Tail(stderr_tail))]
    AgentExited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The agent closed its stdout but kept running; it was killed.
    #[error("the agent closed its stdout while still running; it was killed{}", Tail(stderr_tail))]
    StdoutClosed {
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The agent wrote something that is not a JSON-RPC message to stdout; it
    /// was killed.
    #[error("the agent broke the protocol: {detail}; it was killed{}", Tail(stderr_tail))]
    ProtocolViolation {
        /// What it wrote and why it is invalid.
        detail: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The agent could not start the session, in its own words (a foreign
    /// agent refused its handshake, or exited during it); it was killed.
    #[error("the agent could not start the session: {detail}{}", Tail(stderr_tail))]
    AgentFailed {
        /// What went wrong.
        detail: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The agent answered a request (e.g. `submit`) with an error.
    #[error("the agent rejected `{method}`: {error}")]
    Rejected {
        /// The request it rejected.
        method: &'static str,
        /// Its error answer.
        error: ErrorObject,
    },
    /// The message would be longer than the agent accepts (the
    /// `max_line_bytes` it announced in `initialize`): nothing was sent, and
    /// the conversation goes on.
    #[error("`{method}` would be a line of {bytes} bytes, over the agent's limit of {limit} bytes: not sent")]
    MessageTooLarge {
        /// The method of the message.
        method: String,
        /// Its size, in bytes.
        bytes: usize,
        /// The agent's limit, in bytes.
        limit: usize,
    },
    /// The agent's protocol cannot carry what was asked (a session setting
    /// or an op), so nothing was sent.
    #[error("{protocol} agents cannot be given {what}")]
    Unsupported {
        /// The agent's protocol (`ACP`, …).
        protocol: &'static str,
        /// What cannot be carried, and why.
        what: String,
    },
    /// This conversation takes no more submissions (a one-shot, after its input).
    #[error("this conversation takes no submissions (one-shot: its only input was sent at start)")]
    SubmissionsClosed,
    /// The conversation (or its spawn/handshake) was cancelled.
    #[error("the conversation was cancelled")]
    Cancelled,
    /// The conversation has ended (shut down) and takes no more requests.
    #[error("the conversation has ended")]
    Closed,
    /// A transport failure not covered above.
    #[error("rpc: {0}")]
    Rpc(Arc<RpcError>),
}

impl HostError {
    /// The agent's stderr tail attached to this error, if any.
    pub fn stderr_tail(&self) -> Option<&str> {
        match self {
            HostError::HandshakeTimeout { stderr_tail, .. }
            | HostError::Handshake { stderr_tail, .. }
            | HostError::AgentExited { stderr_tail, .. }
            | HostError::StdoutClosed { stderr_tail }
            | HostError::ProtocolViolation { stderr_tail, .. }
            | HostError::AgentFailed { stderr_tail, .. } => Some(stderr_tail),
            _ => None,
        }
    }

    /// The agent's exit status, for [`HostError::AgentExited`].
    pub fn exit_status(&self) -> Option<ExitStatus> {
        match self {
            HostError::AgentExited { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<RpcError> for HostError {
    fn from(e: RpcError) -> Self {
        match e {
            RpcError::Cancelled => HostError::Cancelled,
            RpcError::MessageTooLarge { method, bytes, limit } => {
                HostError::MessageTooLarge { method, bytes, limit }
            }
            e => HostError::Rpc(Arc::new(e)),
        }
    }
}

/// Formats an exit status as "exit status 3" or "killed by signal 9 (SIGKILL)".
pub(crate) struct Status<'a>(pub &'a ExitStatus);

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt as _;
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => write!(f, "exit status {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig} ({})", signal_name(sig)),
            _ => write!(f, "{}", self.0),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Formats a stderr tail as "; stderr (last lines):\n…" (nothing if empty).
pub(crate) struct Tail<'a>(pub &'a str);

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = self.0.trim_end();
        if tail.is_empty() {
            return Ok(());
        }
        if tail.len() <= DISPLAY_TAIL_BYTES {
            return write!(f, "; agent stderr:\n{tail}");
        }
        let mut start = tail.len() - DISPLAY_TAIL_BYTES;
        while !tail.is_char_boundary(start) {
            start += 1;
        }
        // Start at a line boundary when there is one close by.
        if let Some(nl) = tail[start..].find('\n') {
            start += nl + 1;
        }
        write!(f, "; agent stderr (last {} bytes):\n{}", tail.len() - start, &tail[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    #[test]
    fn messages_are_readable_and_carry_the_tail() {
        let e = HostError::AgentExited {
            status: ExitStatus::from_raw(3 << 8),
            stderr_tail: "boom: disk on fire\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "the agent exited unexpectedly (exit status 3); agent stderr:\nboom: disk on fire"
        );
        assert_eq!(e.stderr_tail(), Some("boom: disk on fire\n"));
        let e = HostError::AgentExited { status: ExitStatus::from_raw(9), stderr_tail: String::new() };
        assert_eq!(e.to_string(), "the agent exited unexpectedly (killed by signal 9 (SIGKILL))");
        let e =
            HostError::HandshakeTimeout { timeout: Duration::from_millis(300), stderr_tail: String::new() };
        assert_eq!(e.to_string(), "the agent did not complete the handshake within 300ms");
    }

    #[test]
    fn long_tails_are_cut_for_display_at_a_line_boundary() {
        let tail: String = (0..2000).map(|i| format!("line {i}\n")).collect();
        let e = HostError::StdoutClosed { stderr_tail: tail.clone() };
        let shown = e.to_string();
        assert!(shown.len() < DISPLAY_TAIL_BYTES + 200, "{}", shown.len());
        assert!(shown.ends_with("line 1999"), "{shown}");
        let body = shown.split_once(":\n").unwrap().1;
        assert!(body.starts_with("line "), "{body}");
        assert_eq!(e.stderr_tail(), Some(tail.as_str()));
    }
}
