//! The `deputy` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "deputy",
    version,
    about = "Run an AI sub-agent as a child process speaking newline-delimited JSON-RPC 2.0",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema { out, check } => schema(&out, check),
    }
}

fn schema(dir: &std::path::Path, check: bool) -> ExitCode {
    use deputy_protocol::schema;
    if check {
        match schema::stale_files(dir) {
            Ok(stale) if stale.is_empty() => {
                eprintln!("deputy: {} is up to date", dir.display());
                ExitCode::SUCCESS
            }
            Ok(stale) => {
                eprintln!("deputy: {} is stale; run `deputy schema --out {}`:", dir.display(), dir.display());
                for file in stale {
                    eprintln!("  {file}");
                }
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("deputy: cannot read {}: {e}", dir.display());
                ExitCode::from(1)
            }
        }
    } else {
        match schema::write_all(dir) {
            Ok(files) => {
                for file in files {
                    eprintln!("wrote {}", dir.join(file).display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("deputy: cannot write {}: {e}", dir.display());
                ExitCode::from(1)
            }
        }
    }
}
