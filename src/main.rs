//! The `deputy` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "deputy",
    version,
    about = "Run an AI sub-agent as a child process speaking newline-delimited JSON-RPC 2.0",
    long_about = None,
    after_help = "Examples:\n  \
        deputy exec --approve exec '$ echo hello from a sub-agent'\n  \
        deputy chat --approve exec\n  \
        deputy sessions list\n  \
        deputy agent                    # serve the protocol on stdio, for a host (PROTOCOL.md)\n  \
        deputy check -- ./my-agent      # check a program that claims the protocol\n  \
        deputy completions bash > ~/.local/share/bash-completion/completions/deputy\n\n\
        Environment: DEPUTY_HOME (where sessions live, default ~/.deputy), DEPUTY_BIN (the agent \
        binary hosts spawn), RUST_LOG (log filter; logs go to stderr), NO_COLOR (no colour), \
        OPENAI_API_KEY (the key for --model openai:MODEL; --api-key-env names another).\n\n\
        Exit status of exec and chat: 0 ok, 1 host error, 2 usage, 3 aborted, 4 the turn ended \
        after an error event, 5 everything asked for was denied, 124 timeout, 130 Ctrl-C, \
        141 broken pipe (see `deputy exec --help`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one turn of a sub-agent and exit (for scripts, CI and quick jobs).
    #[command(long_about = "Run one turn of a sub-agent and exit.\n\n\
        Spawns the sub-agent (this installation's `deputy agent` unless --agent names another \
        program that speaks the Deputy protocol), sends PROMPT as one user input, shows what the \
        agent does while it does it, answers its approval requests, and shuts it down when the \
        turn ends. Ctrl-C cancels (the agent's whole process tree is gone within 500 ms); a second \
        Ctrl-C kills it at once.")]
    Exec(cli::exec::ExecArgs),
    /// Talk to a sub-agent interactively, turn after turn.
    Chat(cli::chat::ChatArgs),
    /// List and show stored sessions (rollouts).
    Sessions(cli::sessions::SessionsArgs),
    /// Serve the Deputy protocol on stdin/stdout: the sub-agent process.
    #[command(
        long_about = "Serve the Deputy protocol on stdin/stdout: the sub-agent process that editors, \
            agent hosts and scripts spawn.\n\n\
            Speaks newline-delimited JSON-RPC 2.0 (see PROTOCOL.md): initialize, session/start, then \
            submit ops; asks the host (approval/exec, approval/patch) before running a command or \
            applying a patch; persists every session as a rollout under HOME/sessions/YYYY/MM/DD/.\n\n\
            stdout carries nothing but protocol messages. Logs go to stderr, filtered by RUST_LOG \
            (default `warn`), e.g. RUST_LOG=debug or RUST_LOG=deputy_agent=trace.\n\n\
            Exit status: 0 after `shutdown` or end of stdin; 1 when start-up fails (e.g. an unwritable \
            home), with the reason on stderr; a scripted `exit` step's own code.",
        after_help = "Examples:\n  \
            deputy agent                                   # serve on stdio, rollouts in ~/.deputy\n  \
            deputy agent --home /tmp/deputy --log-format json 2>agent.log\n  \
            RUST_LOG=debug deputy agent 2>agent.log        # verbose logs, stdout stays clean\n  \
            deputy agent --model script --scenario turns.jsonl   # play a scenario (PROTOCOL.md, appendix A)\n  \
            deputy agent --model openai:llama3.2 --base-url http://localhost:11434/v1   # a local Ollama\n  \
            deputy agent --protocol acp                    # an ACP agent for editors (Zed, Neovim, JetBrains)"
    )]
    Agent {
        /// Deputy home; rollouts go to DIR/sessions/YYYY/MM/DD/. Default: ~/.deputy.
        #[arg(long, env = "DEPUTY_HOME", value_name = "DIR")]
        home: Option<PathBuf>,
        /// The brain used when session/start names none: `shell`, `script`, or
        /// `openai:MODEL` (an OpenAI-compatible Chat Completions endpoint, see --base-url).
        #[arg(long, value_name = "NAME", default_value = "shell", value_parser = parse_model)]
        model: String,
        /// Base URL of the OpenAI-compatible endpoint, used when session/start names none
        /// (default https://api.openai.com/v1; Ollama: http://localhost:11434/v1).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Environment variable holding the endpoint's API key, used when session/start
        /// names none (default OPENAI_API_KEY; unset or empty: no key is sent).
        #[arg(long, value_name = "NAME")]
        api_key_env: Option<String>,
        /// The most model calls one turn may make; the turn then ends with an error event.
        #[arg(long, value_name = "N", default_value_t = deputy_agent::DEFAULT_MAX_MODEL_CALLS,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_model_calls: u32,
        /// The longest silence of the model server (before its answer, or between two
        /// chunks of its stream) before the call fails, e.g. `60s`, `500ms`.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
        model_idle_timeout: std::time::Duration,
        /// The delay before the first retry of a failed model call (doubled at each retry).
        #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
        model_retry_backoff: std::time::Duration,
        /// Scenario file for the `script` brain, used when session/start names none.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Format of the logs on stderr.
        #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormatArg::Text)]
        log_format: LogFormatArg,
        /// The protocol served on stdio: `deputy` (PROTOCOL.md), or `acp`, the Agent Client
        /// Protocol v1 that editors speak (Zed, JetBrains, Neovim; PROTOCOL.md, "ACP").
        #[arg(long, value_enum, value_name = "PROTOCOL", default_value_t = ProtocolArg::Deputy)]
        protocol: ProtocolArg,
    },
    /// Run a conformance battery against a program that claims the protocol.
    #[command(
        long_about = "Run a conformance battery against a program that claims the protocol.\n\n\
            Starts the program (a fresh process per check, run in the current directory, with a \
            private, empty directory as the session's cwd and a private DEPUTY_HOME) and checks what PROTOCOL.md requires: handshake and version \
            negotiation, framing and error codes, stdout purity, every message against the JSON \
            Schema, approvals keyed by id and failing closed, interrupt/shutdown/end of input/SIGTERM, \
            and that no process is left behind. Prints a table (check, PROTOCOL.md section, result, \
            evidence), or JSON with --json. Checks that need the agent to run commands use the \
            `shell` model and are skipped (not failed) for agents that do not offer it.\n\n\
            Exit status: 0 every check passed or was skipped, 1 a check failed, 2 usage.",
        after_help = "Examples:\n  \
            deputy check -- deputy agent\n  \
            deputy check --json -- python3 my_agent.py --stdio\n  \
            deputy check --protocol acp -- deputy agent --protocol acp"
    )]
    Check(cli::check::CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:\n  \
        deputy completions bash > ~/.local/share/bash-completion/completions/deputy\n  \
        deputy completions zsh > \"${fpath[1]}/_deputy\"\n  \
        deputy completions fish > ~/.config/fish/completions/deputy.fish")]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write or check the generated JSON Schema and TypeScript types.
    #[command(after_help = "Examples:\n  \
        deputy schema --out schema     # regenerate the checked-in schema\n  \
        deputy schema --check          # exit 1 naming stale files if schema/ is out of date")]
    Schema {
        /// The schema folder.
        #[arg(long, default_value = "schema")]
        out: PathBuf,
        /// Compare instead of writing; exit 1 if any file is stale.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    /// Deputy's own protocol.
    Deputy,
    /// The Agent Client Protocol v1.
    Acp,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The hidden reaper mode, `deputy __reap PROGRAM ARGS…`: runs PROGRAM as a
/// child subreaper would (see `deputy_proctree::run_reaper`). Used by
/// `deputy_host::AgentCommand::reaped` for third-party agents; not a command
/// for people, so it is kept out of clap (and `--help`).
const REAPER_ARG: &str = "__reap";

fn main() -> ExitCode {
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == REAPER_ARG) {
        let rest: Vec<_> = argv.collect();
        let Some((program, args)) = rest.split_first() else {
            eprintln!("usage: deputy {REAPER_ARG} PROGRAM [ARGS…]");
            return ExitCode::from(2);
        };
        let code = deputy_proctree::run_reaper(program, args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Exec(args) => host(|| cli::exec::run(args)),
        Command::Chat(args) => host(|| cli::chat::run(args)),
        Command::Sessions(args) => code(cli::sessions::run(args)),
        Command::Check(args) => code(cli::check::run(args)),
        Command::Schema { out, check } => schema(&out, check),
        Command::Completions { shell } => completions(shell),
        Command::Agent {
            home,
            model,
            scenario,
            log_format,
            base_url,
            api_key_env,
            max_model_calls,
            model_idle_timeout,
            model_retry_backoff,
            protocol,
        } => {
            let mut openai =
                deputy_agent::model::openai::OpenAiSettings { base_url, api_key_env, ..Default::default() };
            openai.idle_timeout = model_idle_timeout;
            openai.backoff = model_retry_backoff;
            let protocol = match protocol {
                ProtocolArg::Deputy => deputy_agent::Protocol::Native,
                ProtocolArg::Acp => deputy_agent::Protocol::Acp,
            };
            agent(home, model, scenario, log_format, openai, max_model_calls, protocol)
        }
    }
}

/// `--model`: `shell`, `script` or `openai:MODEL`.
fn parse_model(name: &str) -> Result<String, String> {
    if deputy_agent::is_model_name(name) {
        Ok(name.to_owned())
    } else {
        Err(format!("expected `shell`, `script` or `openai:MODEL` (e.g. openai:gpt-4o-mini), got `{name}`"))
    }
}

/// Writes the completion script to stdout; a closed pipe is not an error
/// worth a panic (exit 141 like the other commands).
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "deputy", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(141),
    }
}

/// `eprintln!` that does not panic on a closed stderr.
macro_rules! say {
    ($($arg:tt)*) => {{ use std::io::Write as _; let _ = writeln!(std::io::stderr(), $($arg)*); }};
}

fn code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs a host command (`exec`, `chat`) on a small runtime, logging to stderr.
fn host<F: std::future::Future<Output = i32>>(run: impl FnOnce() -> F) -> ExitCode {
    deputy_agent::init_logging(deputy_agent::LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("deputy: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let status = runtime.block_on(run());
    // Do not wait for blocking readers (a terminal prompt nobody answers).
    runtime.shutdown_background();
    code(status)
}

fn agent(
    home: Option<PathBuf>,
    model: String,
    scenario: Option<PathBuf>,
    log_format: LogFormatArg,
    openai: deputy_agent::model::openai::OpenAiSettings,
    max_model_calls: u32,
    protocol: deputy_agent::Protocol,
) -> ExitCode {
    deputy_agent::init_logging(match log_format {
        LogFormatArg::Text => deputy_agent::LogFormat::Text,
        LogFormatArg::Json => deputy_agent::LogFormat::Json,
    });
    let Some(home) = home.filter(|h| !h.as_os_str().is_empty()).or_else(deputy_agent::default_home) else {
        say!("deputy agent: no home: set --home, DEPUTY_HOME or HOME");
        return ExitCode::from(1);
    };
    if let Err(e) = deputy_agent::prepare_home(&home) {
        say!("deputy agent: unusable home {}: {e}", home.display());
        return ExitCode::from(1);
    }
    let mut config = deputy_agent::AgentConfig::new(home);
    config.default_model = model;
    config.default_scenario = scenario.map(|s| std::path::absolute(&s).unwrap_or(s));
    config.openai = openai;
    config.max_model_calls = max_model_calls;
    config.protocol = protocol;
    let code = deputy_agent::run_stdio(config);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn schema(dir: &std::path::Path, check: bool) -> ExitCode {
    use deputy_protocol::schema;
    if check {
        match schema::stale_files(dir) {
            Ok(stale) if stale.is_empty() => {
                say!("deputy: {} is up to date", dir.display());
                ExitCode::SUCCESS
            }
            Ok(stale) => {
                say!("deputy: {} is stale; run `deputy schema --out {}`:", dir.display(), dir.display());
                for file in stale {
                    say!("  {file}");
                }
                ExitCode::from(1)
            }
            Err(e) => {
                say!("deputy: cannot read {}: {e}", dir.display());
                ExitCode::from(1)
            }
        }
    } else {
        match schema::write_all(dir) {
            Ok(files) => {
                for file in files {
                    say!("wrote {}", dir.join(file).display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                say!("deputy: cannot write {}: {e}", dir.display());
                ExitCode::from(1)
            }
        }
    }
}
