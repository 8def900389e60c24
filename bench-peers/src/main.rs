//! `deputy-bench-peers`: Deputy next to its peers, in the same run.
//!
//! - **Flood**: the same count of message-chunk notifications with the same
//!   payload bytes, agent → client over a child's stdio: Deputy (its
//!   `deputy-host` and `deputy agent`, run through `deputy-bench
//!   __throughput-host`) and the ACP Rust SDK (`agent-client-protocol`, both
//!   ends on the SDK: the agent is this binary's `__acp-agent`, spawned by the
//!   SDK's own `AcpAgent`). Events/s, bytes/s, peak RSS of each process, and
//!   `ratio = deputy ÷ peer`.
//! - **Cancel a stubborn child**: a child that ignores SIGTERM, SIGINT,
//!   SIGHUP and stdin EOF and has a grandchild, stopped through each peer's
//!   own child-process wrapper as its docs say (the ACP SDK's `AcpAgent`:
//!   the `connect_with` foreground returning, or the connection dropped;
//!   rmcp's `TokioChildProcess`: `graceful_shutdown`, or dropped): time until
//!   the whole tree is gone (or "never" within 10 s), and what is left;
//!   beside Deputy's cancel ladder (`deputy-bench cancel`).
//!
//! It is a workspace of its own (see Cargo.toml): the peer SDKs never enter
//! Deputy's dependency trees and CI does not build them.
//!
//! ```sh
//! cargo build --release                                   # deputy, deputy-bench
//! cargo run --release --manifest-path bench-peers/Cargo.toml -- --events 200000
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as StdStdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_client_protocol::schema::ProtocolVersion;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    AgentCapabilities, ContentBlock, ContentChunk, InitializeRequest, InitializeResponse, NewSessionRequest,
    NewSessionResponse, PromptRequest, PromptResponse, SessionNotification, SessionUpdate, StopReason,
    TextContent,
};
use agent_client_protocol::{AcpAgent, AcpAgentConfig, Agent, Client};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

/// How long a cancel may take before it is reported as "never".
const NEVER_AFTER: Duration = Duration::from_secs(10);

struct Options {
    events: u64,
    payload: usize,
    cancel_runs: usize,
    json: bool,
    deputy_bench: PathBuf,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__acp-agent") {
        return acp_agent(&args[1..]);
    }
    let options = parse(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(options))
}

fn value<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let v = args.get(i + 1).with_context(|| format!("{name} needs a value"))?;
            v.parse().map(Some).map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
        }
    }
}

fn parse(args: &[String]) -> Result<Options> {
    const KNOWN: [&str; 6] = ["--events", "--payload", "--cancel-runs", "--deputy-bench", "--json", "--help"];
    for (i, a) in args.iter().enumerate() {
        let is_value = i > 0 && ["--events", "--payload", "--cancel-runs", "--deputy-bench"].contains(&args[i - 1].as_str());
        if !is_value && !KNOWN.contains(&a.as_str()) {
            bail!("unknown argument {a:?} (try --help)");
        }
    }
    if args.iter().any(|a| a == "--help") {
        println!(
            "deputy-bench-peers [--events N (200000)] [--payload BYTES (49)] [--cancel-runs N (5)] \
             [--deputy-bench PATH] [--json]\n\
             Needs `cargo build --release` of the Deputy workspace first (deputy-bench and deputy)."
        );
        std::process::exit(0);
    }
    let default_bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/deputy-bench");
    let deputy_bench = value::<PathBuf>(args, "--deputy-bench")?
        .or_else(|| std::env::var_os("DEPUTY_BENCH").map(PathBuf::from))
        .unwrap_or(default_bench);
    ensure!(
        deputy_bench.is_file(),
        "{} is missing: run `cargo build --release` in the Deputy workspace first, or pass --deputy-bench",
        deputy_bench.display()
    );
    Ok(Options {
        events: value(args, "--events")?.unwrap_or(200_000),
        // Deputy's flood: 150-byte event lines carry 49 bytes of delta.
        payload: value(args, "--payload")?.unwrap_or(49),
        cancel_runs: value(args, "--cancel-runs")?.unwrap_or(5),
        json: args.iter().any(|a| a == "--json"),
        deputy_bench,
    })
}

fn load_average() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// One row of the report.
fn row(json: bool, figure: Value) {
    if json {
        println!("{figure}");
    } else {
        let cells: Vec<String> = figure
            .as_object()
            .expect("an object")
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect();
        println!("{}", cells.join("  "));
    }
}

async fn run(o: Options) -> Result<()> {
    if !o.json {
        println!("# load average {}", load_average());
    }
    // ---- flood
    let deputy = deputy_flood(&o)?;
    let acp = acp_flood(&o).await?;
    let rate = |f: &Flood| f.events as f64 / f.seconds;
    let bytes = |f: &Flood| f.wire_bytes as f64 / f.seconds;
    for (name, f) in [("deputy", &deputy), ("acp-sdk", &acp)] {
        row(
            o.json,
            json!({"scenario": "flood", "peer": name, "events": f.events, "payload_bytes": o.payload,
                "line_bytes": f.wire_bytes / f.events.max(1), "events_per_s": rate(f).round(),
                "mb_per_s": (bytes(f) / 1e6 * 10.0).round() / 10.0,
                "client_peak_mib": mib(f.client_peak_kib), "agent_peak_mib": mib(f.agent_peak_kib),
                "load": load_average()}),
        );
    }
    row(
        o.json,
        json!({"scenario": "flood", "ratio": "deputy / acp-sdk",
            "events_per_s": round3(rate(&deputy) / rate(&acp)),
            "agent_peak_rss": round3(deputy.agent_peak_kib as f64 / acp.agent_peak_kib.max(1) as f64),
            "client_peak_rss": round3(deputy.client_peak_kib as f64 / acp.client_peak_kib.max(1) as f64)}),
    );
    // ---- cancel
    let script = std::env::temp_dir().join(format!("deputy-bench-peers-{}", std::process::id()));
    std::fs::create_dir_all(&script)?;
    let cancels: Vec<(&str, Box<dyn Fn(PathBuf) -> CancelFuture>)> = vec![
        ("acp-sdk AcpAgent: connect_with foreground returns", Box::new(|p| Box::pin(acp_cancel(p, false)))),
        ("acp-sdk AcpAgent: connection dropped", Box::new(|p| Box::pin(acp_cancel(p, true)))),
        ("rmcp TokioChildProcess: graceful_shutdown()", Box::new(|p| Box::pin(rmcp_cancel(p, false)))),
        ("rmcp TokioChildProcess: dropped", Box::new(|p| Box::pin(rmcp_cancel(p, true)))),
    ];
    for (name, cancel) in &cancels {
        let mut times = Vec::new();
        let mut left = 0usize;
        let mut never = 0usize;
        for i in 0..o.cancel_runs {
            // A file of its own per run: a stale one would be read as this run's.
            let pids = script.join(format!("pids-{}-{i}", name.split_whitespace().next().unwrap_or("x")));
            let pids = pids.with_extension(format!("{}", cancels.iter().position(|(n, _)| n == name).unwrap_or(0)));
            let _ = std::fs::remove_file(&pids);
            let outcome = cancel(pids).await?;
            match outcome.gone_after {
                Some(t) => times.push(t.as_secs_f64() * 1e3),
                None => never += 1,
            }
            left += outcome.left_alive;
            kill_all(&outcome.pids);
        }
        times.sort_by(f64::total_cmp);
        row(
            o.json,
            json!({"scenario": "cancel", "peer": name, "runs": o.cancel_runs,
                "tree_gone_median_ms": times.get(times.len() / 2).map(|t| (t * 100.0).round() / 100.0),
                "tree_gone_max_ms": times.last().map(|t| (t * 100.0).round() / 100.0),
                "never_within_10s": never, "processes_left_after_10s": left, "load": load_average()}),
        );
    }
    let _ = std::fs::remove_dir_all(&script);
    let ladder = deputy_cancel(&o)?;
    row(o.json, ladder);
    Ok(())
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

// ------------------------------------------------------------------- flood

struct Flood {
    events: u64,
    seconds: f64,
    wire_bytes: u64,
    client_peak_kib: u64,
    agent_peak_kib: u64,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Deputy's flood, through `deputy-bench __throughput-host` (a process of its
/// own, so its peak RSS is the host's alone).
fn deputy_flood(o: &Options) -> Result<Flood> {
    let mut cmd = Command::new(&o.deputy_bench);
    cmd.args(["__throughput-host", "--count", &o.events.to_string(), "--delta-bytes", &o.payload.to_string()]);
    if std::env::var_os("DEPUTY_BIN").is_none() {
        cmd.env("DEPUTY_BIN", o.deputy_bench.with_file_name("deputy"));
    }
    let out = cmd.stdin(StdStdio::null()).stderr(StdStdio::inherit()).output()?;
    ensure!(out.status.success(), "deputy-bench __throughput-host failed ({})", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).context("the throughput host's report")?;
    let events = report["events"].as_u64().context("events")?;
    // Deputy's event line for this payload, as the agent writes it.
    let line = json!({"jsonrpc": "2.0", "method": "event",
        "params": {"id": "flood", "msg": {"type": "agent_message_delta", "delta": "x".repeat(o.payload)}}});
    Ok(Flood {
        events,
        seconds: report["seconds"].as_f64().context("seconds")?,
        wire_bytes: events * (line.to_string().len() as u64 + 1),
        client_peak_kib: report["host_peak_kib"].as_u64().unwrap_or(0),
        agent_peak_kib: report["agent_peak_kib"].as_u64().unwrap_or(0),
    })
}

/// The ACP SDK agent (`__acp-agent --events N --payload B`): answers
/// `initialize` and `session/new`, and answers each prompt with N
/// `agent_message_chunk` updates of B bytes of text, then `end_turn`.
fn acp_agent(args: &[String]) -> Result<()> {
    let events: u64 = value(args, "--events")?.context("--events")?;
    let payload: usize = value(args, "--payload")?.context("--payload")?;
    let text: Arc<str> = "x".repeat(payload).into();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        Agent
            .v1()
            .name("bench-acp-agent")
            .on_receive_request(
                async move |init: InitializeRequest, responder, _cx| {
                    responder.respond(
                        InitializeResponse::new(init.protocol_version).agent_capabilities(AgentCapabilities::new()),
                    )
                },
                agent_client_protocol::on_receive_request!(),
            )
            .on_receive_request(
                async move |_new: NewSessionRequest, responder, _cx| responder.respond(NewSessionResponse::new("s1")),
                agent_client_protocol::on_receive_request!(),
            )
            .on_receive_request(
                async move |prompt: PromptRequest, responder, cx: ConnectionTo<Client>| {
                    for _ in 0..events {
                        let chunk = ContentChunk::new(ContentBlock::Text(TextContent::new(text.to_string())));
                        cx.send_notification(SessionNotification::new(
                            prompt.session_id.clone(),
                            SessionUpdate::AgentMessageChunk(chunk),
                        ))?;
                    }
                    responder.respond(PromptResponse::new(StopReason::EndTurn))
                },
                agent_client_protocol::on_receive_request!(),
            )
            .connect_to(agent_client_protocol::Stdio::new())
            .await
    })
    .map_err(|e| anyhow::anyhow!("the ACP agent: {e}"))
}

/// The child of this process whose command line contains `marker`.
fn child_with(marker: &str) -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let ppid: u32 = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == me && String::from_utf8_lossy(&cmdline).contains(marker) {
            return Some(pid);
        }
    }
    None
}

/// The same flood on the ACP SDK, both ends. Run in a child process of this
/// binary would be fairer for the client's peak RSS; the client's share of
/// this process is its peak minus what it had before the flood.
async fn acp_flood(o: &Options) -> Result<Flood> {
    let exe = std::env::current_exe()?;
    let config = AcpAgentConfig::new(exe).args([
        "__acp-agent".to_owned(),
        "--events".to_owned(),
        o.events.to_string(),
        "--payload".to_owned(),
        o.payload.to_string(),
    ]);
    let agent = AcpAgent::new(config);
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let events = o.events;
    let started = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let result = Arc::new(std::sync::Mutex::new(None::<(f64, u64)>));
    let (started_in, result_in) = (Arc::clone(&started), Arc::clone(&result));
    Client
        .v1()
        .on_receive_notification(
            async move |n: SessionNotification, _cx| {
                if let SessionUpdate::AgentMessageChunk(chunk) = n.update {
                    std::hint::black_box(chunk);
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            },
            agent_client_protocol::on_receive_notification!(),
        )
        .connect_with(agent, async move |cx: ConnectionTo<Agent>| {
            cx.send_request(InitializeRequest::new(ProtocolVersion::V1)).block_task().await?;
            let session = cx.send_request(NewSessionRequest::new(std::env::temp_dir())).block_task().await?;
            let t0 = Instant::now();
            *started_in.lock().expect("not poisoned") = Some(t0);
            let text = ContentBlock::Text(TextContent::new("go".to_owned()));
            cx.send_request(PromptRequest::new(session.session_id, vec![text])).block_task().await?;
            // Notifications sent before the answer may still be in the client's queue.
            while seen.load(Ordering::Relaxed) < events && t0.elapsed() < Duration::from_secs(600) {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            let seconds = t0.elapsed().as_secs_f64();
            let agent_peak = child_with("__acp-agent").map_or(0, |pid| status_kib(pid, "VmHWM"));
            *result_in.lock().expect("not poisoned") = Some((seconds, agent_peak));
            Ok(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("the ACP client: {e}"))?;
    let (seconds, agent_peak_kib) = result.lock().expect("not poisoned").context("the ACP flood did not finish")?;
    let received = events; // checked by the loop above or timed out
    // One chunk notification as the SDK writes it.
    let line = json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s1",
        "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "x".repeat(o.payload)}}}});
    Ok(Flood {
        events: received,
        seconds,
        wire_bytes: received * (line.to_string().len() as u64 + 1),
        client_peak_kib: status_kib(std::process::id(), "VmHWM"),
        agent_peak_kib,
    })
}

// ------------------------------------------------------------------ cancel

type CancelFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<CancelOutcome>>>>;

struct CancelOutcome {
    /// From the cancel's start until every process of the tree was gone.
    gone_after: Option<Duration>,
    /// Processes of the tree still alive after [`NEVER_AFTER`].
    left_alive: usize,
    pids: Vec<u32>,
}

/// The stubborn child: ignores SIGTERM, SIGINT, SIGHUP (and so does its
/// grandchild, which inherits that) and stdin EOF, and never writes. It
/// writes `<its pid> <grandchild pid>` to `pids` once both exist.
fn stubborn_script(pids: &Path) -> String {
    format!(
        "trap '' TERM INT HUP; sleep 3600 & echo $$ $! > {p}.tmp && mv {p}.tmp {p}; while :; do sleep 1; done",
        p = pids.display()
    )
}

async fn wait_for_pids(path: &Path) -> Result<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            let pids: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if pids.len() == 2 {
                return Ok(pids);
            }
        }
        ensure!(Instant::now() < deadline, "the stubborn child never started its grandchild");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rfind(')') {
        Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
        None => false,
    }
}

/// Processes of the tree: the child, the grandchild, and the child's other
/// children (its transient `sleep 1`).
fn tree(pids: &[u32]) -> Vec<u32> {
    let mut all = pids.to_vec();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid.is_some_and(|p| pids.first() == Some(&p)) && !all.contains(&pid) {
                all.push(pid);
            }
        }
    }
    all
}

/// Polls from `started` until the tree is gone, or [`NEVER_AFTER`].
async fn watch(started: Instant, pids: Vec<u32>) -> CancelOutcome {
    loop {
        let living: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if living.is_empty() {
            return CancelOutcome { gone_after: Some(started.elapsed()), left_alive: 0, pids };
        }
        if started.elapsed() >= NEVER_AFTER {
            return CancelOutcome { gone_after: None, left_alive: living.len(), pids };
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn kill_all(pids: &[u32]) {
    for pid in pids {
        if alive(*pid) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// The ACP SDK's `AcpAgent` on the stubborn child: the foreground returns
/// (the documented clean close: stdin closed, 1 s, SIGTERM to the group,
/// 2 s, SIGKILL), or the whole `connect_with` future is dropped (SIGKILL to
/// the group at once).
async fn acp_cancel(pids_path: PathBuf, drop_it: bool) -> Result<CancelOutcome> {
    let config = AcpAgentConfig::new("sh").args(["-c".to_owned(), stubborn_script(&pids_path)]);
    let agent = AcpAgent::new(config);
    let (tx, rx) = tokio::sync::oneshot::channel::<(Instant, Vec<u32>)>();
    let path = pids_path.clone();
    let connection = Client.v1().connect_with(agent, async move |_cx: ConnectionTo<Agent>| {
        let pids = wait_for_pids(&path).await.map_err(|e| agent_client_protocol::Error::internal_error().data(e.to_string()))?;
        let _ = tx.send((Instant::now(), tree(&pids)));
        if drop_it {
            std::future::pending::<()>().await;
        }
        Ok(())
    });
    // Boxed, not `tokio::pin!`ed: dropping a pinned reference would not
    // drop the connection.
    let mut connection = Box::pin(connection);
    let mut rx = rx;
    let (started, pids) = tokio::select! {
        got = &mut rx => got.context("the foreground ended early")?,
        r = &mut connection => bail!("the ACP connection ended before the child was up: {r:?}"),
    };
    if drop_it {
        let started = Instant::now();
        drop(connection);
        return Ok(watch(started, pids).await);
    }
    // The foreground has returned; the SDK shuts the child down while the
    // connection future runs.
    let (outcome, _) = tokio::join!(watch(started, pids), tokio::time::timeout(NEVER_AFTER, connection));
    Ok(outcome)
}

/// rmcp's `TokioChildProcess` on the stubborn child, spawned from a plain
/// `tokio::process::Command` as rmcp's examples do: `graceful_shutdown()`
/// (close the transport, 3 s, SIGTERM, 3 s, kill), or dropped (kill).
async fn rmcp_cancel(pids_path: PathBuf, drop_it: bool) -> Result<CancelOutcome> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(stubborn_script(&pids_path));
    let mut transport = rmcp::transport::TokioChildProcess::new(cmd)?;
    let pids = tree(&wait_for_pids(&pids_path).await?);
    let started = Instant::now();
    if drop_it {
        drop(transport);
        return Ok(watch(started, pids).await);
    }
    let (outcome, _) =
        tokio::join!(watch(started, pids), tokio::time::timeout(NEVER_AFTER, transport.graceful_shutdown()));
    Ok(outcome)
}

/// Deputy's ladder on its own stubborn agent (ignores interrupt, shutdown,
/// SIGTERM and EOF; has a grandchild), from `deputy-bench cancel`.
fn deputy_cancel(o: &Options) -> Result<Value> {
    let mut cmd = Command::new(&o.deputy_bench);
    cmd.args(["cancel", "--json", "--cancel-runs", &o.cancel_runs.to_string()]);
    if std::env::var_os("DEPUTY_BIN").is_none() {
        cmd.env("DEPUTY_BIN", o.deputy_bench.with_file_name("deputy"));
    }
    let out = cmd.stdin(StdStdio::null()).stderr(StdStdio::inherit()).output()?;
    ensure!(out.status.success(), "deputy-bench cancel failed ({})", out.status);
    let figures: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let find = |m: &str| figures.iter().find(|f| f["metric"] == m).cloned().unwrap_or(Value::Null);
    let stubborn = find("stubborn: cancel to tree reaped, max");
    let left = find("stubborn: grandchildren left alive");
    Ok(json!({"scenario": "cancel", "peer": "deputy: Conversation::cancel (the ladder)", "runs": o.cancel_runs,
        "tree_gone_median_ms": stubborn["detail"]["median_ms"], "tree_gone_max_ms": stubborn["value"],
        "never_within_10s": 0, "processes_left_after_10s": left["value"], "load": load_average()}))
}
