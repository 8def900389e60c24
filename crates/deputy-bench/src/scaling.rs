//! `deputy-bench scaling`: how each cost grows with the work. Five sweeps,
//! each a table of points next to a floor measured in the same run (and an
//! SVG plot with `--plots DIR`):
//!
//! - event size: events/s and MB/s of the flood through `deputy-host`
//!   (current-thread runtime) against the plain blocking reader, per payload;
//! - approvals in flight: round trip p50/p99 (timed on the agent) against
//!   the echo floor keeping as many in flight;
//! - live conversations: host RSS and descriptors per conversation, spawn p50
//!   against spawning `deputy --version`, as the population grows;
//! - resume: time to `session_configured` and agent peak RSS for rollouts of
//!   growing length, against reading and parsing the file the plainest way;
//! - model calls: per-turn time of an `openai:` agent against a local SSE
//!   server as the history grows, against one plain POST of the same body.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use deputy_host::{ApproveAll, CancellationToken, Conversation, ConversationConfig};
use deputy_protocol::{
    ApprovalPolicy, EventMsg, HistorySource, InitialHistory, InputItem, ModelSelection, Op, RolloutItem,
    RolloutLine, SessionMeta, SessionSource,
};
use serde_json::json;

use crate::floor;
use crate::plot::{self, Plot, Series};
use crate::procfs;
use crate::scenarios::{self, Bench};
use crate::sse::ModelServer;
use crate::stats::{Figure, Summary};

/// The points of each sweep.
#[derive(Debug, Clone, Copy)]
pub struct ScalingSizes {
    /// Delta payload bytes per event.
    pub payloads: &'static [usize],
    /// Payload bytes flooded at each size (the count is this ÷ payload, clamped).
    pub flood_bytes: u64,
    pub flood_min_events: u64,
    pub flood_max_events: u64,
    pub in_flight: &'static [u64],
    pub approvals_per_point: u64,
    pub conversations: &'static [usize],
    pub spawn_floor_runs: usize,
    pub rollout_items: &'static [u64],
    pub history_items: &'static [u64],
    pub turns_per_point: usize,
}

impl ScalingSizes {
    pub const FULL: ScalingSizes = ScalingSizes {
        payloads: &[64, 256, 1024, 4096, 16 * 1024, 64 * 1024, 256 * 1024],
        flood_bytes: 256 << 20,
        flood_min_events: 1_000,
        flood_max_events: 1_000_000,
        in_flight: &[1, 4, 16, 64, 256],
        approvals_per_point: 20_000,
        conversations: &[1, 10, 50, 100, 250, 500],
        spawn_floor_runs: 100,
        rollout_items: &[1_000, 10_000, 100_000, 1_000_000],
        history_items: &[10, 100, 1_000, 10_000],
        turns_per_point: 10,
    };
    pub const QUICK: ScalingSizes = ScalingSizes {
        payloads: &[64, 4096],
        flood_bytes: 256 << 10,
        flood_min_events: 50,
        flood_max_events: 2_000,
        in_flight: &[1, 8],
        approvals_per_point: 40,
        conversations: &[1, 3],
        spawn_floor_runs: 3,
        rollout_items: &[100, 1_000],
        history_items: &[10, 100],
        turns_per_point: 2,
    };
}

/// One sweep: a table (first column is x) and how to plot it.
pub struct Sweep {
    pub name: &'static str,
    pub title: &'static str,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<f64>>,
    /// Which columns are drawn (by index), the y axis label, log y.
    pub plot: (Vec<usize>, &'static str, bool),
    /// Figures with targets (linearity), beside the table.
    pub checks: Vec<Figure>,
}

impl Sweep {
    fn new(name: &'static str, title: &'static str, columns: Vec<&'static str>) -> Sweep {
        Sweep { name, title, columns, rows: Vec::new(), plot: (Vec::new(), "", false), checks: Vec::new() }
    }

    /// A Markdown table of the points.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.columns.join(" | "));
        out.push_str(&"---|".repeat(self.columns.len()));
        out.push('\n');
        for row in &self.rows {
            out.push('|');
            for v in row {
                let _ = write!(out, " {} |", cell(*v));
            }
            out.push('\n');
        }
        out
    }

    /// One figure per point (for `--json`): every column in `detail`.
    pub fn figures(&self) -> Vec<Figure> {
        let mut figures: Vec<Figure> = self
            .rows
            .iter()
            .map(|row| {
                let detail: serde_json::Map<String, serde_json::Value> =
                    self.columns.iter().zip(row).map(|(c, v)| ((*c).to_owned(), json!(v))).collect();
                let mut f = Figure::new("scaling", format!("{} at {}", self.name, cell(row[0])), row[1], "")
                    .detail(serde_json::Value::Object(detail));
                f.unit = self.columns[1];
                f
            })
            .collect();
        figures.extend(self.checks.iter().cloned());
        figures
    }

    pub fn write_plot(&self, dir: &Path) -> Result<PathBuf> {
        let (columns, y_label, log_y) = &self.plot;
        let series = columns
            .iter()
            .map(|&c| Series {
                label: self.columns[c].to_owned(),
                points: self.rows.iter().map(|r| (r[0], r[c])).collect(),
            })
            .collect();
        let path = dir.join(format!("scaling-{}.svg", self.name.replace('_', "-")));
        plot::write_svg(
            &path,
            &Plot { title: self.title, x_label: self.columns[0], y_label, log_y: *log_y, series },
        )?;
        Ok(path)
    }
}

/// Numbers for tables: integers as such, others with 3 significant digits.
fn cell(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub async fn all(bench: &Bench, sizes: ScalingSizes) -> Result<Vec<Sweep>> {
    Ok(vec![
        event_size(bench, sizes)?,
        approvals_in_flight(bench, sizes).await?,
        live_conversations(bench, sizes).await?,
        resume(bench, sizes).await?,
        model_calls(bench, sizes).await?,
    ])
}

// ---------------------------------------------------------------- event size

pub fn event_size(bench: &Bench, sizes: ScalingSizes) -> Result<Sweep> {
    let mut sweep = Sweep::new(
        "event_size",
        "Event size: flood through deputy-host vs the plain reader",
        vec!["payload B", "MB/s", "floor MB/s", "ratio", "events/s", "floor events/s", "line B", "events"],
    );
    for &payload in sizes.payloads {
        let n = (sizes.flood_bytes / payload as u64).clamp(sizes.flood_min_events, sizes.flood_max_events);
        let delta = "x".repeat(payload);
        let line = floor::flood_line(scenarios::FLOOD_SUBMISSION, &delta);
        let floor_rate = floor::throughput_floor(&line, n)?.events_per_s;
        let report = scenarios::flood_through_host(bench, n, false, Some(payload), false)?;
        let rate = report.events as f64 / report.seconds;
        let line_bytes = (line.len() + 1) as f64;
        let mb = |events_per_s: f64| events_per_s * line_bytes / 1e6;
        sweep.rows.push(vec![
            payload as f64,
            mb(rate),
            mb(floor_rate),
            rate / floor_rate,
            rate,
            floor_rate,
            line_bytes,
            n as f64,
        ]);
    }
    sweep.plot = (vec![1, 2], "MB/s (event lines)", true);
    Ok(sweep)
}

// ------------------------------------------------------- approvals in flight

/// `p50 N us, p99 M us` out of the probe's closing message.
fn probe_percentiles(message: &str) -> Option<(f64, f64)> {
    let after = |key: &str| -> Option<f64> {
        let rest = &message[message.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((after("round trip p50 ")?, after(", p99 ")?))
}

pub async fn approvals_in_flight(bench: &Bench, sizes: ScalingSizes) -> Result<Sweep> {
    let mut sweep = Sweep::new(
        "approvals_in_flight",
        "Approvals in flight: round trip (timed on the agent) vs the echo floor",
        vec!["in flight", "p50 us", "p99 us", "floor p50 us", "floor p99 us", "ratio p50", "approvals/s"],
    );
    let n = sizes.approvals_per_point;
    for &k in sizes.in_flight {
        let echo = floor::echo_floor_in_flight(n as usize, k as usize)?;
        let echo = Summary::of_durations_ms(&echo);
        let steps = json!([{"type": "ask_approval_only", "n": n, "in_flight": k}]);
        let mut conversation = bench.start_turn("approvals-in-flight", steps).await?;
        let started = Instant::now();
        let mut summary = String::new();
        while let Some(event) = conversation.next_event().await {
            match event.msg {
                EventMsg::AgentMessage { message } => summary = message,
                EventMsg::TaskComplete { .. } => break,
                EventMsg::TurnAborted { .. } => bail!("the approvals turn was aborted"),
                _ => {}
            }
        }
        let elapsed = started.elapsed();
        conversation.shutdown().await?;
        ensure!(summary.contains(&format!("{n} approved")), "the agent reported: {summary:?}");
        let (p50, p99) =
            probe_percentiles(&summary).context("no round-trip percentiles in the agent's message")?;
        let (f50, f99) = (echo.median * 1e3, echo.p99 * 1e3);
        sweep.rows.push(vec![k as f64, p50, p99, f50, f99, p50 / f50, n as f64 / elapsed.as_secs_f64()]);
    }
    sweep.plot = (vec![1, 2, 3, 4], "round trip, us", true);
    Ok(sweep)
}

// ------------------------------------------------------- live conversations

pub async fn live_conversations(bench: &Bench, sizes: ScalingSizes) -> Result<Sweep> {
    let mut sweep = Sweep::new(
        "conversations",
        "Live conversations: host cost per conversation, spawn time",
        vec![
            "live",
            "host RSS KiB/conv",
            "fds/conv",
            "spawn p50 ms",
            "floor p50 ms",
            "ratio",
            "spawn p99 ms",
        ],
    );
    let floor = floor::spawn_floor(&bench.deputy, &["--version"], sizes.spawn_floor_runs)?;
    let floor = Summary::of_durations_ms(&floor);
    // Warm up once, so lazily initialised state is not counted per conversation.
    let mut warm = spawn_shell(bench).await?;
    warm.shutdown().await?;
    let me = std::process::id();
    let rss_before = procfs::rss_kib(me).unwrap_or(0);
    let fds_before = procfs::open_fds().unwrap_or(0);
    let mut live: Vec<Conversation> = Vec::new();
    for &target in sizes.conversations {
        let mut spawns = Vec::new();
        while live.len() < target {
            let started = Instant::now();
            live.push(spawn_shell(bench).await?);
            spawns.push(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = live.len() as f64;
        let rss = procfs::rss_kib(me).unwrap_or(0).saturating_sub(rss_before) as f64 / n;
        let fds = (procfs::open_fds().unwrap_or(0) as f64 - fds_before as f64) / n;
        let s = Summary::of_durations_ms(&spawns);
        sweep.rows.push(vec![n, rss, fds, s.median, floor.median, s.median / floor.median, s.p99]);
    }
    let shutdowns = live.iter_mut().map(|c| c.shutdown());
    for ending in futures::future::join_all(shutdowns).await {
        ending?;
    }
    sweep.plot = (vec![1, 2, 3, 4], "per conversation (KiB, fds) / ms", true);
    Ok(sweep)
}

async fn spawn_shell(bench: &Bench) -> Result<Conversation> {
    let mut session = bench.shell_session();
    session.approval_policy = ApprovalPolicy::AskAlways;
    Ok(Conversation::spawn(
        bench.agent(),
        ConversationConfig::new(session),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await?)
}

// -------------------------------------------------------------------- resume

/// Writes a rollout of `items` items after its session meta: turns of a user
/// input, a tool call and its result, an agent message, a turn end; each
/// text about 100 bytes. Returns the file's size.
fn write_rollout(path: &Path, items: u64, messages_only: bool) -> Result<u64> {
    use std::io::Write as _;
    let file = std::fs::File::create(path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let ts = "2026-12-01T00:00:00.000Z".to_owned();
    let meta = RolloutItem::SessionMeta(SessionMeta {
        session_id: format!("bench-{items}"),
        created_at: ts.clone(),
        cwd: "/tmp".into(),
        source: SessionSource::Exec,
        model: "shell".into(),
        approval_policy: ApprovalPolicy::NeverAsk,
        forked_from: None,
        agent_version: "bench".into(),
    });
    let text =
        "All work and no play makes Jack a dull boy; the history grows by one line, and so does the load.";
    let mut write = |item: RolloutItem| -> Result<()> {
        serde_json::to_writer(&mut out, &RolloutLine { timestamp: ts.clone(), item })?;
        out.write_all(b"\n")?;
        Ok(())
    };
    write(meta)?;
    for i in 0..items {
        let turn_id = format!("t{}", i / 5);
        let kind = if messages_only { i % 2 * 3 } else { i % 5 };
        write(match kind {
            0 => RolloutItem::UserInput {
                turn_id,
                items: vec![InputItem::Text { text: format!("{i}: {text}") }],
            },
            1 => RolloutItem::ToolCall {
                turn_id,
                call_id: format!("c{i}"),
                name: "shell".into(),
                arguments: json!({"command": ["echo", text]}),
            },
            2 => RolloutItem::ToolResult {
                turn_id,
                call_id: format!("c{}", i - 1),
                success: true,
                output: format!("exit code: 0\n{text}"),
            },
            3 => RolloutItem::AgentMessage { turn_id, message: format!("{i}: {text}") },
            _ => RolloutItem::TurnComplete { turn_id },
        })?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

pub async fn resume(bench: &Bench, sizes: ScalingSizes) -> Result<Sweep> {
    let mut sweep = Sweep::new(
        "resume",
        "Resume: rollout load (to session_configured, less a new session's) vs reading and parsing the file",
        vec![
            "items",
            "load ms",
            "floor ms",
            "ratio",
            "load us/item",
            "agent peak RSS MiB",
            "RSS B/item",
            "file B/item",
            "spawn ms",
        ],
    );
    let dir = bench.scratch.path().join("rollouts");
    std::fs::create_dir_all(&dir)?;
    // The load time is the time to `session_configured` less that of a new
    // session (spawn, handshake): the median of a few.
    let mut empty = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (mut conversation, _) = spawn_counting_history(bench, bench.shell_session()).await?;
        empty.push(started.elapsed());
        conversation.shutdown().await?;
    }
    let spawn_ms = Summary::of_durations_ms(&empty).median;
    for &items in sizes.rollout_items {
        let path = dir.join(format!("rollout-{items}.jsonl"));
        let file_bytes = write_rollout(&path, items, false)?;
        let started = Instant::now();
        ensure!(floor::rollout_floor(&path)? as u64 == items + 1, "the floor parsed the wrong count");
        let floor_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut session = bench.shell_session();
        session.initial_history = InitialHistory::Resumed { from: HistorySource::RolloutPath(path.clone()) };
        let started = Instant::now();
        let (mut conversation, history_len) = spawn_counting_history(bench, session).await?;
        let load_ms = (started.elapsed().as_secs_f64() * 1e3 - spawn_ms).max(0.001);
        let peak_kib = procfs::peak_rss_kib(conversation.pid()).unwrap_or(0);
        conversation.shutdown().await?;
        ensure!(history_len == items, "the agent loaded {history_len} of {items} items");
        sweep.rows.push(vec![
            items as f64,
            load_ms,
            floor_ms,
            load_ms / floor_ms,
            load_ms * 1e3 / items as f64,
            peak_kib as f64 / 1024.0,
            peak_kib as f64 * 1024.0 / items as f64,
            file_bytes as f64 / items as f64,
            spawn_ms,
        ]);
        std::fs::remove_file(&path)?;
    }
    linearity(&mut sweep, "resume", 1, 2, "load time");
    sweep.plot = (vec![1, 2, 5], "ms / MiB", true);
    Ok(sweep)
}

/// Spawns a conversation and returns it with the `history_len` of its
/// `session_configured`.
async fn spawn_counting_history(
    bench: &Bench,
    session: deputy_protocol::SessionStartParams,
) -> Result<(Conversation, u64)> {
    let config = ConversationConfig::new(session).event_filter(deputy_host::EventFilter::All);
    let mut conversation =
        Conversation::spawn(bench.agent(), config, Arc::new(ApproveAll), CancellationToken::new()).await?;
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = conversation.next_event() => match event.map(|e| e.msg) {
                Some(EventMsg::SessionConfigured { history_len, .. }) => return Ok((conversation, history_len)),
                Some(_) => {}
                None => bail!("the agent ended before session_configured: {:?}", conversation.error()),
            },
            () = &mut deadline => bail!("no session_configured within 60 s"),
        }
    }
}

/// Adds a check that the cost per item at the largest point is at most 1.5×
/// the cost per item at the second point (the first is mostly fixed cost):
/// the cost grows linearly, not worse. Compared as ratios to the floor at
/// each point, so a busier machine at one point does not read as a curve.
fn linearity(sweep: &mut Sweep, scenario: &'static str, value: usize, floor: usize, what: &str) {
    if sweep.rows.len() < 3 {
        return;
    }
    let (second, last) = (&sweep.rows[1], &sweep.rows[sweep.rows.len() - 1]);
    let per_item = |row: &Vec<f64>| row[value] / row[0];
    let floor_per_item = |row: &Vec<f64>| row[floor] / row[0];
    let growth = (per_item(last) / per_item(second)) / (floor_per_item(last) / floor_per_item(second));
    sweep.checks.push(
        Figure::new(
            scenario,
            format!("{what} per item, {} vs {} items", cell(last[0]), cell(second[0])),
            growth,
            "×",
        )
        .target("<= 1.5 (linear)", growth <= 1.5)
        .detail(json!({
            "per_item_us_small": per_item(second) * 1e3,
            "per_item_us_large": per_item(last) * 1e3,
            "floor_per_item_us_small": floor_per_item(second) * 1e3,
            "floor_per_item_us_large": floor_per_item(last) * 1e3,
        })),
    );
}

// --------------------------------------------------------------- model calls

pub async fn model_calls(bench: &Bench, sizes: ScalingSizes) -> Result<Sweep> {
    let mut sweep = Sweep::new(
        "model_calls",
        "Model calls: per-turn time against a local SSE server vs one plain POST",
        vec![
            "history items",
            "turn p50 ms",
            "floor p50 ms",
            "ratio",
            "overhead ms",
            "request KiB",
            "overhead us/item",
        ],
    );
    let server = ModelServer::start()?;
    let dir = bench.scratch.path().join("histories");
    std::fs::create_dir_all(&dir)?;
    for &items in sizes.history_items {
        let path = dir.join(format!("history-{items}.jsonl"));
        write_rollout(&path, items, true)?;
        let mut session = bench.shell_session();
        session.initial_history = InitialHistory::Resumed { from: HistorySource::RolloutPath(path.clone()) };
        session.model = Some(ModelSelection {
            base_url: Some(server.base_url()),
            ..ModelSelection::named("openai:bench")
        });
        let (mut conversation, _) = spawn_counting_history(bench, session).await?;
        server.take_bodies();
        let mut turns = Vec::with_capacity(sizes.turns_per_point);
        for t in 0..sizes.turns_per_point + 1 {
            let started = Instant::now();
            conversation.submit_with_id(format!("turn-{t}"), Op::text("hi")).await?;
            loop {
                match conversation.next_event().await.map(|e| e.msg) {
                    Some(EventMsg::TaskComplete { .. }) => break,
                    Some(EventMsg::Error { message }) => bail!("the model turn failed: {message}"),
                    Some(EventMsg::TurnAborted { .. }) => bail!("the model turn was aborted"),
                    Some(_) => {}
                    None => bail!("the agent ended: {:?}", conversation.error()),
                }
            }
            if t > 0 {
                turns.push(started.elapsed()); // the first is a warm-up
            }
        }
        conversation.shutdown().await?;
        let bodies = server.take_bodies();
        ensure!(bodies.len() == sizes.turns_per_point + 1, "the server saw {} model calls", bodies.len());
        let body = bodies.last().expect("checked").clone();
        let mut posts = Vec::with_capacity(sizes.turns_per_point);
        for _ in 0..sizes.turns_per_point + 1 {
            let started = Instant::now();
            floor::http_post_floor(server.port, &body)?;
            posts.push(started.elapsed());
        }
        server.take_bodies();
        let turn = Summary::of_durations_ms(&turns);
        let post = Summary::of_durations_ms(&posts[1..]);
        let overhead = turn.median - post.median;
        sweep.rows.push(vec![
            items as f64,
            turn.median,
            post.median,
            turn.median / post.median,
            overhead,
            body.len() as f64 / 1024.0,
            overhead * 1e3 / items as f64,
        ]);
        std::fs::remove_file(&path)?;
    }
    sweep.plot = (vec![1, 2, 4], "ms per turn", true);
    Ok(sweep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_of_the_probe_message() {
        let m = "ask_approval_only: 5 round trips: 5 approved, 0 denied, 0 abort, 0 failed; 2 in flight, round trip p50 81 us, p99 140 us";
        assert_eq!(probe_percentiles(m), Some((81.0, 140.0)));
        assert_eq!(probe_percentiles("ask_approval_only: 5 round trips"), None);
    }

    #[test]
    fn tables_are_markdown() {
        let mut s = Sweep::new("x", "A title", vec!["n", "ms"]);
        s.rows = vec![vec![10.0, 1.234], vec![1000.0, 123.4]];
        assert_eq!(s.markdown(), "### A title\n\n| n | ms |\n|---|---|\n| 10 | 1.23 |\n| 1000 | 123 |\n");
    }

    #[test]
    fn linear_growth_passes_and_quadratic_fails() {
        let mut s = Sweep::new("x", "t", vec!["n", "ms", "floor"]);
        s.rows = vec![vec![10.0, 5.0, 1.0], vec![100.0, 10.0, 10.0], vec![1000.0, 100.0, 100.0]];
        linearity(&mut s, "x", 1, 2, "time");
        assert_eq!(s.checks[0].met, Some(true));
        let mut q = Sweep::new("x", "t", vec!["n", "ms", "floor"]);
        q.rows = vec![vec![10.0, 1.0, 1.0], vec![100.0, 10.0, 10.0], vec![1000.0, 1000.0, 100.0]];
        linearity(&mut q, "x", 1, 2, "time");
        assert_eq!(q.checks[0].met, Some(false));
    }
}
