//! The command line's host side: `exec`, `chat` and `sessions`, built on
//! `deputy-host`.

pub mod approve;
pub mod chat;
pub mod exec;
pub mod render;
pub mod sessions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use deputy_host::AgentCommand;
use deputy_protocol::{HistorySource, InitialHistory, ModelSelection, SessionSource, SessionStartParams};
use tokio::sync::watch;

use render::Renderer;

/// Exit statuses of `deputy exec` and `deputy chat`.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const ABORTED: i32 = 3;
    pub const TIMEOUT: i32 = 124;
    pub const INTERRUPTED: i32 = 130;
}

/// Which sub-agent to run.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Run this program as the sub-agent instead of `deputy agent` (a command
    /// line, split like a shell would; it must speak the Deputy protocol).
    #[arg(long, value_name = "COMMAND")]
    pub agent: Option<String>,

    /// The model (brain): `shell` (default: `$ ` lines run, patches apply),
    /// `script` (plays --scenario), or `openai:MODEL` (an OpenAI-compatible
    /// Chat Completions endpoint, see --base-url); passed to the agent at
    /// session start.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Base URL of the OpenAI-compatible endpoint for `openai:MODEL`
    /// (default https://api.openai.com/v1; Ollama: http://localhost:11434/v1).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Environment variable holding the endpoint's API key (default
    /// OPENAI_API_KEY; none is needed for local servers).
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,

    /// A scenario file for the `script` model (implies --model script).
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,

    /// Where sessions are stored (default: $DEPUTY_HOME, else ~/.deputy).
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}

/// Where and from what the session starts.
#[derive(Args, Debug, Clone)]
pub struct SessionArgs {
    /// The session's working directory (default: the current one).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Continue an earlier session, by id or rollout path.
    #[arg(long, value_name = "SESSION_ID_OR_PATH", conflicts_with = "fork")]
    pub resume: Option<String>,

    /// Start a new session from a copy of an earlier one, by id or rollout path.
    #[arg(long, value_name = "SESSION_ID_OR_PATH")]
    pub fork: Option<String>,
}

fn history_source(arg: &str) -> HistorySource {
    let looks_like_path = arg.contains(std::path::MAIN_SEPARATOR) || arg.ends_with(".jsonl");
    if looks_like_path || Path::new(arg).is_file() {
        let path = Path::new(arg);
        HistorySource::RolloutPath(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
    } else {
        HistorySource::SessionId(arg.to_owned())
    }
}

/// The agent command and session parameters the flags describe.
pub fn agent_and_session(
    agent: &AgentArgs,
    session: &SessionArgs,
    source: SessionSource,
) -> Result<(AgentCommand, SessionStartParams), String> {
    let command = match &agent.agent {
        Some(line) => {
            let words =
                shlex::split(line).ok_or_else(|| format!("--agent: cannot split {line:?} into words"))?;
            let (program, args) = words.split_first().ok_or("--agent: the command is empty")?;
            let mut command = AgentCommand::new(program);
            command.args(args);
            command
        }
        None => AgentCommand::deputy_agent(),
    };
    let mut command = command;
    if let Some(home) = &agent.home {
        command.env("DEPUTY_HOME", std::path::absolute(home).map_err(|e| format!("--home: {e}"))?);
    }

    let cwd = match &session.cwd {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?,
    };
    let cwd = cwd.canonicalize().map_err(|e| format!("--cwd {}: {e}", cwd.display()))?;
    if !cwd.is_dir() {
        return Err(format!("--cwd {}: not a directory", cwd.display()));
    }
    let mut params = SessionStartParams::new(cwd);
    params.source = source;
    params.model = match (&agent.model, &agent.scenario) {
        (None, None) if agent.base_url.is_some() || agent.api_key_env.is_some() => {
            return Err("--base-url and --api-key-env need --model openai:MODEL".into());
        }
        (None, None) => None,
        (model, scenario) => Some(ModelSelection {
            scenario: scenario.as_ref().map(|s| std::path::absolute(s).unwrap_or_else(|_| s.clone())),
            base_url: agent.base_url.clone(),
            api_key_env: agent.api_key_env.clone(),
            ..ModelSelection::named(model.clone().unwrap_or_else(|| "script".into()))
        }),
    };
    params.initial_history = match (&session.resume, &session.fork) {
        (Some(from), _) => InitialHistory::Resumed { from: history_source(from) },
        (None, Some(from)) => InitialHistory::Forked { from: history_source(from) },
        (None, None) => InitialHistory::New,
    };
    Ok((command, params))
}

/// Counts Ctrl-C presses (SIGINT), so the first can cancel gracefully and the
/// second kill at once.
pub struct Interrupts {
    count: watch::Receiver<u32>,
}

impl Interrupts {
    pub fn install() -> Interrupts {
        let (tx, count) = watch::channel(0u32);
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(mut signals) => {
                tokio::spawn(async move {
                    while signals.recv().await.is_some() {
                        tx.send_modify(|n| *n += 1);
                    }
                });
            }
            Err(e) => tracing::warn!("cannot watch for Ctrl-C: {e}"),
        }
        Interrupts { count }
    }

    /// How many Ctrl-C were pressed so far.
    pub fn count(&self) -> u32 {
        *self.count.borrow()
    }

    /// Resolves once more than `seen` Ctrl-C were pressed.
    pub async fn after(&self, seen: u32) {
        let mut rx = self.count.clone();
        let _ = rx.wait_for(|n| *n > seen).await;
    }

    pub async fn first(&self) {
        self.after(0).await
    }

    pub async fn second(&self) {
        self.after(1).await
    }
}

/// Redraws the spinner until dropped.
pub struct Spinner(tokio::task::JoinHandle<()>);

impl Spinner {
    pub fn start(renderer: Arc<Renderer>) -> Spinner {
        Spinner(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                renderer.tick();
            }
        }))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.abort();
    }
}
