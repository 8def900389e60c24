//! `deputy chat`: an interactive, multi-turn conversation on the terminal.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

use clap::Args;
use deputy_host::{CancellationToken, Conversation, ConversationConfig, EventFilter, HostError};
use deputy_protocol::{Op, SessionSource};
use tokio::sync::oneshot;

use super::approve::{ApproveMode, CliApprover};
use super::render::Renderer;
use super::{AgentArgs, SessionArgs, exit};

#[derive(Args, Debug)]
#[command(after_help = "\
Keys: Enter sends a line; Ctrl-C interrupts the running turn (the session goes
on); Ctrl-D ends the session cleanly. Without a terminal, lines are read from
stdin, one turn each.

Exit status: 0 the session ended cleanly; 1 an error; 2 a usage error;
130 interrupted while starting.

Examples:
  deputy chat
  deputy chat --approve exec --cwd ~/project
  printf '$ echo one\\n$ echo two\\n' | deputy chat --approve exec
  deputy chat --resume 0192f3c4-5b6a-7c8d-9e0f-112233445566")]
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

/// Lines typed by the person (with editing and history on a terminal) or read
/// from stdin, on a thread of their own so the runtime never blocks.
struct Lines {
    requests: std::sync::mpsc::Sender<oneshot::Sender<Option<String>>>,
}

impl Lines {
    fn start() -> Lines {
        let (requests, rx) = std::sync::mpsc::channel::<oneshot::Sender<Option<String>>>();
        let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        std::thread::spawn(move || {
            let mut editor = if interactive { rustyline::DefaultEditor::new().ok() } else { None };
            let mut stdin = std::io::stdin().lock();
            while let Ok(reply) = rx.recv() {
                let line = match editor.as_mut() {
                    Some(editor) => loop {
                        match editor.readline("› ") {
                            Ok(line) => {
                                if !line.trim().is_empty() {
                                    let _ = editor.add_history_entry(line.as_str());
                                }
                                break Some(line);
                            }
                            // Ctrl-C at the prompt: a fresh prompt, like a shell.
                            Err(rustyline::error::ReadlineError::Interrupted) => continue,
                            Err(_) => break None,
                        }
                    },
                    None => {
                        let mut line = String::new();
                        match stdin.read_line(&mut line) {
                            Ok(0) | Err(_) => None,
                            Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_owned()),
                        }
                    }
                };
                let eof = line.is_none();
                let _ = reply.send(line);
                if eof {
                    break;
                }
            }
        });
        Lines { requests }
    }

    /// The next line; `None` at Ctrl-D / end of input.
    async fn next(&self) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).ok()?;
        rx.await.ok().flatten()
    }
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
        .client_info("deputy-chat", Some(env!("CARGO_PKG_VERSION").into()))
        .event_filter(EventFilter::All);
    let approver = CliApprover::new(args.approve, args.allow_outside_cwd, Arc::clone(&renderer));
    let cancel = CancellationToken::new();
    let interrupts = super::Interrupts::install();

    let spawn = Conversation::spawn(command, config, approver, cancel.clone());
    tokio::pin!(spawn);
    let spawned = tokio::select! {
        r = &mut spawn => r,
        () = interrupts.first() => { cancel.cancel(); let _ = spawn.await; return exit::INTERRUPTED; }
    };
    let mut conversation = match spawned {
        Ok(c) => c,
        Err(e) => {
            renderer.error(&e.to_string());
            return exit::ERROR;
        }
    };
    renderer.note(&format!(
        "session {} — Ctrl-C interrupts a turn, Ctrl-D ends the session",
        conversation.session_id()
    ));

    let lines = Lines::start();
    let mut turns = 0u32;
    let mut failure: Option<HostError> = None;
    'session: while let Some(line) = lines.next().await {
        if line.trim().is_empty() {
            continue;
        }
        turns += 1;
        let turn_id = format!("turn-{turns}");
        let seen = interrupts.count();
        if let Err(e) = conversation.submit_with_id(turn_id.clone(), Op::text(line)).await {
            renderer.error(&e.to_string());
            if conversation.is_finished() {
                failure = conversation.error();
                break;
            }
            continue;
        }
        // Spin only while a turn runs (the guard stops it, however the turn ends).
        let _spinner = super::Spinner::start(Arc::clone(&renderer));
        let mut interrupted_at = seen;
        loop {
            tokio::select! {
                event = conversation.next_event() => match event {
                    Some(event) => {
                        renderer.event(&event);
                        if event.id == turn_id && event.msg.ends_turn() {
                            break;
                        }
                    }
                    None => {
                        failure = conversation.error();
                        break 'session;
                    }
                },
                () = interrupts.after(interrupted_at) => {
                    interrupted_at = interrupts.count();
                    renderer.note("interrupting the turn…");
                    if let Err(e) = conversation.submit(Op::Interrupt).await {
                        renderer.error(&e.to_string());
                    }
                }
            }
        }
        renderer.finish();
    }
    renderer.finish();

    if let Some(e) = failure {
        renderer.error(&e.to_string());
        return exit::ERROR;
    }
    match conversation.shutdown().await {
        Ok(_) => exit::OK,
        Err(e) => {
            renderer.error(&e.to_string());
            exit::ERROR
        }
    }
}
