//! `deputy-bench`: Deputy's figures, each next to a floor measured in the
//! same run, reported as a ratio (`value ÷ floor`) that survives a noisy
//! machine. See the README's "Performance" section.
//!
//! ```sh
//! cargo build --release
//! cargo run --release -p deputy-bench -- all          # a table for people
//! cargo run --release -p deputy-bench -- all --json   # one JSON object per figure
//! cargo run --release -p deputy-bench -- all --quick  # a smoke run: works, not how fast
//! ```

mod floor;
mod plot;
mod procfs;
mod scaling;
mod scenarios;
mod sse;
mod stats;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use scenarios::{Bench, Sizes};
use stats::Figure;

#[derive(Parser)]
#[command(
    name = "deputy-bench",
    about = "Deputy's benchmarks, each figure next to a floor measured in the same run",
    after_help = "Scenarios: throughput, approvals, spawn, cancel, fanout, soak, sandbox, all;\n\
        scaling (how cost grows; `--plots DIR` writes SVGs).\n\
        Needs the `deputy` binary next to this one (`cargo build --release`) or DEPUTY_BIN.\n\n\
        Examples:\n  cargo run --release -p deputy-bench -- all\n  \
        cargo run --release -p deputy-bench -- throughput --json\n  \
        cargo run --release -p deputy-bench -- all --quick"
)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// Which scenario to run.
    #[arg(value_enum)]
    scenario: Option<Scenario>,
    /// Print one JSON object per figure instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// A smoke run with tiny counts: proves the scenarios work, measures nothing.
    #[arg(long, global = true)]
    quick: bool,
    /// `cancel`: this many runs of each kind instead of 200 (3 with --quick).
    #[arg(long, global = true, value_name = "N")]
    cancel_runs: Option<usize>,
    /// `scaling`: also write one SVG plot per sweep into this folder.
    #[arg(long, global = true, value_name = "DIR")]
    plots: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Role {
    /// (internal) the throughput floor's writer.
    #[command(name = "__floor-writer", hide = true)]
    FloorWriter {
        #[arg(long)]
        count: u64,
    },
    /// (internal) the approvals floor's echo child.
    #[command(name = "__echo-child", hide = true)]
    EchoChild,
    /// (internal) the throughput scenario's host, in a process of its own.
    #[command(name = "__throughput-host", hide = true)]
    ThroughputHost {
        #[arg(long)]
        count: u64,
        /// Run the host on a multi-thread runtime instead of a current-thread one.
        #[arg(long)]
        multi_thread: bool,
        /// The delta payload of each event, in bytes (default: 150-byte lines).
        #[arg(long)]
        delta_bytes: Option<usize>,
        /// The agent speaks ACP and the host uses its ACP dialect.
        #[arg(long)]
        acp: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Throughput,
    Approvals,
    Spawn,
    Cancel,
    Fanout,
    Soak,
    Sandbox,
    /// How each cost grows with the work (not part of `all`).
    Scaling,
    All,
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.role, cli.scenario) {
        (Some(Role::FloorWriter { count }), _) => floor::floor_writer(count),
        (Some(Role::EchoChild), _) => floor::echo_child(),
        (Some(Role::ThroughputHost { count, multi_thread, delta_bytes, acp }), _) => if multi_thread {
            runtime()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(scenarios::throughput_host(count, delta_bytes, acp)))
        .map(|report| println!("{}", serde_json::to_string(&report).expect("reports serialize"))),
        (None, Some(Scenario::Scaling)) => scaling(cli.quick, cli.json, cli.plots.as_deref()),
        (None, Some(scenario)) => run(scenario, cli.quick, cli.json, cli.cancel_runs),
        (None, None) => {
            eprintln!("deputy-bench: name a scenario (see --help)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deputy-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(scenario: Scenario, quick: bool, json: bool, cancel_runs: Option<usize>) -> anyhow::Result<()> {
    let mut sizes = if quick { Sizes::QUICK } else { Sizes::FULL };
    if let Some(runs) = cancel_runs {
        anyhow::ensure!(runs > 0, "--cancel-runs must be at least 1");
        sizes.cancels = runs;
    }
    let bench = Bench::new(sizes)?;
    let rt = runtime()?;
    let all = scenario == Scenario::All;
    let mut missed = 0;
    let mut emit = |figures: anyhow::Result<Vec<Figure>>| -> anyhow::Result<()> {
        for figure in figures? {
            if figure.met == Some(false) {
                missed += 1;
            }
            if json {
                println!("{}", serde_json::to_string(&figure).expect("figures serialize"));
            } else {
                println!("{}", figure.human());
            }
        }
        Ok(())
    };
    if !json {
        println!("{}", machine());
    }
    if all || scenario == Scenario::Throughput {
        emit(scenarios::throughput(&bench))?;
    }
    if all || scenario == Scenario::Approvals {
        emit(rt.block_on(scenarios::approvals(&bench)))?;
    }
    if all || scenario == Scenario::Spawn {
        emit(rt.block_on(scenarios::spawn(&bench)))?;
    }
    if all || scenario == Scenario::Cancel {
        emit(rt.block_on(scenarios::cancel(&bench)))?;
    }
    if all || scenario == Scenario::Fanout {
        emit(rt.block_on(scenarios::fanout(&bench)))?;
    }
    if all || scenario == Scenario::Soak {
        emit(rt.block_on(scenarios::soak(&bench)))?;
    }
    if all || scenario == Scenario::Sandbox {
        emit(rt.block_on(scenarios::sandbox(&bench)))?;
    }
    if !json && !quick && missed > 0 {
        println!("{missed} target(s) missed");
    }
    Ok(())
}

fn scaling(quick: bool, json: bool, plots: Option<&std::path::Path>) -> anyhow::Result<()> {
    let bench = Bench::new(Sizes::QUICK)?;
    let sizes = if quick { scaling::ScalingSizes::QUICK } else { scaling::ScalingSizes::FULL };
    let rt = runtime()?;
    if !json {
        println!("{}\n", machine());
    }
    if let Some(dir) = plots {
        // Before the sweeps run, so a bad folder fails at once.
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the plots folder {}", dir.display()))?;
    }
    let sweeps = rt.block_on(scaling::all(&bench, sizes))?;
    for sweep in &sweeps {
        if json {
            for mut figure in sweep.figures() {
                figure.load = Some(load_average());
                println!("{}", serde_json::to_string(&figure).expect("figures serialize"));
            }
        } else {
            println!("# {}\n{}", load_average(), sweep.markdown());
            for check in &sweep.checks {
                println!("{}\n", check.human());
            }
        }
        if let Some(dir) = plots {
            let path = sweep.write_plot(dir)?;
            if !json {
                println!("plot: {}\n", path.display());
            }
        }
    }
    Ok(())
}

/// `load average 0.52 0.40 0.31` (1, 5, 15 minutes), from `/proc/loadavg`:
/// printed next to the figures, since the machine is shared.
pub fn load_average() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = avg.split_whitespace().take(3).collect();
    format!("load average {}", fields.join(" "))
}

/// One line describing the machine, for the record.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("# {cpus} cores, {model}; {}", load_average())
}
