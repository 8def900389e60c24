//! The command line's host side: `exec`, `chat` and `sessions`, built on
//! `deputy-host`.

/// The exit statuses as `--help` shows them (a macro so `concat!` can embed it).
macro_rules! exit_table {
    () => {
        "  0    the turn completed, with no error event
  1    an error of the host: the agent could not start, crashed, broke the protocol, …
  2    a usage error
  3    the turn was aborted (or an approval was answered `abort`)
  4    the turn ended after an error event (model unreachable, HTTP 401, model-call cap, …)
  5    every command or patch the agent asked for was denied (nothing was allowed)
  124  --timeout expired
  130  interrupted (Ctrl-C)
  141  stdout or stderr was closed (a broken pipe); the agent was stopped"
    };
}

pub mod approve;
pub mod chat;
pub mod check;
pub mod exec;
pub mod input;
pub mod render;
pub mod sanitize;
pub mod sessions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use deputy_host::{AgentCommand, AgentProtocol};
use deputy_protocol::{
    HistorySource, InitialHistory, ModelSelection, SandboxMode, SessionSource, SessionStartParams,
};
use tokio::sync::watch;

use render::Renderer;

/// Exit statuses of `deputy exec` and `deputy chat` (README, `--help`).
pub mod exit {
    /// The turn completed, with no `error` event.
    pub const OK: i32 = 0;
    /// The host failed: the agent could not start, crashed, broke the protocol.
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    /// The turn was aborted (or an approval was answered `abort`).
    pub const ABORTED: i32 = 3;
    /// The turn ended, but the agent reported an `error` event on the way
    /// (model server unreachable, 401, malformed stream, model-call cap, …).
    pub const TURN_ERROR: i32 = 4;
    /// Commands or patches were requested and every one was denied: nothing
    /// the agent wanted to do was allowed.
    pub const ALL_DENIED: i32 = 5;
    pub const TIMEOUT: i32 = 124;
    pub const INTERRUPTED: i32 = 130;
    /// stdout or stderr was closed (EPIPE): output stopped, the agent was
    /// stopped through the cancel ladder (128 + SIGPIPE, as a shell shows a
    /// process killed by SIGPIPE).
    pub const BROKEN_PIPE: i32 = 141;
}

/// What one turn's events said, for its exit status.
#[derive(Default)]
pub struct TurnTally {
    /// An `error` event was seen.
    pub error_event: bool,
    /// A command or patch ran (whether asked or allowed by the policy or an
    /// earlier "always").
    pub tool_ran: bool,
}

impl TurnTally {
    pub fn see(&mut self, msg: &deputy_protocol::EventMsg) {
        use deputy_protocol::EventMsg;
        match msg {
            EventMsg::Error { .. } => self.error_event = true,
            EventMsg::ExecCommandBegin { .. } | EventMsg::PatchApplyBegin { .. } => self.tool_ran = true,
            _ => {}
        }
    }

    /// The status of a turn that ended with `end` (`task_complete` or
    /// `turn_aborted`), given the approver's answers during it.
    pub fn status(&self, end: &deputy_protocol::EventMsg, aborted: bool, denied: u32) -> i32 {
        match end {
            deputy_protocol::EventMsg::TaskComplete { .. } if !aborted => {
                if self.error_event {
                    exit::TURN_ERROR
                } else if denied > 0 && !self.tool_ran {
                    exit::ALL_DENIED
                } else {
                    exit::OK
                }
            }
            _ => exit::ABORTED,
        }
    }
}

/// Which sub-agent to run.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// Run this program as the sub-agent instead of `deputy agent` (a command
    /// line, split like a shell would; it must speak --agent-protocol).
    #[arg(long, value_name = "COMMAND")]
    pub agent: Option<String>,

    /// The protocol the agent speaks: `deputy` (Deputy's own), `acp` (the
    /// Agent Client Protocol: Gemini CLI `--acp`, Codex and Claude Code ACP
    /// adapters, …; without --agent, `deputy agent --protocol acp`), `codex`
    /// (OpenAI Codex's app-server; without --agent, `codex app-server` from
    /// PATH) or `claude` (Claude Code; without --agent, `claude` from PATH,
    /// and Deputy adds its stream-json flags). These agents use their own
    /// model and configuration, and decide when to ask: --model, --network,
    /// --fork are refused (--sandbox too, but for codex); --resume takes a
    /// session id.
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value = "deputy")]
    pub agent_protocol: AgentProtocolArg,

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

    /// Confine the agent's commands (Landlock + seccomp): `workspace-write`
    /// (write only the working directory and the temp dir; no network),
    /// `read-only` (write only the temp dir) or `off`. Given, it is enforced
    /// or the session fails to start; without it, workspace-write where the
    /// kernel can (else a warning). Commands run outside are marked
    /// `[unsandboxed]`.
    #[arg(long, value_enum, value_name = "MODE")]
    pub sandbox: Option<SandboxArg>,

    /// Allow the network to sandboxed commands.
    #[arg(long)]
    pub network: bool,
}

/// `--agent-protocol` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentProtocolArg {
    Deputy,
    Acp,
    Codex,
    Claude,
}

impl AgentArgs {
    /// The protocol the agent speaks.
    pub fn protocol(&self) -> AgentProtocol {
        match self.agent_protocol {
            AgentProtocolArg::Deputy => AgentProtocol::Deputy,
            AgentProtocolArg::Acp => AgentProtocol::Acp,
            AgentProtocolArg::Codex => AgentProtocol::Codex,
            AgentProtocolArg::Claude => AgentProtocol::Claude,
        }
    }
}

/// `--sandbox` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxArg {
    WorkspaceWrite,
    ReadOnly,
    Off,
}

impl From<SandboxArg> for SandboxMode {
    fn from(a: SandboxArg) -> SandboxMode {
        match a {
            SandboxArg::WorkspaceWrite => SandboxMode::WorkspaceWrite,
            SandboxArg::ReadOnly => SandboxMode::ReadOnly,
            SandboxArg::Off => SandboxMode::Off,
        }
    }
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
        None => match agent.agent_protocol {
            AgentProtocolArg::Deputy => AgentCommand::deputy_agent(),
            AgentProtocolArg::Acp => {
                let mut command = AgentCommand::deputy_agent();
                command.args(["--protocol", "acp"]);
                command
            }
            AgentProtocolArg::Codex => {
                let mut command = AgentCommand::new("codex");
                command.arg("app-server");
                command
            }
            AgentProtocolArg::Claude => AgentCommand::new("claude"),
        },
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
    params.sandbox = session.sandbox.map(SandboxMode::from);
    params.network = session.network;
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
#[derive(Clone)]
pub struct Interrupts {
    count: watch::Receiver<u32>,
    raise: Arc<watch::Sender<u32>>,
}

impl Interrupts {
    pub fn install() -> Interrupts {
        let (tx, count) = watch::channel(0u32);
        let raise = Arc::new(tx);
        let tx = Arc::clone(&raise);
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
        Interrupts { count, raise }
    }

    /// Counts a Ctrl-C that did not come as a signal (typed into the line
    /// editor, which reads the terminal in raw mode).
    pub fn raise(&self) {
        self.raise.send_modify(|n| *n += 1);
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
