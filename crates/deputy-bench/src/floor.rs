//! Floors: the same work done the plainest way, measured in the same run, so
//! every figure can be reported as a ratio that survives a noisy machine.
//!
//! The writer and echo floors run as child processes of this very binary
//! (`deputy-bench __floor-writer …`, `deputy-bench __echo-child`), talking
//! over real pipes, with blocking I/O and no async runtime.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deputy_protocol::{Event, EventMsg};
use serde::Deserialize;

/// The event line the throughput scenario floods with, byte for byte:
/// a JSON-RPC `event` notification carrying an `agent_message_delta`.
pub fn flood_line(submission_id: &str, delta: &str) -> String {
    let event = Event { id: submission_id.into(), msg: EventMsg::AgentMessageDelta { delta: delta.into() } };
    let params = serde_json::to_string(&event).expect("events serialize");
    format!(r#"{{"jsonrpc":"2.0","method":"event","params":{params}}}"#)
}

/// The decoder half of the floor: what a reader must do at the least.
#[derive(Deserialize)]
struct Notification {
    #[allow(dead_code)]
    method: String,
    params: Event,
}

/// Child side: read one line from stdin (to its end), then write `count`
/// copies of it to stdout as fast as possible.
pub fn floor_writer(count: u64) -> Result<()> {
    let mut bytes = Vec::new();
    std::io::stdin().lock().read_to_end(&mut bytes)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    bytes.push(b'\n');
    for _ in 0..count {
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(())
}

/// What the throughput floor measured.
pub struct FloorRate {
    pub events_per_s: f64,
    /// CPU time of the reading thread, in seconds.
    pub reader_cpu_s: f64,
}

/// Spawns the writer and decodes every line into a typed [`Event`] with a
/// plain blocking reader.
pub fn throughput_floor(line: &str, count: u64) -> Result<FloorRate> {
    let exe = std::env::current_exe()?;
    // The line goes through stdin: a 256 KiB line is over the kernel's limit
    // for one argument.
    let mut child = Command::new(exe)
        .args(["__floor-writer", "--count", &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning the floor writer")?;
    let mut to_child = child.stdin.take().expect("piped");
    to_child.write_all(line.as_bytes())?;
    drop(to_child);
    let cpu_before = crate::procfs::thread_cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let mut reader = BufReader::with_capacity(64 * 1024, child.stdout.take().expect("piped"));
    let mut buf = String::new();
    let mut seen = 0u64;
    loop {
        buf.clear();
        if reader.read_line(&mut buf)? == 0 {
            break;
        }
        let n: Notification = serde_json::from_str(&buf)?;
        if let EventMsg::AgentMessageDelta { delta } = &n.params.msg {
            std::hint::black_box(delta);
            seen += 1;
        }
    }
    let elapsed = started.elapsed();
    let reader_cpu_s = crate::procfs::thread_cpu_seconds().unwrap_or(0.0) - cpu_before;
    child.wait()?;
    if seen != count {
        bail!("floor writer delivered {seen} of {count} events");
    }
    Ok(FloorRate { events_per_s: count as f64 / elapsed.as_secs_f64(), reader_cpu_s })
}

/// Child side of the echo floor: answer every request line with a response
/// line carrying its id, until EOF.
pub fn echo_child() -> Result<()> {
    #[derive(Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        id: &'a serde_json::value::RawValue,
    }
    let stdin = std::io::stdin();
    let mut input = BufReader::new(stdin.lock());
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let req: Req = serde_json::from_str(&line)?;
        writeln!(out, r#"{{"jsonrpc":"2.0","id":{},"result":{{"decision":"approved"}}}}"#, req.id.get())?;
        out.flush()?;
    }
}

/// Round trips of an approval-sized request through the echo child. Returns
/// one duration per round trip.
pub fn echo_floor(count: usize) -> Result<Vec<Duration>> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("__echo-child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning the echo child")?;
    let mut to_child = child.stdin.take().expect("piped");
    let mut from_child = BufReader::new(child.stdout.take().expect("piped"));
    let mut samples = Vec::with_capacity(count);
    let mut line = String::new();
    for i in 0..count {
        let request = format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"approval/exec","params":{{"call_id":"c{i}","turn_id":"t","command":["true"],"cwd":"/"}}}}"#
        );
        let started = Instant::now();
        to_child.write_all(request.as_bytes())?;
        to_child.write_all(b"\n")?;
        to_child.flush()?;
        line.clear();
        if from_child.read_line(&mut line)? == 0 {
            bail!("echo child closed its stdout");
        }
        let answer: serde_json::Value = serde_json::from_str(&line)?;
        samples.push(started.elapsed());
        if answer["id"] != i {
            bail!("echo child answered {answer} to request {i}");
        }
    }
    drop(to_child);
    let mut rest = Vec::new();
    from_child.read_to_end(&mut rest)?;
    child.wait()?;
    Ok(samples)
}

/// Spawn a program and wait for it, `count` times. One duration per run.
pub fn spawn_floor(program: &std::path::Path, args: &[&str], count: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {}", program.display()))?;
        samples.push(started.elapsed());
        if !status.success() {
            bail!("{} {args:?} exited with {status}", program.display());
        }
    }
    Ok(samples)
}

/// Round trips through the echo child with `in_flight` requests outstanding
/// at a time (a new one is written as each answer is read), like the agent's
/// `ask_approval_only` step with `in_flight`. One duration per round trip.
pub fn echo_floor_in_flight(count: usize, in_flight: usize) -> Result<Vec<Duration>> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("__echo-child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning the echo child")?;
    let mut to_child = BufWriter::new(child.stdin.take().expect("piped"));
    let mut from_child = BufReader::new(child.stdout.take().expect("piped"));
    let mut sent = std::collections::VecDeque::with_capacity(in_flight);
    let mut samples = Vec::with_capacity(count);
    let mut line = String::new();
    let mut next = 0usize;
    let send = |i: usize, out: &mut BufWriter<_>| -> Result<Instant> {
        writeln!(
            out,
            r#"{{"jsonrpc":"2.0","id":{i},"method":"approval/exec","params":{{"call_id":"c{i}","turn_id":"t","command":["true"],"cwd":"/"}}}}"#
        )?;
        Ok(Instant::now())
    };
    while next < count.min(in_flight.max(1)) {
        sent.push_back((next, send(next, &mut to_child)?));
        next += 1;
    }
    to_child.flush()?;
    while let Some((id, started)) = sent.pop_front() {
        line.clear();
        if from_child.read_line(&mut line)? == 0 {
            bail!("echo child closed its stdout");
        }
        samples.push(started.elapsed());
        #[derive(Deserialize)]
        struct Answer {
            id: usize,
        }
        let answer: Answer = serde_json::from_str(&line)?;
        if answer.id != id {
            bail!("echo child answered {} to request {id}", answer.id);
        }
        if next < count {
            sent.push_back((next, send(next, &mut to_child)?));
            next += 1;
            to_child.flush()?;
        }
    }
    drop(to_child);
    let mut rest = Vec::new();
    from_child.read_to_end(&mut rest)?;
    child.wait()?;
    Ok(samples)
}

/// Reads a rollout file and parses every line into a typed
/// [`deputy_protocol::RolloutLine`], the plainest way: what loading it costs
/// at the least. Returns the items parsed.
pub fn rollout_floor(path: &std::path::Path) -> Result<usize> {
    let text = std::fs::read_to_string(path)?;
    let mut items = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        items.push(serde_json::from_str::<deputy_protocol::RolloutLine>(line)?);
    }
    Ok(std::hint::black_box(items).len())
}

/// One HTTP/1.1 POST of `body` to `127.0.0.1:port` over a fresh connection,
/// reading the reply to EOF with blocking I/O: what a model call costs at the
/// least on the wire. Returns the reply's length.
pub fn http_post_floor(port: u16, body: &[u8]) -> Result<usize> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    conn.set_nodelay(true)?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply)?;
    if !reply.starts_with(b"HTTP/1.1 200") {
        bail!("the model server answered: {}", String::from_utf8_lossy(&reply[..reply.len().min(200)]));
    }
    Ok(reply.len())
}

/// Nanoseconds per decode of one flood line's params, three ways: the
/// protocol's [`Event`] (with its delta fast path), the derived decoder of
/// [`EventMsg`] alone (serde's buffering of internally tagged enums: what
/// `Event` did before the fast path), and a plain struct of two strings (the
/// floor). Each is the best of 7 interleaved rounds of `count` decodes, so a busy
/// machine shows up less.
pub fn decode_costs(params: &str, count: usize) -> Result<(f64, f64, f64)> {
    #[derive(Deserialize)]
    struct Derived {
        #[allow(dead_code)]
        id: String,
        msg: EventMsg,
    }
    #[derive(Deserialize)]
    struct PlainMsg {
        #[serde(rename = "type")]
        #[allow(dead_code)]
        kind: String,
        delta: String,
    }
    #[derive(Deserialize)]
    struct Plain {
        #[allow(dead_code)]
        id: String,
        msg: PlainMsg,
    }
    /// ns per decode over one round of `count`.
    fn round<T: serde::de::DeserializeOwned>(
        params: &str,
        count: usize,
        check: impl Fn(&T) -> bool,
    ) -> Result<f64> {
        let started = Instant::now();
        for _ in 0..count {
            let v: T = serde_json::from_str(std::hint::black_box(params))?;
            if !check(&v) {
                bail!("decoded the wrong thing");
            }
        }
        Ok(started.elapsed().as_secs_f64() * 1e9 / count as f64)
    }
    let is_delta = |m: &EventMsg| matches!(m, EventMsg::AgentMessageDelta { delta } if !delta.is_empty());
    // Rounds interleaved, so all three see the same machine.
    let (mut fast, mut derived, mut plain) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..7 {
        fast = fast.min(round::<Event>(params, count, |e| is_delta(&e.msg))?);
        derived = derived.min(round::<Derived>(params, count, |e| is_delta(&e.msg))?);
        plain = plain.min(round::<Plain>(params, count, |e| !e.msg.delta.is_empty())?);
    }
    Ok((fast, derived, plain))
}
