//! `deputy chat`: an interactive, multi-turn conversation on the terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use deputy_host::{CancellationToken, Conversation, ConversationConfig, EventFilter, HostError};
use deputy_protocol::{EventMsg, Op, SessionSource};

use super::approve::{ApproveMode, CliApprover, can_ask};
use super::input::{Input, Reply};
use super::render::Renderer;
use super::{AgentArgs, SessionArgs, exit};

/// Two Ctrl-C within this long during a turn end the session.
const DOUBLE_CTRL_C: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
#[command(after_help = concat!("\
Keys: Enter sends a line; Ctrl-C interrupts the running turn (the session goes
on), and a second Ctrl-C within a second ends the session; Ctrl-D ends the
session cleanly. Approval questions are answered on the same line editor.
Without a terminal, lines are read from stdin, one turn each.

Exit status: the last turn's, as for `deputy exec` (0 when it completed with no
error event, 3 aborted, 4 it ended after an error event, 5 everything it asked
for was denied, 130 it was interrupted); 0 when no turn ran. Also:
  1    an error of the host (the agent could not start, crashed, …)
  2    a usage error
  130  ended by a second Ctrl-C, or interrupted while starting
  141  stdout or stderr was closed (a broken pipe)

Examples:
  deputy chat
  deputy chat --approve exec --cwd ~/project
  printf '$ echo one\\n$ echo two\\n' | deputy chat --approve exec
  deputy chat --resume 0192f3c4-5b6a-7c8d-9e0f-112233445566"))]
pub struct ChatArgs {
    /// Decide approvals without asking: never, exec, patch, all. Without it,
    /// ask on the terminal; with no terminal, deny and say how to allow.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub approve: Option<ApproveMode>,

    /// With --approve patch|all, also approve patches that write outside the
    /// working directory and the writable roots (each once, with a warning).
    /// Without it those are denied.
    #[arg(long)]
    pub allow_outside_cwd: bool,

    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(flatten)]
    pub session: SessionArgs,
}

/// How the session loop ended, when not by end of input.
enum Ended {
    Input,
    /// A second Ctrl-C during a turn.
    Interrupted,
    /// stdout or stderr was closed.
    Broken,
    /// The agent went away.
    Failed(Option<HostError>),
}

pub async fn run(args: ChatArgs) -> i32 {
    let renderer = Arc::new(Renderer::new(false));
    let (command, session) = match super::agent_and_session(&args.agent, &args.session, SessionSource::Cli) {
        Ok(pair) => pair,
        Err(e) => {
            renderer.error(&e);
            return exit::USAGE;
        }
    };
    let config = ConversationConfig::new(session)
        .protocol(args.agent.protocol())
        .client_info("deputy-chat", Some(env!("CARGO_PKG_VERSION").into()))
        .event_filter(EventFilter::All);
    let interrupts = super::Interrupts::install();
    // One reader for lines and answers alike; the line editor needs stdout
    // to be the terminal too (it draws there).
    let editor = can_ask() && std::io::stdout().is_terminal();
    let input = Arc::new(Input::start(editor));
    let asker = (args.approve.is_none() && can_ask()).then(|| Arc::clone(&input));
    let approver = CliApprover::new(
        args.approve,
        args.allow_outside_cwd,
        asker,
        Arc::clone(&renderer),
        interrupts.clone(),
    );
    let cancel = CancellationToken::new();

    let spawn = Conversation::spawn(command, config, approver.clone(), cancel.clone());
    tokio::pin!(spawn);
    let spawned = tokio::select! {
        r = &mut spawn => r,
        () = interrupts.first() => { cancel.cancel(); let _ = spawn.await; return exit::INTERRUPTED; }
        () = renderer.broken() => { cancel.cancel(); let _ = spawn.await; return exit::BROKEN_PIPE; }
    };
    let mut conversation = match spawned {
        Ok(c) => c,
        Err(e) => {
            renderer.error(&e.to_string());
            return if matches!(e, HostError::Unsupported { .. }) { exit::USAGE } else { exit::ERROR };
        }
    };
    // The id comes from the agent: shown cleaned, like all it says.
    let session_id = super::sanitize::clean(conversation.session_id()).into_owned();
    renderer.note(&format!(
        "session {session_id} — Ctrl-C interrupts a turn (twice ends the session), Ctrl-D ends the session"
    ));

    let mut turns = 0u32;
    // The last turn's status; 0 before any turn.
    let mut status = exit::OK;
    // When Ctrl-C was last pressed (at the prompt or during a turn).
    let mut last_ctrl_c: Option<Instant> = None;
    let ended = 'session: loop {
        let line = tokio::select! {
            reply = input.read("› ") => reply,
            () = renderer.broken() => break Ended::Broken,
        };
        let line = match line {
            Reply::Line(line) if line.trim().is_empty() => continue,
            Reply::Line(line) => line,
            // Ctrl-C at the prompt: a fresh prompt, like a shell; twice within
            // a second (or right after interrupting a turn) ends the session.
            Reply::Interrupted => {
                if last_ctrl_c.is_some_and(|at| at.elapsed() < DOUBLE_CTRL_C) {
                    break Ended::Interrupted;
                }
                last_ctrl_c = Some(Instant::now());
                renderer.note("Ctrl-C again within a second ends the session (so does Ctrl-D)");
                continue;
            }
            Reply::Eof => break Ended::Input,
        };
        turns += 1;
        let turn_id = format!("turn-{turns}");
        let mut seen = interrupts.count();
        if let Err(e) = conversation.submit_with_id(turn_id.clone(), Op::text(line)).await {
            renderer.error(&e.to_string());
            if conversation.is_finished() {
                break Ended::Failed(conversation.error());
            }
            continue;
        }
        // Spin only while a turn runs (the guard stops it, however the turn ends).
        let _spinner = super::Spinner::start(Arc::clone(&renderer));
        let mut tally = super::TurnTally::default();
        let mut interrupted = false;
        loop {
            tokio::select! {
                event = async { renderer.room().await; conversation.next_event().await } => match event {
                    Some(event) => {
                        renderer.event(&event);
                        tally.see(&event.msg);
                        if event.id == turn_id && event.msg.ends_turn() {
                            status = tally.status(&event.msg, approver.take_aborted(), approver.take_denied());
                            if interrupted && matches!(event.msg, EventMsg::TurnAborted { .. }) {
                                status = exit::INTERRUPTED;
                            }
                            break;
                        }
                    }
                    None => break 'session Ended::Failed(conversation.error()),
                },
                () = interrupts.after(seen) => {
                    seen = interrupts.count();
                    if last_ctrl_c.is_some_and(|at| at.elapsed() < DOUBLE_CTRL_C) {
                        renderer.note("Ctrl-C again: ending the session");
                        break 'session Ended::Interrupted;
                    }
                    last_ctrl_c = Some(Instant::now());
                    interrupted = true;
                    renderer.note("interrupting the turn… (Ctrl-C again within a second ends the session)");
                    // Not awaited here: an agent that does not answer must
                    // not keep a second Ctrl-C (or its events) from being seen.
                    let submitter = conversation.submitter();
                    let renderer = Arc::clone(&renderer);
                    tokio::spawn(async move {
                        if let Err(e) = submitter.submit(Op::Interrupt).await {
                            renderer.error(&e.to_string());
                        }
                    });
                }
                () = renderer.broken() => break 'session Ended::Broken,
            }
        }
        renderer.finish();
    };
    renderer.finish();

    // The same agent flags, so the hint resumes with the same agent.
    let mut agent_flags = String::new();
    let protocol = args.agent.protocol();
    if protocol != deputy_host::AgentProtocol::Deputy {
        agent_flags.push_str(&format!(" --agent-protocol {}", protocol.name()));
    }
    if let Some(agent) = &args.agent.agent {
        agent_flags
            .push_str(&format!(" --agent {}", shlex::try_quote(agent).unwrap_or_else(|_| agent.into())));
    }
    let agent_flags = super::sanitize::clean(&agent_flags).into_owned();
    let resume_hint = || {
        renderer.note(&format!(
            "session {session_id} ended; resume it with `deputy chat{agent_flags} --resume {session_id}` \
             or `deputy exec{agent_flags} --resume {session_id} PROMPT`"
        ))
    };
    match ended {
        Ended::Input => match conversation.shutdown().await {
            Ok(_) => {
                resume_hint();
                if renderer.is_broken() { exit::BROKEN_PIPE } else { status }
            }
            Err(e) => {
                renderer.error(&e.to_string());
                exit::ERROR
            }
        },
        Ended::Interrupted | Ended::Broken => {
            // The cancel ladder: interrupt, shutdown, then signals; bounded.
            let _ = conversation.cancel().await;
            resume_hint();
            if matches!(ended, Ended::Broken) { exit::BROKEN_PIPE } else { exit::INTERRUPTED }
        }
        Ended::Failed(failure) => {
            if let Some(e) = failure {
                renderer.error(&e.to_string());
            }
            exit::ERROR
        }
    }
}
