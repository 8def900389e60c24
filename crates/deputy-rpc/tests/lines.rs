//! Line mode (`Router::lines`): every line whole and in order, the end of
//! input once, nothing answered, and `send_line` ordered with backpressure.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw_peer;
use deputy_rpc::{PeerConfig, Router, RpcError};
use tokio::sync::Notify;

/// A line-mode router that records what it gets; `gate`, if given, holds
/// every call until notified (a slow consumer).
fn recording(seen: Arc<Mutex<Vec<Option<String>>>>, gate: Option<Arc<Notify>>) -> Router {
    let mut router = Router::new();
    // Would be called for a JSON-RPC request if line mode did not take over.
    router.request("echo", |v: serde_json::Value, _cx| async move { Ok(v) });
    router.lines(move |line| {
        let seen = Arc::clone(&seen);
        let gate = gate.clone();
        async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            seen.lock().unwrap().push(line);
        }
    });
    router
}

async fn settle(seen: &Mutex<Vec<Option<String>>>, n: usize) -> Vec<Option<String>> {
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().clone()
}

#[tokio::test]
async fn every_line_is_handed_over_whole_in_order_then_the_end_once_and_nothing_is_answered() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (_peer, _conn, mut raw) = raw_peer(recording(Arc::clone(&seen), None), PeerConfig::default());
    // Codex-style (no `jsonrpc`), a JSON-RPC request, garbage, invalid
    // UTF-8, and a line split across two writes.
    raw.send(b"{\"id\":1,\"result\":{}}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\",\"params\":1}\n")
        .await;
    raw.send(b"not json\n\xff\xfe{}\n{\"type\":\"res").await;
    raw.send(b"ult\"}\n").await;
    raw.eof().await;
    let got = settle(&seen, 6).await;
    assert_eq!(
        got,
        vec![
            Some("{\"id\":1,\"result\":{}}".to_owned()),
            Some("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\",\"params\":1}".to_owned()),
            Some("not json".to_owned()),
            Some("\u{fffd}\u{fffd}{}".to_owned()),
            Some("{\"type\":\"result\"}".to_owned()),
            None,
        ]
    );
    // The request was not answered, the garbage not refused: silence.
    raw.nothing_within(100).await;
    assert_eq!(seen.lock().unwrap().len(), 6, "the end of input comes once");
}

#[tokio::test]
async fn an_oversized_line_is_reported_and_skipped_without_an_answer() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let invalid = Arc::new(Mutex::new(Vec::new()));
    let hook = Arc::clone(&invalid);
    let config = PeerConfig { max_line_bytes: 64, ..PeerConfig::default() }
        .on_invalid(move |bad| hook.lock().unwrap().push(bad.line_bytes));
    let (_peer, _conn, mut raw) = raw_peer(recording(Arc::clone(&seen), None), config);
    let mut input = vec![b'x'; 1000];
    input.extend_from_slice(b"\n{\"after\":true}\n");
    raw.send(&input).await;
    raw.eof().await;
    let got = settle(&seen, 2).await;
    assert_eq!(got, vec![Some("{\"after\":true}".to_owned()), None]);
    assert_eq!(*invalid.lock().unwrap(), vec![1000]);
    raw.nothing_within(100).await;
}

#[tokio::test]
async fn a_slow_line_handler_stops_the_reader_and_loses_nothing() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Notify::new());
    let config = PeerConfig { notification_capacity: 4, ..PeerConfig::default() };
    let (_peer, _conn, mut raw) = raw_peer(recording(Arc::clone(&seen), Some(Arc::clone(&gate))), config);
    let writer = tokio::spawn(async move {
        for n in 0..200 {
            raw.send(format!("{{\"n\":{n}}}\n").as_bytes()).await;
        }
        raw.eof().await;
        raw
    });
    // Let the handler run one call at a time until everything is seen.
    let mut got = Vec::new();
    for _ in 0..20_000 {
        gate.notify_one();
        tokio::task::yield_now().await;
        got = seen.lock().unwrap().clone();
        if got.last() == Some(&None) {
            break;
        }
    }
    let _raw = writer.await.unwrap();
    let mut expected: Vec<Option<String>> = (0..200).map(|n| Some(format!("{{\"n\":{n}}}"))).collect();
    expected.push(None);
    assert_eq!(got, expected);
}

#[tokio::test]
async fn send_line_writes_in_order_and_refuses_line_breaks() {
    let (peer, _conn, mut raw) =
        raw_peer(recording(Arc::new(Mutex::new(Vec::new())), None), PeerConfig::default());
    peer.send_line("{\"id\":1,\"method\":\"initialize\"}").await.unwrap();
    peer.send_line(String::from("{\"type\":\"user\"}")).await.unwrap();
    assert!(matches!(peer.send_line("{\"a\":1}\n{\"b\":2}").await, Err(RpcError::LineBreak)));
    assert!(matches!(peer.send_line("a\rb").await, Err(RpcError::LineBreak)));
    assert_eq!(raw.line().await.as_deref(), Some("{\"id\":1,\"method\":\"initialize\"}\n"));
    assert_eq!(raw.line().await.as_deref(), Some("{\"type\":\"user\"}\n"));
    peer.close_write();
    assert!(matches!(peer.send_line("{}").await, Err(RpcError::ConnectionClosed { .. })));
    assert_eq!(raw.line().await, None, "after the refused lines, only EOF");
}
