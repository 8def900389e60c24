//! Flow control and size limits: the bound on incoming requests in flight,
//! answers that are never dropped, and outgoing lines over the peer's limit.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::raw_peer;
use deputy_rpc::{PeerConfig, Router, RpcError, codes};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// A router whose `wait` handler holds until `release` is notified, counting
/// how many run at once.
fn waiting_router(running: Arc<AtomicUsize>, release: Arc<Notify>) -> Router {
    let mut r = Router::new();
    r.request("wait", move |n: u64, _ctx| {
        let running = Arc::clone(&running);
        let release = Arc::clone(&release);
        async move {
            running.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            Ok(n)
        }
    });
    r.request("echo", |v: Value, _ctx| async move { Ok(v) });
    r
}

#[tokio::test]
async fn incoming_requests_in_flight_are_bounded_and_the_reader_waits() {
    let running = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let config = PeerConfig { max_incoming_requests: 4, ..PeerConfig::default() };
    let (peer, _conn, mut raw) = raw_peer(waiting_router(Arc::clone(&running), Arc::clone(&release)), config);
    let mut input = String::new();
    for i in 0..10 {
        input.push_str(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"wait\",\"params\":{i}}}\n"));
    }
    // Behind them: a request that needs no permit would be answered at once
    // if the reader got to it.
    input.push_str("{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"nope\"}\n");
    raw.send(input.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(running.load(Ordering::SeqCst), 4, "more handlers started than the bound");
    assert_eq!(peer.incoming_requests(), 4);
    raw.nothing_within(100).await;
    // Release them one at a time: every request is answered exactly once.
    let mut answered = Vec::new();
    while answered.len() < 11 {
        release.notify_one();
        let v = raw.json().await;
        answered.push(v["id"].as_i64().unwrap());
    }
    answered.sort_unstable();
    let mut expected: Vec<i64> = (0..10).collect();
    expected.push(99);
    assert_eq!(answered, expected);
    assert_eq!(running.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_batch_larger_than_the_bound_still_runs() {
    let running = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let config = PeerConfig { max_incoming_requests: 2, ..PeerConfig::default() };
    let (_peer, _conn, mut raw) =
        raw_peer(waiting_router(Arc::clone(&running), Arc::clone(&release)), config);
    let batch: Vec<Value> =
        (0..5).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "echo", "params": i})).collect();
    raw.send(format!("{}\n", Value::Array(batch)).as_bytes()).await;
    let answers = raw.json().await;
    assert_eq!(answers.as_array().map(Vec::len), Some(5), "{answers}");
}

#[tokio::test]
async fn an_outgoing_message_over_the_peers_limit_fails_and_nothing_is_written() {
    let config = PeerConfig { max_outgoing_bytes: Some(200), ..PeerConfig::default() };
    let (peer, _conn, mut raw) = raw_peer(Router::new(), config);
    let big = "x".repeat(300);
    match peer.notify("note", json!({ "text": big })).await {
        Err(RpcError::MessageTooLarge { method, bytes, limit }) => {
            assert_eq!(method, "note");
            assert!(bytes > 300, "{bytes}");
            assert_eq!(limit, 200);
        }
        other => panic!("{other:?}"),
    }
    let err = peer.request::<_, Value>("call", json!({ "text": big })).await.unwrap_err();
    assert!(matches!(err, RpcError::MessageTooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("over the peer's limit of 200 bytes"), "{err}");
    assert_eq!(peer.pending_requests(), 0);
    // Nothing of either reached the wire: the next line is a small one.
    peer.notify("note", json!({ "text": "small" })).await.unwrap();
    let v = raw.json().await;
    assert_eq!(v["params"]["text"], "small");
    // The limit can be set later (from the peer's `initialize`) and lifted.
    peer.set_max_outgoing_bytes(Some(50));
    assert_eq!(peer.max_outgoing_bytes(), Some(50));
    assert!(peer.notify("note", json!({ "text": "x".repeat(60) })).await.is_err());
    peer.set_max_outgoing_bytes(None);
    peer.notify("note", json!({ "text": big })).await.unwrap();
    assert_eq!(raw.json().await["params"]["text"].as_str().map(str::len), Some(300));
}

#[tokio::test]
async fn an_answer_over_the_peers_limit_is_replaced_by_an_error() {
    let mut r = Router::new();
    r.request("big", |n: usize, _ctx| async move { Ok("y".repeat(n)) });
    let config = PeerConfig { max_outgoing_bytes: Some(256), ..PeerConfig::default() };
    let (_peer, _conn, mut raw) = raw_peer(r, config);
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"big\",\"params\":1000}\n").await;
    let v = raw.json().await;
    assert_eq!(v["id"], 1);
    assert_eq!(v["error"]["code"], codes::INTERNAL_ERROR);
    assert!(v["error"]["data"].as_str().unwrap().contains("over the limit of 256 bytes"), "{v}");
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"big\",\"params\":10}\n").await;
    assert_eq!(raw.json().await, json!({"jsonrpc": "2.0", "id": 2, "result": "yyyyyyyyyy"}));
    // In a batch, the big answers become errors until the batch line fits.
    raw.send(
        b"[{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"big\",\"params\":200},\
          {\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"big\",\"params\":5}]\n",
    )
    .await;
    let line = raw.line().await.unwrap();
    assert!(line.len() <= 257, "{} bytes: {line}", line.len());
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v[0]["id"], 3);
    assert_eq!(v[0]["error"]["code"], codes::INTERNAL_ERROR);
    assert_eq!(v[1], json!({"jsonrpc": "2.0", "id": 4, "result": "yyyyy"}));
}

/// A router whose `note` notification takes a while and records its param;
/// its `seen` request answers how many notes were recorded when it started.
fn slow_notes(seen: Arc<std::sync::Mutex<Vec<u64>>>) -> Router {
    let mut r = Router::new();
    let notes = Arc::clone(&seen);
    r.notification("note", move |n: u64| {
        let notes = Arc::clone(&notes);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            notes.lock().unwrap().push(n);
        }
    });
    r.request("seen", move |_: Value, _ctx| {
        let seen = Arc::clone(&seen);
        async move { Ok(seen.lock().unwrap().len()) }
    });
    r
}

#[tokio::test]
async fn in_order_hands_responses_and_requests_over_after_the_notifications_before_them() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = PeerConfig { in_order: true, ..PeerConfig::default() };
    let (peer, _conn, mut raw) = raw_peer(slow_notes(Arc::clone(&seen)), config);
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request::<_, Value>("prompt", json!({})).await }
    });
    let request = raw.json().await;
    let id = request["id"].clone();
    // Ten slow notifications, then the answer to our request, then a
    // request of the peer's, all in one write (one read on this side).
    let mut input = String::new();
    for n in 0..10 {
        input.push_str(&format!("{{\"jsonrpc\":\"2.0\",\"method\":\"note\",\"params\":{n}}}\n"));
    }
    input.push_str(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":\"done\"}}\n"));
    input.push_str("{\"jsonrpc\":\"2.0\",\"id\":\"q\",\"method\":\"seen\"}\n");
    raw.send(input.as_bytes()).await;
    assert_eq!(call.await.unwrap().unwrap(), json!("done"));
    // The answer resolved the call only after the ten notes were handled.
    assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<u64>>());
    // And the peer's request started after them too.
    let answer = raw.json().await;
    assert_eq!(answer["id"], json!("q"));
    assert_eq!(answer["result"], json!(10));
}
