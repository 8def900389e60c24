//! `deputy agent` under a flood from a peer that does not read its answers:
//! one test per path a line can take through the reader (a request to an
//! unknown method, a request whose handler fails, garbage, `$/cancelRequest`
//! sent as a request, notifications). Each checks that
//!
//! - backpressure engages: while the test does not read stdout, the agent
//!   stops reading stdin, so the flood cannot all be written;
//! - the agent's peak RSS (`VmHWM`) stays under [`PEAK_RSS`];
//! - every request is answered exactly once, by id, and every garbage line
//!   gets its own `-32700` with a null id; notifications get nothing.
//!
//! Before the bounds, 200,000 requests took the agent to 212–336 MiB and all
//! but ~3,000 of the garbage and `$/cancelRequest` answers were dropped.

mod agent_support;

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use agent_support::bin;
use serde_json::Value;

/// Lines per flood: enough to be ~100 times what the agent may hold (the
/// writer's queue, the requests in flight and the pipes hold a few thousand).
const FLOOD: usize = 100_000;
/// The bound on the agent's peak resident set.
const PEAK_RSS_KIB: u64 = 32 * 1024;
/// How long the test writes without reading before it starts reading.
const STALL: Duration = Duration::from_millis(500);
/// A watchdog: a wedged agent is killed, so the test fails instead of hanging.
const WATCHDOG: Duration = Duration::from_secs(60);
/// Silence on stdout this long, with answers missing, means they will not
/// come (an answer that was dropped): the test stops waiting and reports.
const IDLE: Duration = Duration::from_secs(5);
/// Lines per write.
const CHUNK: usize = 1000;

/// The id of the request sent after the flood: its answer (and, for requests,
/// every flood answer) means everything was read.
const SYNC_ID: &str = "sync";

/// A `kB` field of `/proc/PID/status`; `None` once the process is gone.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// What a flood produced.
struct Report {
    /// Lines written before the test started reading.
    written_while_stalled: usize,
    /// The agent's RSS at the end of the stall, and its peak (KiB).
    rss_stalled_kib: u64,
    peak_kib: u64,
    /// Answers to flood requests, by id (index = id - 1), and to garbage.
    answered: Vec<u32>,
    null_id_parse_errors: usize,
    /// Error codes of the answers, with counts.
    codes: std::collections::BTreeMap<i64, usize>,
    agent_cpu: Duration,
    elapsed: Duration,
}

/// Starts `deputy agent`, initializes it, floods it with `FLOOD` lines made
/// by `line(id)` (ids from 1) followed by a sync request, reading nothing for
/// `STALL`, then reads every answer.
/// `answers`: whether each line asks for an answer; `session`: whether a
/// session is started before the flood.
fn flood(answers: bool, session: bool, line: impl Fn(usize) -> String + Send + 'static) -> Report {
    let start = Instant::now();
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(bin())
        .arg("agent")
        .arg("--home")
        .arg(home.path())
        .env_remove("RUST_LOG")
        .env_remove("DEPUTY_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // A file, not a pipe nobody reads: logging must not stall the agent.
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocol_version":1,"client_info":{{"name":"flood"}}}}}}"#
    )
    .unwrap();
    let first = read_message(&mut stdout).expect("an answer to initialize");
    assert_eq!(first["id"], 0);
    assert!(first.get("result").is_some(), "{first}");
    if session {
        let start = serde_json::json!({"jsonrpc": "2.0", "id": "start", "method": "session/start",
            "params": {"cwd": cwd.path().canonicalize().unwrap(), "source": "exec"}});
        writeln!(stdin, "{start}").unwrap();
        loop {
            let msg = read_message(&mut stdout).expect("an answer to session/start");
            if msg["id"] == "start" {
                assert!(msg.get("result").is_some(), "{msg}");
                break;
            }
        }
    }

    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let written = Arc::clone(&written);
        std::thread::spawn(move || write_flood(stdin, &line, &written))
    };
    let (done_tx, done_rx) = channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = done_rx.recv_timeout(WATCHDOG) {
            eprintln!("watchdog: killing the agent {pid}");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });

    std::thread::sleep(STALL);
    let written_while_stalled = written.load(Ordering::Acquire);
    let rss_stalled_kib = status_kib(pid, "VmRSS:").expect("the agent is running");

    // Now read, on a thread, so that a silent agent is noticed (`IDLE`)
    // rather than waited for.
    let (line_tx, lines) = channel::<Result<String, String>>();
    std::thread::spawn(move || {
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => {
                    let _ = line_tx.send(Err(line));
                    break;
                }
                Ok(_) => {
                    if line_tx.send(Ok(line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let next = || match lines.recv_timeout(IDLE) {
        Ok(Ok(line)) => {
            Some(serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
        }
        Ok(Err(partial)) => panic!("stdout ended in the middle of a line: {partial:?}"),
        Err(_) => None,
    };
    let mut answered = vec![0u32; FLOOD];
    let mut null_id_parse_errors = 0;
    let mut codes = std::collections::BTreeMap::new();
    let mut synced = false;
    let mut others = Vec::new();
    let count = |answered: &[u32], nulls: usize| answered.iter().filter(|&&n| n > 0).count() + nulls;
    // Requests are answered in any order (handlers run concurrently), so the
    // sync answer alone does not mean the end: read until it and every
    // flood answer are in.
    let wants = if answers { FLOOD } else { 0 };
    while !(synced && count(&answered, null_id_parse_errors) >= wants) {
        let Some(msg) = next() else { break };
        tally(&msg, &mut answered, &mut null_id_parse_errors, &mut codes, &mut synced, &mut others);
    }
    // Everything is in: the peak is final (a zombie has no VmHWM, so read it
    // before the agent exits).
    let (Some(peak_kib), Some(agent_cpu)) = (status_kib(pid, "VmHWM:"), cpu_time(pid)) else {
        panic!(
            "the agent is gone (watchdog?) after {} answers{}",
            count(&answered, null_id_parse_errors),
            if synced { "" } else { ", none to the sync request" }
        )
    };
    let stdin = writer.join().unwrap();
    drop(stdin);
    // Nothing more may come: no answer twice, nothing unasked.
    while let Some(msg) = next() {
        tally(&msg, &mut answered, &mut null_id_parse_errors, &mut codes, &mut synced, &mut others);
    }
    let status = child.wait().unwrap();
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    let log = std::fs::read_to_string(stderr.path()).unwrap_or_default();
    assert!(status.success(), "{status:?}\nstderr:\n{log}");
    assert!(synced, "no answer to the sync request\nstderr:\n{log}");
    assert!(others.is_empty(), "unexpected lines: {:?}", &others[..others.len().min(5)]);
    Report {
        written_while_stalled,
        rss_stalled_kib,
        peak_kib,
        answered,
        null_id_parse_errors,
        codes,
        agent_cpu,
        elapsed: start.elapsed(),
    }
}

/// User + system CPU time of a process, from `/proc/PID/stat` (in clock
/// ticks of 10 ms, the value on every Linux the tests run on).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn write_flood(mut stdin: ChildStdin, line: &dyn Fn(usize) -> String, written: &AtomicUsize) -> ChildStdin {
    let mut id = 1;
    while id <= FLOOD {
        let mut chunk = String::with_capacity(CHUNK * 96);
        let end = (id + CHUNK).min(FLOOD + 1);
        for i in id..end {
            chunk.push_str(&line(i));
            chunk.push('\n');
        }
        // Blocks while the agent is not reading: that is the backpressure.
        stdin.write_all(chunk.as_bytes()).expect("write the flood");
        written.store(end - 1, Ordering::Release);
        id = end;
    }
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":"{SYNC_ID}","method":"x/nope"}}"#).unwrap();
    stdin.flush().unwrap();
    stdin
}

fn read_message(stdout: &mut BufReader<ChildStdout>) -> Option<Value> {
    let mut line = String::new();
    match stdout.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))),
    }
}

fn tally(
    msg: &Value,
    answered: &mut [u32],
    nulls: &mut usize,
    codes: &mut std::collections::BTreeMap<i64, usize>,
    synced: &mut bool,
    others: &mut Vec<String>,
) {
    if msg["method"] == "event" {
        // The session's own events (e.g. `shutdown_complete` at EOF).
        return;
    }
    let is_response =
        msg.get("method").is_none() && (msg.get("result").is_some() ^ msg.get("error").is_some());
    if !is_response || msg["jsonrpc"] != "2.0" {
        others.push(msg.to_string());
        return;
    }
    if let Some(code) = msg["error"]["code"].as_i64() {
        *codes.entry(code).or_default() += 1;
    }
    match &msg["id"] {
        Value::String(s) if s == SYNC_ID => {
            assert!(!*synced, "the sync request was answered twice");
            *synced = true;
        }
        Value::Null if msg["error"]["code"] == -32700 => *nulls += 1,
        Value::Number(n) => match n.as_u64().map(|n| n as usize) {
            Some(id @ 1..=FLOOD) => answered[id - 1] += 1,
            _ => others.push(msg.to_string()),
        },
        _ => others.push(msg.to_string()),
    }
}

fn report(what: &str, r: &Report) {
    eprintln!(
        "{what}: {FLOOD} lines, {} written before reading began; RSS {} KiB stalled, peak {} KiB; \
         {} ids answered, {} null-id parse errors; codes {:?}; agent CPU {:?}, wall {:?}",
        r.written_while_stalled,
        r.rss_stalled_kib,
        r.peak_kib,
        r.answered.iter().filter(|&&n| n > 0).count(),
        r.null_id_parse_errors,
        r.codes,
        r.agent_cpu,
        r.elapsed,
    );
}

/// The checks common to the floods of requests.
fn assert_every_request_answered_once(what: &str, r: &Report) {
    report(what, r);
    assert!(
        r.written_while_stalled < FLOOD,
        "no backpressure: the whole flood was read while nobody read the answers"
    );
    assert!(r.peak_kib < PEAK_RSS_KIB, "peak RSS {} KiB ≥ {PEAK_RSS_KIB} KiB", r.peak_kib);
    let missing: Vec<usize> = (0..FLOOD).filter(|&i| r.answered[i] == 0).map(|i| i + 1).collect();
    let twice: Vec<usize> = (0..FLOOD).filter(|&i| r.answered[i] > 1).map(|i| i + 1).collect();
    assert!(
        missing.is_empty(),
        "{} requests unanswered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        twice.is_empty(),
        "{} requests answered twice, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(r.null_id_parse_errors, 0);
}

#[test]
fn requests_to_an_unknown_method() {
    let r = flood(true, false, |id| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"x/nope"}}"#));
    assert_every_request_answered_once("x/nope", &r);
    assert_eq!(r.codes.get(&-32601), Some(&(FLOOD + 1)), "{:?}", r.codes);
}

#[test]
fn requests_that_fail() {
    let r = flood(true, true, |id| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"submit","params":{{"id":"s{id}","op":{{"type":"no-such-op"}}}}}}"#
        )
    });
    assert_every_request_answered_once("submit with invalid params", &r);
    assert_eq!(r.codes.get(&-32602), Some(&FLOOD), "{:?}", r.codes);
}

#[test]
fn garbage_lines() {
    let r = flood(true, false, |id| format!("this is not JSON, line {id}"));
    report("garbage", &r);
    assert!(r.written_while_stalled < FLOOD, "no backpressure");
    assert!(r.peak_kib < PEAK_RSS_KIB, "peak RSS {} KiB ≥ {PEAK_RSS_KIB} KiB", r.peak_kib);
    assert_eq!(r.null_id_parse_errors, FLOOD, "one -32700 (id null) per garbage line");
    assert_eq!(r.codes.get(&-32700), Some(&FLOOD), "{:?}", r.codes);
}

#[test]
fn cancel_request_sent_as_a_request() {
    let r = flood(true, false, |id| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"$/cancelRequest","params":{{"id":{id}}}}}"#)
    });
    assert_every_request_answered_once("$/cancelRequest with an id", &r);
}

#[test]
fn notifications() {
    // Unknown notifications and cancellations of requests that do not exist:
    // the two kinds a peer can send the agent; neither is answered.
    let r = flood(false, false, |id| {
        if id % 2 == 0 {
            format!(r#"{{"jsonrpc":"2.0","method":"$/cancelRequest","params":{{"id":{id}}}}}"#)
        } else {
            format!(r#"{{"jsonrpc":"2.0","method":"x/note","params":{{"n":{id}}}}}"#)
        }
    });
    report("notifications", &r);
    assert!(r.peak_kib < PEAK_RSS_KIB, "peak RSS {} KiB ≥ {PEAK_RSS_KIB} KiB", r.peak_kib);
    assert!(r.answered.iter().all(|&n| n == 0), "a notification was answered");
    assert_eq!(r.null_id_parse_errors, 0);
    assert_eq!(r.codes.values().sum::<usize>(), 1, "only the sync request is answered: {:?}", r.codes);
}

/// The issue's worst case (336 MiB before the bound): requests that succeed,
/// each running the `submit` handler.
#[test]
fn interrupts_that_succeed() {
    let r = flood(true, true, |id| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"submit","params":{{"id":"i{id}","op":{{"type":"interrupt"}}}}}}"#
        )
    });
    assert_every_request_answered_once("submit interrupt", &r);
    assert_eq!(r.codes.values().sum::<usize>(), 1, "only the sync request fails: {:?}", r.codes);
}
