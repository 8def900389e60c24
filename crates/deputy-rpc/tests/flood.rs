//! Throughput smoke test (ignored by default; run in release):
//! `cargo test -p deputy-rpc --release --test flood -- --ignored --nocapture`

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use deputy_rpc::{Peer, PeerConfig, Router};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Event {
    id: String,
    seq: u64,
    msg: EventMsg,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventMsg {
    AgentMessageDelta { delta: String },
}

const N: u64 = 1_000_000;

fn lines() -> Vec<u8> {
    let mut out = Vec::new();
    for seq in 0..N {
        let ev = Event {
            id: "sub-1".into(),
            seq,
            msg: EventMsg::AgentMessageDelta { delta: "the quick brown fox jumps over the lazy dog".into() },
        };
        out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"event","params":"#);
        serde_json::to_writer(&mut out, &ev).unwrap();
        out.extend_from_slice(b"}\n");
    }
    out
}

#[derive(Deserialize)]
struct Line {
    #[allow(dead_code)]
    method: String,
    params: Event,
}

#[test]
#[ignore]
fn flood() {
    let input = lines();
    println!("{} bytes, {} per line", input.len(), input.len() as u64 / N);

    // Floor: blocking read + typed parse.
    let t = Instant::now();
    let mut sum = 0u64;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, &input[..]);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).unwrap() == 0 {
            break;
        }
        let l: Line = serde_json::from_slice(&buf).unwrap();
        sum += l.params.seq;
    }
    let floor = N as f64 / t.elapsed().as_secs_f64();
    println!("floor: {:.2} M/s (sum {sum})", floor / 1e6);

    let flavors = match std::env::var("FLOOD_FLAVOR") {
        Ok(f) => vec![if f == "multi" { "multi_thread" } else { "current_thread" }],
        Err(_) => vec!["current_thread", "multi_thread"],
    };
    for flavor in flavors {
        let rt = if flavor == "current_thread" {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
        } else {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        };
        let input = input.clone();
        rt.block_on(async move {
            let count = Arc::new(AtomicU64::new(0));
            let c = count.clone();
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(1024);
            let mut router = Router::new();
            let direct = std::env::var("FLOOD_DIRECT").is_ok();
            let c2 = count.clone();
            router.notification("event", move |ev: Event| {
                let tx = tx.clone();
                let c2 = c2.clone();
                async move {
                    if direct {
                        c2.fetch_add(ev.seq, Ordering::Relaxed);
                    } else {
                        let _ = tx.send(ev).await;
                    }
                }
            });
            let consumer = tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    c.fetch_add(ev.seq, Ordering::Relaxed);
                }
            });
            let send_only = std::env::var("FLOOD_SEND_ONLY").is_ok();
            let input = if send_only { Vec::new() } else { input };
            let t = Instant::now();
            // No handle kept: the write side closes once the reader is done (half-close).
            let (_, conn) =
                Peer::serve(std::io::Cursor::new(input), tokio::io::sink(), router, PeerConfig::default());
            let reason = conn.wait().await;
            consumer.await.unwrap();
            let rate = N as f64 / t.elapsed().as_secs_f64();
            if !send_only {
                assert_eq!(count.load(Ordering::Relaxed), N * (N - 1) / 2, "{reason}");
                println!("receive ({flavor}): {:.2} M/s = {:.0}% of floor", rate / 1e6, 100.0 * rate / floor);
            }

            // Send path: notify into a sink (the read side stays open).
            let (keep, idle) = tokio::io::duplex(64);
            let (peer, conn) = Peer::serve(idle, tokio::io::sink(), Router::new(), PeerConfig::default());
            let t = Instant::now();
            for seq in 0..N {
                let ev = Event {
                    id: "sub-1".into(),
                    seq,
                    msg: EventMsg::AgentMessageDelta {
                        delta: "the quick brown fox jumps over the lazy dog".into(),
                    },
                };
                if peer.notify("event", &ev).await.is_err() {
                    break;
                }
            }
            let rate = N as f64 / t.elapsed().as_secs_f64();
            println!("send ({flavor}): {:.2} M/s", rate / 1e6);
            drop((conn, keep));
        });
    }
}
