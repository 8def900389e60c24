//! The measured scenarios. Each returns its figures; the floors they are held
//! against are measured in the same run (see [`crate::floor`]).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use deputy_host::{
    AgentCommand, AgentProtocol, ApprovalContext, ApproveAll, Approver, CancellationToken, Conversation,
    ConversationConfig, EventFilter, OneShot, async_trait,
};
use deputy_protocol::{
    ApprovalPolicy, EventMsg, ExecApprovalParams, InputItem, ModelSelection, Op, PatchApprovalParams,
    ReviewDecision, SessionStartParams,
};
use serde_json::json;

use crate::floor;
use crate::procfs;
use crate::stats::{Figure, Summary};

/// Sizes of a run: full, or a smoke run that only proves the scenarios work.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub flood_events: u64,
    pub approvals: u64,
    pub echo_round_trips: usize,
    pub spawns: usize,
    pub cancels: usize,
    pub fanout: usize,
    pub soak: usize,
    pub sandbox_spawns: usize,
}

impl Sizes {
    pub const FULL: Sizes = Sizes {
        flood_events: 1_000_000,
        approvals: 100_000,
        echo_round_trips: 100_000,
        spawns: 200,
        cancels: 200,
        fanout: 100,
        soak: 2_000,
        sandbox_spawns: 400,
    };
    pub const QUICK: Sizes = Sizes {
        flood_events: 2_000,
        approvals: 200,
        echo_round_trips: 200,
        spawns: 5,
        cancels: 3,
        fanout: 5,
        soak: 10,
        sandbox_spawns: 5,
    };
}

/// The text of each flooded delta: with the submission id `flood`, each event
/// line is 150 bytes plus its newline.
pub const FLOOD_SUBMISSION: &str = "flood";
pub fn flood_delta() -> String {
    let overhead = floor::flood_line(FLOOD_SUBMISSION, "").len();
    "x".repeat(150 - overhead)
}

/// Everything a scenario needs: where the agent is and a scratch folder.
pub struct Bench {
    pub deputy: PathBuf,
    pub scratch: tempfile::TempDir,
    pub sizes: Sizes,
}

impl Bench {
    pub fn new(sizes: Sizes) -> Result<Bench> {
        let deputy = deputy_binary()?;
        let scratch = tempfile::Builder::new().prefix("deputy-bench-").tempdir()?;
        std::fs::create_dir_all(scratch.path().join("home"))?;
        std::fs::create_dir_all(scratch.path().join("work"))?;
        Ok(Bench { deputy, scratch, sizes })
    }

    fn home(&self) -> PathBuf {
        self.scratch.path().join("home")
    }

    fn work(&self) -> PathBuf {
        self.scratch.path().join("work")
    }

    /// `deputy agent` with the bench's home.
    pub fn agent(&self) -> AgentCommand {
        let mut cmd = AgentCommand::new(&self.deputy);
        cmd.arg("agent").env("DEPUTY_HOME", self.home()).env_remove("RUST_LOG");
        cmd
    }

    /// Writes a one-turn scenario and returns a session that plays it.
    fn scripted(&self, name: &str, steps: serde_json::Value) -> Result<SessionStartParams> {
        let path = self.scratch.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, format!("{}\n", json!({ "steps": steps })))?;
        let mut session = SessionStartParams::new(self.work());
        session.model = Some(ModelSelection { scenario: Some(path), ..ModelSelection::named("script") });
        Ok(session)
    }

    /// Spawns an agent playing a one-turn scenario and starts that turn.
    pub async fn start_turn(&self, name: &str, steps: serde_json::Value) -> Result<Conversation> {
        let session = self.scripted(name, steps)?;
        let conversation = Conversation::spawn(
            self.agent(),
            ConversationConfig::new(session),
            Arc::new(ApproveAll),
            CancellationToken::new(),
        )
        .await?;
        conversation.submit_with_id("turn", Op::text("go")).await?;
        Ok(conversation)
    }

    pub fn shell_session(&self) -> SessionStartParams {
        SessionStartParams::new(self.work())
    }
}

/// The `deputy` binary the agents run: `$DEPUTY_BIN`, else the one built next
/// to this benchmark.
fn deputy_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("DEPUTY_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the benchmark has no folder")?;
    for candidate in [dir.join("deputy"), dir.join("../deputy")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no `deputy` binary next to {}: build it first (`cargo build --release`), or set DEPUTY_BIN",
        exe.display()
    )
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------- throughput

/// What the throughput host subprocess reports.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct FloodReport {
    pub events: u64,
    pub seconds: f64,
    pub host_peak_kib: u64,
    pub agent_peak_kib: u64,
    /// CPU time (user + system) of the host process during the flood, s.
    #[serde(default)]
    pub host_cpu_s: f64,
    /// CPU time of the agent process during the flood, s.
    #[serde(default)]
    pub agent_cpu_s: f64,
    /// The anonymous part of the agent's RSS at the end of the flood, KiB.
    #[serde(default)]
    pub agent_anon_kib: u64,
}

/// Runs in a fresh process (`deputy-bench __throughput-host`) so its peak RSS
/// is the host's alone. `acp`: the agent speaks ACP (`deputy agent
/// --protocol acp`, the scenario given on its command line, as ACP sessions
/// cannot name one) and the host uses its ACP dialect.
pub async fn throughput_host(n: u64, delta_bytes: Option<usize>, acp: bool) -> Result<FloodReport> {
    let bench = Bench::new(Sizes::QUICK)?;
    let delta = delta_bytes.map_or_else(flood_delta, |b| "x".repeat(b));
    let mut session = bench.scripted("flood", json!([{"type": "flood", "n": n, "delta": delta}]))?;
    let mut agent = bench.agent();
    let mut config = ConversationConfig::new(session.clone()).event_filter(EventFilter::All);
    if acp {
        let scenario = session.model.take().and_then(|m| m.scenario).context("the flood's scenario")?;
        agent.args(["--protocol", "acp", "--model", "script", "--scenario"]).arg(scenario);
        config = ConversationConfig::new(session).event_filter(EventFilter::All).protocol(AgentProtocol::Acp);
    }
    let mut conversation =
        Conversation::spawn(agent, config, Arc::new(ApproveAll), CancellationToken::new()).await?;
    let agent_pid = conversation.pid();
    let me = std::process::id();
    let cpu_before = (procfs::cpu_seconds(me).unwrap_or(0.0), procfs::cpu_seconds(agent_pid).unwrap_or(0.0));
    let started = Instant::now();
    conversation.submit_with_id(FLOOD_SUBMISSION, Op::text("go")).await?;
    let mut events = 0u64;
    loop {
        let Some(event) = conversation.next_event().await else { bail!("the agent ended during the flood") };
        match event.msg {
            EventMsg::AgentMessageDelta { delta } => {
                std::hint::black_box(delta);
                events += 1;
            }
            EventMsg::TaskComplete { .. } => break,
            EventMsg::TurnAborted { .. } | EventMsg::Error { .. } => {
                bail!("the flood turn failed: {event:?}")
            }
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let host_cpu_s = procfs::cpu_seconds(me).unwrap_or(0.0) - cpu_before.0;
    let agent_cpu_s = procfs::cpu_seconds(agent_pid).unwrap_or(0.0) - cpu_before.1;
    let agent_peak_kib = procfs::peak_rss_kib(agent_pid).unwrap_or(0);
    let agent_anon_kib = procfs::rss_anon_kib(agent_pid).unwrap_or(0);
    conversation.shutdown().await?;
    ensure!(events == n, "received {events} of {n} events");
    Ok(FloodReport {
        events,
        seconds,
        host_peak_kib: procfs::peak_rss_kib(std::process::id()).unwrap_or(0),
        agent_peak_kib,
        host_cpu_s,
        agent_cpu_s,
        agent_anon_kib,
    })
}

/// Runs the host half of a flood of `n` events in a process of its own;
/// `delta_bytes` sets the payload (default: 150-byte lines).
pub fn flood_through_host(
    bench: &Bench,
    n: u64,
    multi_thread: bool,
    delta_bytes: Option<usize>,
    acp: bool,
) -> Result<FloodReport> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["__throughput-host", "--count", &n.to_string()]);
    if multi_thread {
        cmd.arg("--multi-thread");
    }
    if acp {
        cmd.arg("--acp");
    }
    if let Some(bytes) = delta_bytes {
        cmd.args(["--delta-bytes", &bytes.to_string()]);
    }
    let out = cmd.env("DEPUTY_BIN", &bench.deputy).stdin(Stdio::null()).stderr(Stdio::inherit()).output()?;
    ensure!(out.status.success(), "the throughput host failed ({})", out.status);
    serde_json::from_slice(&out.stdout).context("the throughput host's report")
}

/// The flood through `deputy-host`, on both kinds of tokio runtime a host may
/// use, against the plain blocking reader's rate measured just before.
pub fn throughput(bench: &Bench) -> Result<Vec<Figure>> {
    let n = bench.sizes.flood_events;
    let line = floor::flood_line(FLOOD_SUBMISSION, &flood_delta());
    let floor = floor::throughput_floor(&line, n)?;
    let floor_rate = floor.events_per_s;
    let ns_per_event = |seconds: f64| seconds * 1e9 / n as f64;
    let floor_ns = ns_per_event(floor.reader_cpu_s);
    let mut figures = Vec::new();
    let mut peaks = (0u64, 0u64);
    let mut agent_anon = 0u64;
    let mut native_rate = 0.0;
    for (multi_thread, flavor, target) in [(false, "current-thread", 0.8), (true, "multi-thread", 0.75)] {
        let report = flood_through_host(bench, n, multi_thread, None, false)?;
        let rate = report.events as f64 / report.seconds;
        figures.push(
            Figure::new("throughput", format!("events/s, {flavor} host"), rate, "events/s")
                .floor(floor_rate)
                .runs(1)
                .target(format!("ratio >= {target}"), rate / floor_rate >= target)
                .detail(
                    json!({"events": report.events, "line_bytes": line.len() + 1, "seconds": report.seconds,
                    "host_cpu_ns_per_event": ns_per_event(report.host_cpu_s),
                    "agent_cpu_ns_per_event": ns_per_event(report.agent_cpu_s),
                    "floor_reader_cpu_ns_per_event": floor_ns}),
                ),
        );
        // CPU per event is steadier than rates on a shared machine: it does
        // not count time spent waiting for a core.
        let host_ns = ns_per_event(report.host_cpu_s);
        figures.push(
            Figure::new("throughput", format!("host CPU per event, {flavor}"), host_ns, "ns")
                .floor(floor_ns)
                .runs(1)
                .detail(json!({"agent_cpu_ns_per_event": ns_per_event(report.agent_cpu_s)})),
        );
        peaks = (peaks.0.max(report.host_peak_kib), peaks.1.max(report.agent_peak_kib));
        agent_anon = agent_anon.max(report.agent_anon_kib);
        if !multi_thread {
            native_rate = rate;
        }
    }
    // The same flood over ACP: `deputy agent --protocol acp` to the host's
    // ACP dialect (longer lines: each delta is a `session/update`; each
    // response and request goes through the in-order dispatcher).
    let report = flood_through_host(bench, n, false, None, true)?;
    let rate = report.events as f64 / report.seconds;
    figures.push(
        Figure::new("throughput", "events/s, ACP, current-thread host", rate, "events/s")
            .floor(floor_rate)
            .runs(1)
            .detail(json!({
                "events": report.events,
                "seconds": report.seconds,
                "vs_native_current_thread": rate / native_rate,
                "host_cpu_ns_per_event": ns_per_event(report.host_cpu_s),
                "host_peak_mib": kib_to_mib(report.host_peak_kib),
                "agent_peak_mib": kib_to_mib(report.agent_peak_kib),
            })),
    );
    let params = serde_json::to_string(&deputy_protocol::Event {
        id: FLOOD_SUBMISSION.into(),
        msg: EventMsg::AgentMessageDelta { delta: flood_delta() },
    })?;
    let (fast, derived, plain) = floor::decode_costs(&params, (n as usize / 5).clamp(1_000, 200_000))?;
    figures.push(
        Figure::new("throughput", "decode of one delta event (Event)", fast, "ns").floor(plain).detail(
            json!({"derived_decoder_ns": derived, "plain_struct_ns": plain, "params_bytes": params.len()}),
        ),
    );
    figures.push(
        Figure::new("throughput", "host peak RSS", kib_to_mib(peaks.0), "MiB")
            .target("<= 16 MiB", peaks.0 <= 16 * 1024),
    );
    figures.push(
        Figure::new("throughput", "agent peak RSS", kib_to_mib(peaks.1), "MiB")
            .target("<= 6 MiB", peaks.1 <= 6 * 1024)
            .detail(json!({"anonymous_mib_at_end": kib_to_mib(agent_anon), "binary": bench.deputy})),
    );
    Ok(figures)
}

// ----------------------------------------------------------------- approvals

/// Approves everything and records when each request arrived: with
/// sequential requests, the gap between two arrivals is one full round trip.
#[derive(Default)]
struct TimedApprover {
    arrivals: Mutex<Vec<Instant>>,
}

#[async_trait]
impl Approver for TimedApprover {
    async fn approve_exec(&self, _: ExecApprovalParams, _: ApprovalContext) -> ReviewDecision {
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner).push(Instant::now());
        ReviewDecision::Approved
    }
    async fn approve_patch(&self, _: PatchApprovalParams, _: ApprovalContext) -> ReviewDecision {
        ReviewDecision::Approved
    }
}

pub async fn approvals(bench: &Bench) -> Result<Vec<Figure>> {
    let n = bench.sizes.approvals;
    let echo = floor::echo_floor(bench.sizes.echo_round_trips)?;
    let echo = Summary::of_durations_ms(&echo);

    let session = bench.scripted("approvals", json!([{"type": "ask_approval_only", "n": n}]))?;
    let approver = Arc::new(TimedApprover::default());
    let mut conversation = Conversation::spawn(
        bench.agent(),
        ConversationConfig::new(session),
        approver.clone(),
        CancellationToken::new(),
    )
    .await?;
    let started = Instant::now();
    conversation.submit_with_id("approvals", Op::text("go")).await?;
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
    let arrivals = approver.arrivals.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    ensure!(!gaps.is_empty(), "too few approvals to time");
    let rtt = Summary::of_durations_ms(&gaps);
    let rate = n as f64 / elapsed.as_secs_f64();
    let us = |ms: f64| ms * 1e3;
    Ok(vec![
        Figure::new("approvals", "approvals/s", rate, "approvals/s").runs(n as usize),
        Figure::new("approvals", "round trip p50", us(rtt.median), "us")
            .floor(us(echo.median))
            .runs(gaps.len())
            .target("ratio <= 1.5", rtt.median <= 1.5 * echo.median)
            .detail(json!({"p99_us": us(rtt.p99), "floor_p99_us": us(echo.p99), "min_us": us(rtt.min)})),
    ])
}

// --------------------------------------------------------------------- spawn

/// One conversation's spawn to `session_configured`; then a graceful
/// shutdown, not timed.
async fn timed_spawn(bench: &Bench) -> Result<Duration> {
    let started = Instant::now();
    let mut conversation = Conversation::spawn(
        bench.agent(),
        ConversationConfig::new(bench.shell_session()),
        Arc::new(ApproveAll),
        CancellationToken::new(),
    )
    .await?;
    let took = started.elapsed();
    conversation.shutdown().await?;
    Ok(took)
}

/// Spawn to `session_configured` (then a graceful shutdown, not timed),
/// against `deputy --version` run to its exit. The target's floor is
/// interleaved, one run before each spawn, so both see the same machine;
/// the same floor in a tight loop of its own (measured first, reported
/// beside it) runs about a millisecond faster on this project's VM, where a
/// process started right after another one exited finds the CPU warm.
pub async fn spawn(bench: &Bench) -> Result<Vec<Figure>> {
    let runs = bench.sizes.spawns;
    let back_to_back = Summary::of_durations_ms(&floor::spawn_floor(&bench.deputy, &["--version"], runs)?);
    let mut floor = Vec::with_capacity(runs);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        floor.extend(floor::spawn_floor(&bench.deputy, &["--version"], 1)?);
        samples.push(timed_spawn(bench).await?);
    }
    let floor = Summary::of_durations_ms(&floor);
    let s = Summary::of_durations_ms(&samples);
    // The same spawns from a host holding 256 MiB of touched heap (an
    // editor, an agent host): a spawner that forks copies the page tables
    // of all of it on every spawn; `posix_spawn` copies nothing.
    let ballast = std::hint::black_box(vec![1u8; 256 << 20]);
    let heavy_runs = runs.min(50);
    let mut heavy = Vec::with_capacity(heavy_runs);
    for _ in 0..heavy_runs {
        heavy.push(timed_spawn(bench).await?);
    }
    drop(ballast);
    let heavy = Summary::of_durations_ms(&heavy);
    Ok(vec![
        Figure::new("spawn", "spawn to session_configured, median", s.median, "ms")
            .floor(floor.median)
            .runs(runs)
            .target("ratio <= 1.5", s.median <= 1.5 * floor.median)
            .detail(json!({"p99_ms": s.p99, "min_ms": s.min, "floor_p99_ms": floor.p99, "floor_min_ms": floor.min})),
        Figure::new("spawn", "the same, floor run back to back", s.median, "ms").floor(back_to_back.median).runs(runs),
        Figure::new("spawn", "the same, host holding 256 MiB", heavy.median, "ms")
            .floor(s.median)
            .runs(heavy_runs),
    ])
}

// ------------------------------------------------------------------- sandbox

/// The cost of the command sandbox: `true` run by the agent's exec tool in a
/// `workspace_write` sandbox without network (Landlock ruleset built before
/// fork, applied in the child, plus the seccomp filter), against the same
/// spawn unsandboxed (the floor), interleaved so both see the same machine.
pub async fn sandbox(bench: &Bench) -> Result<Vec<Figure>> {
    use deputy_agent::exec::{self, ExecParams};
    use deputy_agent::sandbox::{Confinement, SandboxPolicy};
    use deputy_protocol::SandboxMode;
    let runs = bench.sizes.sandbox_spawns;
    let (policy, warning) = SandboxPolicy::resolve(SandboxMode::WorkspaceWrite, false, false)
        .map_err(|e| anyhow::anyhow!("the sandbox figure needs a kernel with Landlock and seccomp: {e}"))?;
    ensure!(warning.is_none(), "sandbox not enforced");
    let work = bench.scratch.path().join("work");
    let params = |sandbox: Option<Confinement>| ExecParams {
        argv: vec!["true".into()],
        cwd: work.clone(),
        timeout: Duration::from_secs(10),
        keep_secret_env: false,
        sandbox,
    };
    let plain = params(None);
    let confined = params(Some(Confinement { policy, writable: vec![work.clone()] }));
    let (mut bare, mut boxed) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs + 2 {
        for (p, samples) in [(&plain, &mut bare), (&confined, &mut boxed)] {
            let started = Instant::now();
            let out = exec::run(p, |_, _| async {}).await;
            let took = started.elapsed();
            ensure!(out.exit_code == 0, "`true` failed: {}", out.output);
            if i >= 2 {
                samples.push(took); // the first two of each are warm-up
            }
        }
    }
    let (b, s) = (Summary::of_durations_ms(&bare), Summary::of_durations_ms(&boxed));
    let extra = s.median - b.median;
    Ok(vec![
        Figure::new("sandbox", "sandboxed `true` via the exec tool, median", s.median, "ms")
            .floor(b.median)
            .runs(runs)
            .target("extra <= 1 ms", extra <= 1.0)
            .detail(json!({"extra_ms": extra, "p99_ms": s.p99, "floor_p99_ms": b.p99, "min_ms": s.min, "floor_min_ms": b.min})),
    ])
}

// -------------------------------------------------------------------- cancel

pub async fn cancel(bench: &Bench) -> Result<Vec<Figure>> {
    let runs = bench.sizes.cancels;
    let mut cooperative = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut conversation =
            bench.start_turn("cooperative", json!([{"type": "wait_for_interrupt"}])).await?;
        let pid = conversation.pid();
        wait_for(&mut conversation, |m| matches!(m, EventMsg::TaskStarted { .. })).await?;
        let started = Instant::now();
        let ending = conversation.cancel().await;
        cooperative.push(started.elapsed());
        ensure!(!ending.was_killed(), "a cooperative agent was killed: {ending:?}");
        ensure!(!procfs::exists(pid), "agent {pid} not reaped");
    }

    let mut stubborn = Vec::with_capacity(runs);
    let mut grandchildren_left = 0usize;
    for _ in 0..runs {
        let mut conversation = bench.start_turn("stubborn", json!([{"type": "hang"}])).await?;
        let pid = conversation.pid();
        // The hang step starts a grandchild; wait until it exists.
        let deadline = Instant::now() + Duration::from_secs(5);
        let grandchildren = loop {
            let members = procfs::session_members(pid);
            if !members.is_empty() {
                break members;
            }
            ensure!(Instant::now() < deadline, "the hung agent never started its grandchild");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let started = Instant::now();
        let ending = conversation.cancel().await;
        stubborn.push(started.elapsed());
        ensure!(ending.was_killed(), "a stubborn agent ended by itself: {ending:?}");
        // The grandchild was SIGKILLed; give init a moment to reap it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        grandchildren_left += grandchildren.iter().filter(|&&g| procfs::alive(g)).count();
    }

    let a = Summary::of_durations_ms(&cooperative);
    let b = Summary::of_durations_ms(&stubborn);
    let budget_ms = deputy_host::DEFAULT_SHUTDOWN_DEADLINE.as_secs_f64() * 1e3;
    let drain_ms = budget_ms - deputy_host::KILL_RESERVE.as_secs_f64() * 1e3;
    Ok(vec![
        Figure::new("cancel", "cooperative: cancel to reaped, p99", a.p99, "ms")
            .runs(runs)
            .target("<= 50 ms", a.p99 <= 50.0)
            .detail(json!({"median_ms": a.median, "max_ms": a.max})),
        // The agent gets the drain window (budget less the kill reserve) to
        // exit; the tree must be dead and reaped within the budget, every run.
        Figure::new("cancel", "stubborn: cancel to tree reaped, max", b.max, "ms")
            .runs(runs)
            .target(
                format!("every run >= {drain_ms} ms (drain window), max <= {budget_ms} ms"),
                b.min >= drain_ms && b.max <= budget_ms,
            )
            .detail(json!({"min_ms": b.min, "median_ms": b.median, "p99_ms": b.p99, "max_ms": b.max,
                "budget_ms": budget_ms, "kill_reserve_ms": deputy_host::KILL_RESERVE.as_secs_f64() * 1e3})),
        Figure::new("cancel", "stubborn: grandchildren left alive", grandchildren_left as f64, "processes")
            .runs(runs)
            .target("0", grandchildren_left == 0),
    ])
}

async fn wait_for(conversation: &mut Conversation, pred: impl Fn(&EventMsg) -> bool) -> Result<()> {
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = conversation.next_event() => match event {
                Some(event) if pred(&event.msg) => return Ok(()),
                Some(_) => {}
                None => bail!("the agent ended early: {:?}", conversation.error()),
            },
            () = &mut deadline => bail!("timed out waiting for an event"),
        }
    }
}

// -------------------------------------------------------------------- fanout

pub async fn fanout(bench: &Bench) -> Result<Vec<Figure>> {
    let n = bench.sizes.fanout;
    let me = std::process::id();
    let rss_before = procfs::rss_kib(me).unwrap_or(0);
    let started = Instant::now();
    // Spawn them all, so they are all live at once…
    let spawns = (0..n).map(|_| {
        let mut session = bench.shell_session();
        session.approval_policy = ApprovalPolicy::AskAlways;
        Conversation::spawn(
            bench.agent(),
            ConversationConfig::new(session),
            Arc::new(ApproveAll),
            CancellationToken::new(),
        )
    });
    let mut conversations = Vec::with_capacity(n);
    let mut failures = 0usize;
    for result in futures::future::join_all(spawns).await {
        match result {
            Ok(c) => conversations.push(c),
            Err(e) => {
                eprintln!("fanout: spawn failed: {e}");
                failures += 1;
            }
        }
    }
    let rss_live = procfs::rss_kib(me).unwrap_or(0);
    // …then run one approved exec in each, concurrently.
    let turns = conversations.iter_mut().map(|c| async move {
        c.submit_with_id("turn", Op::text("$ echo fanout")).await?;
        let mut exit_code = None;
        while let Some(event) = c.next_event().await {
            match event.msg {
                EventMsg::ExecCommandEnd { exit_code: code, .. } => exit_code = Some(code),
                EventMsg::TaskComplete { .. } => break,
                EventMsg::TurnAborted { .. } => anyhow::bail!("aborted"),
                _ => {}
            }
        }
        ensure!(exit_code == Some(0), "the command did not run: {exit_code:?}");
        let peak = procfs::peak_rss_kib(c.pid()).unwrap_or(0);
        c.shutdown().await?;
        Ok::<u64, anyhow::Error>(peak)
    });
    let mut child_peaks = Vec::new();
    for result in futures::future::join_all(turns).await {
        match result {
            Ok(peak) => child_peaks.push(peak),
            Err(e) => {
                eprintln!("fanout: a conversation failed: {e:#}");
                failures += 1;
            }
        }
    }
    let wall = started.elapsed();
    drop(conversations);
    let per_conversation = rss_live.saturating_sub(rss_before) as f64 / n as f64;
    let child_peak = child_peaks.iter().copied().max().unwrap_or(0);
    Ok(vec![
        Figure::new("fanout", "failures", failures as f64, "conversations")
            .runs(n)
            .target("0", failures == 0),
        Figure::new("fanout", "wall time", wall.as_secs_f64() * 1e3, "ms").runs(n),
        Figure::new("fanout", "host RSS growth per live conversation", per_conversation, "KiB")
            .runs(n)
            .target("<= 256 KiB", per_conversation <= 256.0)
            .detail(json!({"rss_before_kib": rss_before, "rss_all_live_kib": rss_live})),
        Figure::new("fanout", "child peak RSS (max)", kib_to_mib(child_peak), "MiB")
            .runs(child_peaks.len())
            .target("<= 8 MiB", child_peak <= 8 * 1024),
    ])
}

// ---------------------------------------------------------------------- soak

pub async fn soak(bench: &Bench) -> Result<Vec<Figure>> {
    let n = bench.sizes.soak;
    let me = std::process::id();
    // Warm up once so lazily initialised runtime state is not counted as growth.
    one_shot(bench).await?;
    let fds_before = procfs::open_fds().unwrap_or(0);
    let rss_before = procfs::rss_kib(me).unwrap_or(0);
    let mut agent_pids = Vec::with_capacity(n);
    for _ in 0..n {
        agent_pids.push(one_shot(bench).await?);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fds_after = procfs::open_fds().unwrap_or(0);
    let rss_after = procfs::rss_kib(me).unwrap_or(0);
    let leaked: Vec<u32> = procfs::children_or_in_sessions(me, &agent_pids);
    let fd_growth = fds_after as f64 - fds_before as f64;
    let rss_growth = (rss_after as f64 - rss_before as f64) / 1024.0;
    Ok(vec![
        Figure::new("soak", "leaked processes", leaked.len() as f64, "processes")
            .runs(n)
            .target("0", leaked.is_empty())
            .detail(json!({"pids": leaked})),
        Figure::new("soak", "open descriptors growth", fd_growth, "fds")
            .runs(n)
            .target("0", fd_growth <= 0.0)
            .detail(json!({"before": fds_before, "after": fds_after})),
        Figure::new("soak", "host RSS growth", rss_growth, "MiB")
            .runs(n)
            .target("<= 1 MiB", rss_growth <= 1.0)
            .detail(json!({"before_kib": rss_before, "after_kib": rss_after})),
    ])
}

/// One short one-shot conversation; returns the agent's pid.
async fn one_shot(bench: &Bench) -> Result<u32> {
    let input = vec![InputItem::Text { text: "$ true".into() }];
    let mut turn = OneShot::run(
        bench.agent(),
        ConversationConfig::new(bench.shell_session()),
        Arc::new(ApproveAll),
        input,
        CancellationToken::new(),
    )
    .await?;
    let pid = turn.pid();
    while turn.next_event().await.is_some() {}
    turn.wait().await?;
    Ok(pid)
}
