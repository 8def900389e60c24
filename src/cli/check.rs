//! `deputy check -- CMD ARGS…`: the conformance battery of `deputy-check`
//! against any program that claims the protocol.

use std::ffi::OsString;
use std::io::Write as _;
use std::time::Duration;

/// The flags of `deputy check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The protocol the program claims: `deputy` (PROTOCOL.md) or `acp`
    /// (the Agent Client Protocol, as PROTOCOL.md §8 maps it).
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value_t = CheckProtocol::Deputy)]
    pub protocol: CheckProtocol,

    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Under each failed check, show the last lines of the conversation and
    /// of the agent's stderr.
    #[arg(long, short)]
    pub verbose: bool,

    /// How long any one expected answer or event is waited for (where no
    /// tighter bound applies), e.g. `10s`, `30s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// The program to check and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `--protocol` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckProtocol {
    /// Deputy's own protocol.
    Deputy,
    /// The Agent Client Protocol v1.
    Acp,
}

/// Runs the battery and prints the report; 0 when every check passed (or
/// was skipped), 1 when one failed, 141 when stdout was closed.
pub fn run(args: CheckArgs) -> i32 {
    let Some((program, rest)) = args.command.split_first() else {
        eprintln!("deputy check: name the program to check after `--`");
        return super::exit::USAGE;
    };
    let mut options = deputy_check::Options::new(program.clone(), rest.iter().cloned());
    options.protocol = match args.protocol {
        CheckProtocol::Deputy => deputy_check::Protocol::Deputy,
        CheckProtocol::Acp => deputy_check::Protocol::Acp,
    };
    options.timeout = args.timeout;
    let report = deputy_check::run(&options);
    let text = if args.json { format!("{}\n", report.to_json()) } else { report.table(args.verbose) };
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).is_err() {
        return super::exit::BROKEN_PIPE;
    }
    if report.passed() { super::exit::OK } else { super::exit::ERROR }
}
