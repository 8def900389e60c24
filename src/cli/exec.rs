//! `deputy exec`: one prompt, one turn, then the sub-agent is shut down.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use deputy_host::{CancellationToken, ConversationConfig, EventFilter, HostError, OneShot};
use deputy_protocol::{EventMsg, InputItem, SessionSource};

use super::approve::{ApproveMode, CliApprover};
use super::render::Renderer;
use super::{AgentArgs, SessionArgs, exit};

#[derive(Args, Debug)]
#[command(after_help = "\
Exit status:
  0    the turn completed
  1    an error (the agent could not start, crashed, broke the protocol, …)
  2    a usage error
  3    the turn was aborted (or an approval was answered `abort`)
  124  --timeout expired
  130  interrupted (Ctrl-C)

Examples:
  deputy exec --approve exec '$ echo hello from a sub-agent'
  echo '$ ls' | deputy exec --approve exec -
  deputy exec --json --approve all '$ cargo test' | jq -c .msg.type
  deputy exec --timeout 30s --approve exec '$ sleep 60'
  deputy exec --resume 0192f3c4-5b6a-7c8d-9e0f-112233445566 'and now?'
  deputy exec --agent 'python3 my_agent.py' 'do the thing'")]
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
    let config =
        ConversationConfig::new(session).client_info("deputy-exec", Some(env!("CARGO_PKG_VERSION").into()));
    // People see streamed deltas; scripts get every event.
    let config = config.event_filter(EventFilter::All);
    let approver = CliApprover::new(args.approve, args.allow_outside_cwd, Arc::clone(&renderer));
    let cancel = CancellationToken::new();
    let mut stop = Stop::Finished;

    let interrupts = super::Interrupts::install();
    let deadline = async {
        match args.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let spinner = super::Spinner::start(Arc::clone(&renderer));

    // Spawn and handshake, cancellable by Ctrl-C and the timeout too.
    let input = vec![InputItem::Text { text: prompt }];
    let spawn = OneShot::run(command, config, approver.clone(), input, cancel.clone());
    tokio::pin!(spawn);
    let started = tokio::select! {
        r = &mut spawn => r,
        () = interrupts.first() => { stop = Stop::Interrupted; cancel.cancel(); spawn.await }
        () = &mut deadline => { stop = Stop::TimedOut; cancel.cancel(); spawn.await }
    };
    let mut one_shot = match started {
        Ok(one_shot) => one_shot,
        Err(HostError::Cancelled) => {
            drop(spinner);
            renderer.finish();
            return stop_code(&stop).unwrap_or(exit::ERROR);
        }
        Err(e) => {
            drop(spinner);
            renderer.error(&e.to_string());
            return exit::ERROR;
        }
    };

    let mut last_turn_event: Option<EventMsg> = None;
    if matches!(stop, Stop::Finished) {
        loop {
            tokio::select! {
                event = one_shot.next_event() => match event {
                    Some(event) => {
                        renderer.event(&event);
                        if event.msg.ends_turn() {
                            last_turn_event = Some(event.msg);
                        }
                    }
                    None => break,
                },
                () = interrupts.first() => { stop = Stop::Interrupted; break; }
                () = &mut deadline => { stop = Stop::TimedOut; break; }
            }
        }
    }

    let ending = match stop {
        Stop::Finished => one_shot.wait().await,
        Stop::Interrupted | Stop::TimedOut => {
            let why = if matches!(stop, Stop::TimedOut) { "timed out" } else { "interrupted" };
            renderer.note(&format!("{why}; stopping the agent (Ctrl-C again to kill it now)"));
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
    match ending {
        Err(e) => {
            renderer.error(&e.to_string());
            exit::ERROR
        }
        Ok(_) => match last_turn_event {
            Some(EventMsg::TaskComplete { .. }) if !approver.aborted() => exit::OK,
            Some(_) => exit::ABORTED,
            None => {
                renderer.error("the agent ended without finishing the turn");
                exit::ERROR
            }
        },
    }
}

fn stop_code(stop: &Stop) -> Option<i32> {
    match stop {
        Stop::Finished => None,
        Stop::Interrupted => Some(exit::INTERRUPTED),
        Stop::TimedOut => Some(exit::TIMEOUT),
    }
}
