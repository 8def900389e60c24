//! `deputy sessions`: the rollouts under `DEPUTY_HOME`, newest first.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use deputy_agent::rollout;
use deputy_protocol::{RolloutItem, RolloutLine, SessionMeta, SessionSource, SubAgentSource};

use super::exit;
use super::sanitize::clean;

/// `println!` that stops at the first failed write (a closed pipe): the
/// function returns the error instead of panicking.
macro_rules! out {
    ($w:expr) => { writeln!($w)? };
    ($w:expr, $($arg:tt)*) => { writeln!($w, $($arg)*)? };
}

/// `eprintln!` that ignores a closed stderr (nothing is left to tell).
macro_rules! err {
    ($($arg:tt)*) => {{ let _ = writeln!(std::io::stderr(), $($arg)*); }};
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  deputy sessions list --limit 10\n  deputy sessions show SESSION_ID\n  \
    deputy sessions show SESSION_ID --json | jq -c .type")]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub command: SessionsCommand,

    /// Where sessions are stored (default: $DEPUTY_HOME, else ~/.deputy).
    #[arg(long, value_name = "DIR", global = true)]
    pub home: Option<PathBuf>,

    /// Print JSON lines instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// List the sessions, newest first.
    #[command(after_help = "Examples:\n  deputy sessions list\n  deputy sessions list --limit 5 --json")]
    List {
        /// Show at most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one session's history.
    #[command(after_help = "Examples:\n  deputy sessions show 0192f3c4-5b6a-7c8d-9e0f-112233445566\n  \
        deputy sessions show ~/.deputy/sessions/2026/11/24/rollout-….jsonl --json")]
    Show {
        /// A session id, or a rollout file's path.
        session: String,
    },
}

/// The session meta from a rollout's first line, without reading the rest.
fn read_meta(path: &Path) -> Option<SessionMeta> {
    let file = std::fs::File::open(path).ok()?;
    let mut first = String::new();
    std::io::BufReader::new(file).read_line(&mut first).ok()?;
    match serde_json::from_str::<RolloutLine>(&first).ok()?.item {
        RolloutItem::SessionMeta(meta) => Some(meta),
        _ => None,
    }
}

fn source_name(source: &SessionSource) -> String {
    match source {
        SessionSource::Cli => "cli".into(),
        SessionSource::Exec => "exec".into(),
        SessionSource::Ide => "ide".into(),
        SessionSource::Mcp => "mcp".into(),
        SessionSource::Unknown => "unknown".into(),
        SessionSource::Subagent(SubAgentSource::Review) => "subagent:review".into(),
        SessionSource::Subagent(SubAgentSource::Compact) => "subagent:compact".into(),
        SessionSource::Subagent(SubAgentSource::Other(name)) => format!("subagent:{name}"),
    }
}

pub fn run(args: SessionsArgs) -> i32 {
    let Some(home) = args.home.clone().or_else(deputy_agent::default_home) else {
        err!("deputy: no home directory: set DEPUTY_HOME or pass --home");
        return exit::ERROR;
    };
    let mut stdout = std::io::stdout().lock();
    let done = match args.command {
        SessionsCommand::List { limit } => list(&mut stdout, &home, limit, args.json),
        SessionsCommand::Show { session } => show(&mut stdout, &home, &session, args.json),
    };
    match done.and_then(|code| stdout.flush().map(|()| code)) {
        Ok(code) => code,
        // A closed stdout (`| head`, `| true`): stop quietly.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::BROKEN_PIPE,
        Err(e) => {
            err!("deputy: cannot write the output: {e}");
            exit::ERROR
        }
    }
}

fn list(o: &mut impl Write, home: &Path, limit: Option<usize>, json: bool) -> std::io::Result<i32> {
    let files = match rollout::list(home) {
        Ok(files) => files,
        Err(e) => {
            err!("deputy: cannot read {}: {e}", rollout::sessions_dir(home).display());
            return Ok(exit::ERROR);
        }
    };
    if files.is_empty() && !json {
        err!("deputy: no sessions under {}", rollout::sessions_dir(home).display());
    }
    for path in files.into_iter().take(limit.unwrap_or(usize::MAX)) {
        let Some(meta) = read_meta(&path) else {
            err!("deputy: skipping {}: no session meta on its first line", path.display());
            continue;
        };
        if json {
            let line = serde_json::json!({
                "session_id": meta.session_id,
                "created_at": meta.created_at,
                "model": meta.model,
                "source": meta.source,
                "cwd": meta.cwd,
                "forked_from": meta.forked_from,
                "rollout_path": path,
            });
            out!(o, "{line}");
        } else {
            out!(
                o,
                "{}  {}  {:<8} {:<16} {}",
                clean(&meta.session_id),
                clean(&meta.created_at.to_string()),
                clean(&meta.model),
                clean(&source_name(&meta.source)),
                clean(&meta.cwd.to_string_lossy())
            );
        }
    }
    Ok(exit::OK)
}

fn show(o: &mut impl Write, home: &Path, session: &str, json: bool) -> std::io::Result<i32> {
    let path = if Path::new(session).is_file() {
        PathBuf::from(session)
    } else {
        match rollout::find_by_id(home, session) {
            Ok(Some(path)) => path,
            Ok(None) => {
                err!("deputy: no session {session:?} under {}", rollout::sessions_dir(home).display());
                return Ok(exit::ERROR);
            }
            Err(e) => {
                err!("deputy: cannot search {}: {e}", rollout::sessions_dir(home).display());
                return Ok(exit::ERROR);
            }
        }
    };
    if json {
        // The file's complete lines, verbatim (a torn last line is left out).
        return match std::fs::read(&path) {
            Ok(bytes) => {
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if serde_json::from_slice::<RolloutLine>(line).is_ok() {
                        out!(o, "{}", String::from_utf8_lossy(line));
                    }
                }
                Ok(exit::OK)
            }
            Err(e) => {
                err!("deputy: cannot read {}: {e}", path.display());
                Ok(exit::ERROR)
            }
        };
    }
    let loaded = match rollout::load(&path) {
        Ok(loaded) => loaded,
        Err(e) => {
            err!("deputy: cannot read {}: {e}", path.display());
            return Ok(exit::ERROR);
        }
    };
    if let Some(meta) = &loaded.meta {
        out!(o, "session   {}", clean(&meta.session_id));
        out!(o, "created   {}", clean(&meta.created_at.to_string()));
        out!(o, "model     {}", clean(&meta.model));
        out!(o, "source    {}", clean(&source_name(&meta.source)));
        out!(o, "cwd       {}", clean(&meta.cwd.to_string_lossy()));
        if let Some(from) = &meta.forked_from {
            out!(o, "forked    from {}", clean(from));
        }
    }
    out!(o, "rollout   {}", clean(&path.to_string_lossy()));
    out!(o);
    for item in &loaded.items {
        match item {
            RolloutItem::SessionMeta(_) => {}
            RolloutItem::UserInput { turn_id, items } => {
                let text: Vec<&str> = items
                    .iter()
                    .map(|i| match i {
                        deputy_protocol::InputItem::Text { text } => text.as_str(),
                    })
                    .collect();
                out!(o, "[{}] user: {}", clean(turn_id), clean(&text.join("\n")));
            }
            RolloutItem::AgentMessage { message, .. } => out!(o, "  agent: {}", clean(message)),
            RolloutItem::Reasoning { text, .. } => out!(o, "  (reasoning) {}", clean(text)),
            RolloutItem::ToolCall { name, arguments, .. } => {
                out!(o, "  tool {}: {}", clean(name), clean(&arguments.to_string()))
            }
            RolloutItem::ToolResult { success, output, .. } => {
                let first = output.lines().next().unwrap_or("");
                out!(o, "  → {} {}", if *success { "ok" } else { "failed" }, clean(first));
            }
            RolloutItem::Approval { kind, decision, .. } => out!(o, "  approval {kind:?}: {decision:?}"),
            RolloutItem::TokenCount { info } => {
                out!(o, "  tokens: {} total", info.total_token_usage.total_tokens)
            }
            RolloutItem::TurnComplete { turn_id } => out!(o, "[{}] complete", clean(turn_id)),
            RolloutItem::TurnAborted { turn_id, reason } => {
                out!(o, "[{}] aborted ({})", clean(turn_id), super::render::reason_name(*reason))
            }
        }
    }
    if loaded.dropped_torn_line {
        err!("deputy: the last line of the rollout was torn and is not shown");
    }
    Ok(exit::OK)
}
