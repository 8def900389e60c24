//! `deputy sessions`: the rollouts under `DEPUTY_HOME`, newest first.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use deputy_agent::rollout;
use deputy_protocol::{RolloutItem, RolloutLine, SessionMeta, SessionSource, SubAgentSource};

use super::exit;

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
        eprintln!("deputy: no home directory: set DEPUTY_HOME or pass --home");
        return exit::ERROR;
    };
    match args.command {
        SessionsCommand::List { limit } => list(&home, limit, args.json),
        SessionsCommand::Show { session } => show(&home, &session, args.json),
    }
}

fn list(home: &Path, limit: Option<usize>, json: bool) -> i32 {
    let files = match rollout::list(home) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("deputy: cannot read {}: {e}", rollout::sessions_dir(home).display());
            return exit::ERROR;
        }
    };
    if files.is_empty() && !json {
        eprintln!("deputy: no sessions under {}", rollout::sessions_dir(home).display());
    }
    for path in files.into_iter().take(limit.unwrap_or(usize::MAX)) {
        let Some(meta) = read_meta(&path) else {
            eprintln!("deputy: skipping {}: no session meta on its first line", path.display());
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
            println!("{line}");
        } else {
            println!(
                "{}  {}  {:<8} {:<16} {}",
                meta.session_id,
                meta.created_at,
                meta.model,
                source_name(&meta.source),
                meta.cwd.display()
            );
        }
    }
    exit::OK
}

fn show(home: &Path, session: &str, json: bool) -> i32 {
    let path = if Path::new(session).is_file() {
        PathBuf::from(session)
    } else {
        match rollout::find_by_id(home, session) {
            Ok(Some(path)) => path,
            Ok(None) => {
                eprintln!("deputy: no session {session:?} under {}", rollout::sessions_dir(home).display());
                return exit::ERROR;
            }
            Err(e) => {
                eprintln!("deputy: cannot search {}: {e}", rollout::sessions_dir(home).display());
                return exit::ERROR;
            }
        }
    };
    if json {
        // The file's complete lines, verbatim (a torn last line is left out).
        return match std::fs::read(&path) {
            Ok(bytes) => {
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if serde_json::from_slice::<RolloutLine>(line).is_ok() {
                        println!("{}", String::from_utf8_lossy(line));
                    }
                }
                exit::OK
            }
            Err(e) => {
                eprintln!("deputy: cannot read {}: {e}", path.display());
                exit::ERROR
            }
        };
    }
    let loaded = match rollout::load(&path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("deputy: cannot read {}: {e}", path.display());
            return exit::ERROR;
        }
    };
    if let Some(meta) = &loaded.meta {
        println!("session   {}", meta.session_id);
        println!("created   {}", meta.created_at);
        println!("model     {}", meta.model);
        println!("source    {}", source_name(&meta.source));
        println!("cwd       {}", meta.cwd.display());
        if let Some(from) = &meta.forked_from {
            println!("forked    from {from}");
        }
    }
    println!("rollout   {}", path.display());
    println!();
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
                println!("[{turn_id}] user: {}", text.join("\n"));
            }
            RolloutItem::AgentMessage { message, .. } => println!("  agent: {message}"),
            RolloutItem::Reasoning { text, .. } => println!("  (reasoning) {text}"),
            RolloutItem::ToolCall { name, arguments, .. } => println!("  tool {name}: {arguments}"),
            RolloutItem::ToolResult { success, output, .. } => {
                let first = output.lines().next().unwrap_or("");
                println!("  → {} {first}", if *success { "ok" } else { "failed" });
            }
            RolloutItem::Approval { kind, decision, .. } => println!("  approval {kind:?}: {decision:?}"),
            RolloutItem::TokenCount { info } => {
                println!("  tokens: {} total", info.total_token_usage.total_tokens)
            }
            RolloutItem::TurnComplete { turn_id } => println!("[{turn_id}] complete"),
            RolloutItem::TurnAborted { turn_id, reason } => {
                println!("[{turn_id}] aborted ({})", super::render::reason_name(*reason))
            }
        }
    }
    if loaded.dropped_torn_line {
        eprintln!("deputy: the last line of the rollout was torn and is not shown");
    }
    exit::OK
}
