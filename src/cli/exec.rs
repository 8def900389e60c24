//! `deputy exec`: one prompt, one turn, then the sub-agent is shut down.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use deputy_host::{CancellationToken, ConversationConfig, EventFilter, HostError, OneShot};
use deputy_protocol::{EventMsg, InputItem, SessionSource};

use super::approve::{ApproveMode, CliApprover, can_ask};
use super::input::Input;
use super::render::Renderer;
use super::{AgentArgs, SessionArgs, exit};

#[derive(Args, Debug)]
#[command(after_help = concat!("\
Exit status:
", exit_table!(), "

Examples:
  deputy exec --approve exec '$ echo hello from a sub-agent'
  echo '$ ls' | deputy exec --approve exec -
  deputy exec --json --approve all '$ cargo test' | jq -c .msg.type
  deputy exec --timeout 30s --approve exec '$ sleep 60'
  deputy exec --resume 0192f3c4-5b6a-7c8d-9e0f-112233445566 'and now?'
  deputy exec --agent 'python3 my_agent.py' 'do the thing'"))]
pub struct ExecArgs {
    /// The prompt; `-` reads it from stdin. With the default `shell` model, lines
    /// starting with `$ ` are commands and `*** Begin Patch` blocks are patches.
    pub prompt: String,

    /// Print every event as one JSON line on stdout (the protocol's Event shape),
    /// and nothing else on stdout.
    #[arg(long)]
    pub json: bool,

    /// Decide approvals without asking: never (deny all), exec (allow commands),
    /// patch (allow patches), all. Without it, ask on the terminal; with no
    /// terminal, deny and say how to allow.
    #[arg(long, value_enum, value_name = "WHAT")]
    pub approve: Option<ApproveMode>,

    /// With --approve patch|all, also approve patches that write outside the
    /// working directory and the writable roots (each once, with a warning).
    /// Without it those are denied.
    #[arg(long)]
    pub allow_outside_cwd: bool,

    /// Cancel the turn after this long (e.g. `30s`, `2m`): the agent is asked to
    /// stop and is killed 500 ms later at the latest. Exit status 124.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(flatten)]
    pub session: SessionArgs,
}

fn read_prompt(prompt: &str) -> Result<String, String> {
    let text = if prompt == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the prompt from stdin: {e}"))?;
        text
    } else {
        prompt.to_owned()
    };
    if text.trim().is_empty() {
        return Err("the prompt is empty".into());
    }
    Ok(text)
}

/// Why the command stopped waiting for events.
enum Stop {
    Finished,
    Interrupted,
    TimedOut,
    /// stdout or stderr was closed.
    Broken,
}

pub async fn run(args: ExecArgs) -> i32 {
    let renderer = Arc::new(Renderer::new(args.json));
    let prompt = match read_prompt(&args.prompt) {
        Ok(p) => p,
        Err(e) => {
            renderer.error(&e);
            return exit::USAGE;
        }
    };
    let (command, session) = match super::agent_and_session(&args.agent, &args.session, SessionSource::Exec) {
        Ok(pair) => pair,
        Err(e) => {
            renderer.error(&e);
            return exit::USAGE;
        }
    };
    let config = ConversationConfig::new(session)
        .protocol(args.agent.protocol())
        .client_info("deputy-exec", Some(env!("CARGO_PKG_VERSION").into()));
    // People see streamed deltas; scripts get every event.
    let config = config.event_filter(EventFilter::All);
    let interrupts = super::Interrupts::install();
    // Questions are printed by the renderer and answered in cooked mode (no
    // line editor): Ctrl-C at a question is then an ordinary SIGINT.
    let input = (args.approve.is_none() && can_ask()).then(|| Arc::new(Input::start(false)));
    let approver = CliApprover::new(
        args.approve,
        args.allow_outside_cwd,
        input,
        Arc::clone(&renderer),
        interrupts.clone(),
    );
    let cancel = CancellationToken::new();
    let mut stop = Stop::Finished;

    let deadline = async {
        match args.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let spinner = super::Spinner::start(Arc::clone(&renderer));

    // Spawn and handshake, cancellable by Ctrl-C, the timeout and a closed pipe too.
    let input = vec![InputItem::Text { text: prompt }];
    let spawn = OneShot::run(command, config, approver.clone(), input, cancel.clone());
    tokio::pin!(spawn);
    let started = tokio::select! {
        r = &mut spawn => r,
        () = interrupts.first() => { stop = Stop::Interrupted; cancel.cancel(); spawn.await }
        () = &mut deadline => { stop = Stop::TimedOut; cancel.cancel(); spawn.await }
        () = renderer.broken() => { stop = Stop::Broken; cancel.cancel(); spawn.await }
    };
    let mut one_shot = match started {
        Ok(one_shot) => one_shot,
        Err(HostError::Cancelled) => {
            drop(spinner);
            renderer.finish();
            return stop_code(&stop).unwrap_or(exit::ERROR);
        }
        Err(e @ HostError::Unsupported { .. }) => {
            // A flag the agent's protocol cannot carry: a usage error.
            drop(spinner);
            renderer.error(&e.to_string());
            return stop_code(&stop).unwrap_or(exit::USAGE);
        }
        Err(e @ HostError::MessageTooLarge { .. }) => {
            // The prompt itself is too big for the agent: the caller's input
            // is at fault, as with any other bad argument.
            drop(spinner);
            renderer.error(&format!("{e} (the prompt is too large for this agent)"));
            return stop_code(&stop).unwrap_or(exit::USAGE);
        }
        Err(e) => {
            drop(spinner);
            renderer.error(&e.to_string());
            return stop_code(&stop).unwrap_or(exit::ERROR);
        }
    };

    let mut last_turn_event: Option<EventMsg> = None;
    let mut tally = super::TurnTally::default();
    if matches!(stop, Stop::Finished) {
        loop {
            tokio::select! {
                event = async { renderer.room().await; one_shot.next_event().await } => match event {
                    Some(event) => {
                        renderer.event(&event);
                        tally.see(&event.msg);
                        if event.msg.ends_turn() {
                            last_turn_event = Some(event.msg);
                        }
                    }
                    None => break,
                },
                () = interrupts.first() => { stop = Stop::Interrupted; break; }
                () = &mut deadline => { stop = Stop::TimedOut; break; }
                () = renderer.broken() => { stop = Stop::Broken; break; }
            }
        }
    }

    let ending = match stop {
        Stop::Finished => one_shot.wait().await,
        Stop::Interrupted | Stop::TimedOut | Stop::Broken => {
            // An unanswered question is moot now; end its line.
            renderer.close_question(true);
            match stop {
                Stop::TimedOut => {
                    renderer.note("timed out; stopping the agent (Ctrl-C again to kill it now)")
                }
                Stop::Interrupted => {
                    renderer.note("interrupted; stopping the agent (Ctrl-C again to kill it now)")
                }
                _ => {}
            }
            tokio::select! {
                ending = one_shot.cancel() => Ok(ending),
                // A second Ctrl-C: dropping the conversation SIGKILLs the tree at once.
                () = interrupts.second() => Err(HostError::Cancelled),
            }
        }
    };
    drop(spinner);
    renderer.finish();
    if let Some(code) = stop_code(&stop) {
        return code;
    }
    let code = match ending {
        Err(e) => {
            renderer.error(&e.to_string());
            exit::ERROR
        }
        Ok(_) => match last_turn_event {
            Some(end) => tally.status(&end, approver.take_aborted(), approver.take_denied()),
            None => {
                renderer.error("the agent ended without finishing the turn");
                exit::ERROR
            }
        },
    };
    match code {
        exit::TURN_ERROR => renderer.note("the turn ended after an error (exit status 4)"),
        exit::ALL_DENIED => renderer.note("nothing the agent asked for was allowed (exit status 5)"),
        _ => {}
    }
    // A pipe closed while the last lines were printed still counts.
    if renderer.is_broken() { exit::BROKEN_PIPE } else { code }
}

fn stop_code(stop: &Stop) -> Option<i32> {
    match stop {
        Stop::Finished => None,
        Stop::Interrupted => Some(exit::INTERRUPTED),
        Stop::TimedOut => Some(exit::TIMEOUT),
        Stop::Broken => Some(exit::BROKEN_PIPE),
    }
}
