//! Behaviour of the peer over `tokio::io::duplex`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{init_tracing, pair, raw_peer};
use deputy_rpc::{
    CancelStyle, CancellationToken, CloseReason, ErrorObject, Id, Peer, PeerConfig, RequestOptions, Router,
    RpcError, codes,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Add {
    a: i64,
    b: i64,
}

fn math_router() -> Router {
    let mut r = Router::new();
    r.request("add", |p: Add, _ctx| async move { Ok(p.a + p.b) })
        .request("fail", |(): (), _ctx| async move {
            Err::<(), _>(ErrorObject::new(42, "nope").with_data(json!({"why": "because"})))
        })
        .request("panic", |(): (), _ctx| async move {
            if true {
                panic!("handler panic (expected in this test)");
            }
            Ok(())
        })
        .request("echo", |v: Value, _ctx| async move { Ok(v) });
    r
}

/// Sets a flag when dropped: shows that a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn requests_both_ways_and_errors() {
    init_tracing();
    let ((a, _ca), (b, _cb)) = pair(math_router(), math_router(), PeerConfig::default());
    let sum: i64 = a.request("add", Add { a: 2, b: 3 }).await.unwrap();
    assert_eq!(sum, 5);
    let sum: i64 = b.request("add", json!({"a": -2, "b": 3})).await.unwrap();
    assert_eq!(sum, 1);

    match a.request::<_, Value>("nope", ()).await {
        Err(RpcError::Remote(e)) => {
            assert_eq!(e.code, codes::METHOD_NOT_FOUND);
            assert_eq!(e.message, "Method not found: nope");
        }
        other => panic!("{other:?}"),
    }
    match a.request::<_, i64>("add", json!({"a": 1})).await {
        Err(RpcError::Remote(e)) => {
            assert_eq!(e.code, codes::INVALID_PARAMS);
            assert_eq!(e.data, Some(json!("missing field `b` at line 1 column 7")));
        }
        other => panic!("{other:?}"),
    }
    match a.request::<_, ()>("fail", ()).await {
        Err(RpcError::Remote(e)) => {
            assert_eq!(e, ErrorObject::new(42, "nope").with_data(json!({"why": "because"})));
        }
        other => panic!("{other:?}"),
    }
    match a.request::<_, ()>("panic", ()).await {
        Err(RpcError::Remote(e)) => assert_eq!(e.code, codes::INTERNAL_ERROR),
        other => panic!("{other:?}"),
    }
    match a.request::<_, String>("add", Add { a: 1, b: 1 }).await {
        Err(e @ RpcError::Decode { .. }) => {
            assert!(e.to_string().starts_with("failed to decode the response to `add`: invalid type"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // The futures borrow nothing: the handle may go before they are awaited.
    let (call, note) = {
        let handle = a.clone();
        (handle.request::<_, i64>("add", Add { a: 1, b: 2 }), handle.notify("nothing", ()))
    };
    note.await.unwrap();
    assert_eq!(call.await.unwrap(), 3);
    // Still healthy after all of that.
    let v: Value = a.request("echo", json!([1, "x", null])).await.unwrap();
    assert_eq!(v, json!([1, "x", null]));
}

#[tokio::test]
async fn notifications_arrive_in_order_despite_slow_handlers() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    r.notification("n", move |i: u64| {
        let tx = tx.clone();
        async move {
            // Earlier notifications take longer: any concurrency would reorder them.
            tokio::time::sleep(Duration::from_micros((20 - i % 20) * 50)).await;
            tx.send(i).unwrap();
        }
    });
    let ((a, _ca), (_b, _cb)) = pair(Router::new(), r, PeerConfig::default());
    for i in 0..200u64 {
        a.notify("n", i).await.unwrap();
    }
    for i in 0..200u64 {
        assert_eq!(rx.recv().await, Some(i));
    }
}

#[tokio::test]
async fn a_slow_request_does_not_block_other_messages() {
    let release = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    let rel = release.clone();
    r.request("slow", move |(): (), _ctx| {
        let rel = rel.clone();
        async move {
            rel.notified().await;
            Ok("slow")
        }
    })
    .request("fast", |(): (), _ctx| async move { Ok("fast") })
    .notification("n", move |(): ()| {
        let tx = tx.clone();
        async move { tx.send(()).unwrap() }
    });
    let ((a, _ca), (_b, _cb)) = pair(Router::new(), r, PeerConfig::default());
    let slow = tokio::spawn(a.request::<_, String>("slow", ()));
    let fast: String = a.request("fast", ()).await.unwrap();
    assert_eq!(fast, "fast");
    a.notify("n", ()).await.unwrap();
    rx.recv().await.unwrap();
    assert!(!slow.is_finished());
    release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap(), "slow");
}

#[tokio::test(start_paused = true)]
async fn timeout_removes_the_entry_and_cancels_the_remote_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut r = Router::new();
    r.request("hang", move |(): (), _ctx| {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let ((a, _ca), (_b, _cb)) = pair(Router::new(), r, PeerConfig::default());
    let err = a
        .request_with::<_, ()>("hang", (), RequestOptions::default().timeout(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout(d) if d == Duration::from_secs(2)), "{err}");
    // The peer got $/cancelRequest and dropped the handler's future.
    eventually(|| dropped.load(Ordering::SeqCst)).await;

    // The default timeout applies to `request`.
    let config =
        PeerConfig { default_request_timeout: Some(Duration::from_millis(300)), ..PeerConfig::default() };
    let mut r = Router::new();
    r.request("hang", |(): (), _ctx| async move {
        std::future::pending::<()>().await;
        Ok(())
    });
    let ((a, _ca), (_b, _cb)) = pair(Router::new(), r, config);
    let err = a.request::<_, ()>("hang", ()).await.unwrap_err();
    assert!(matches!(err, RpcError::Timeout(d) if d == Duration::from_millis(300)));
}

#[tokio::test]
async fn dropping_or_cancelling_a_call_sends_cancel_request() {
    let (a, _conn, mut raw) = raw_peer(Router::new(), PeerConfig::default());

    // Dropped future.
    let call = tokio::spawn(a.request::<_, Value>("m", json!({"x": 1})));
    let req = raw.json().await;
    assert_eq!(req, json!({"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"x": 1}}));
    assert_eq!(a.pending_requests(), 1);
    call.abort();
    let _ = call.await;
    assert_eq!(a.pending_requests(), 0);
    let cancel = raw.json().await;
    assert_eq!(cancel, json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 1}}));
    // A late answer is ignored.
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":5}\n").await;

    // Cancelled by token.
    let token = CancellationToken::new();
    let call =
        tokio::spawn(a.request_with::<_, Value>("m", (), RequestOptions::default().cancel(token.clone())));
    assert_eq!(raw.json().await["id"], 2);
    token.cancel();
    assert!(matches!(call.await.unwrap(), Err(RpcError::Cancelled)));
    assert_eq!(a.pending_requests(), 0);
    assert_eq!(raw.json().await["params"], json!({"id": 2}));

    // Cancel messages can be switched off.
    let call = tokio::spawn(a.request_with::<_, Value>(
        "m",
        (),
        RequestOptions::default().send_cancel_on_drop(false),
    ));
    assert_eq!(raw.json().await["id"], 3);
    call.abort();
    let _ = call.await;
    // An answer to the next one still works, and nothing was sent in between.
    let call = tokio::spawn(a.request::<_, i64>("m", ()));
    assert_eq!(raw.json().await["id"], 4);
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":7}\n").await;
    assert_eq!(call.await.unwrap().unwrap(), 7);
}

#[tokio::test]
async fn incoming_cancel_request_drops_the_handler_and_answers_32800() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut r = Router::new();
    r.request("hang", move |(): (), ctx| {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            assert!(!ctx.is_cancelled());
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let (_peer, _conn, mut raw) = raw_peer(r, PeerConfig::default());
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":\"req-1\",\"method\":\"hang\"}\n").await;
    // A cancel for an unknown id is ignored.
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":99}}\n").await;
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":\"req-1\"}}\n").await;
    let resp = raw.json().await;
    assert_eq!(resp["id"], "req-1");
    assert_eq!(resp["error"]["code"], codes::REQUEST_CANCELLED);
    assert!(dropped.load(Ordering::SeqCst));
    raw.nothing_within(50).await;
}

/// The Agent Client Protocol spells the cancel `$/cancel_request
/// {"requestId"}`: with `CancelStyle::Acp` the peer sends that, recognises
/// it, and takes LSP's `$/cancelRequest` for an ordinary (unknown)
/// notification.
#[tokio::test]
async fn acp_cancel_style_sends_and_honours_cancel_request_with_request_id() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut r = Router::new();
    r.request("hang", move |(): (), _ctx| {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let config = PeerConfig { cancel_style: CancelStyle::Acp, ..PeerConfig::default() };
    let (a, _conn, mut raw) = raw_peer(r, config);

    // Outgoing: an abandoned call is withdrawn in ACP's spelling.
    let call = tokio::spawn(a.request::<_, Value>("m", ()));
    assert_eq!(raw.json().await["id"], 1);
    call.abort();
    let _ = call.await;
    assert_eq!(
        raw.json().await,
        json!({"jsonrpc": "2.0", "method": "$/cancel_request", "params": {"requestId": 1}})
    );

    // Incoming: LSP's spelling does nothing here; ACP's cancels the handler.
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":\"p-1\",\"method\":\"hang\"}\n").await;
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":\"p-1\"}}\n").await;
    raw.nothing_within(50).await;
    assert!(!dropped.load(Ordering::SeqCst));
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"$/cancel_request\",\"params\":{\"requestId\":\"p-1\"}}\n")
        .await;
    let resp = raw.json().await;
    assert_eq!(resp["id"], "p-1");
    assert_eq!(resp["error"]["code"], codes::REQUEST_CANCELLED);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn eof_fails_pending_requests_at_once_but_the_write_side_stays_open() {
    let (a, conn, mut raw) = raw_peer(Router::new(), PeerConfig::default());
    let calls: Vec<_> = (0..5).map(|_| tokio::spawn(a.request::<_, Value>("m", ()))).collect();
    for _ in 0..5 {
        raw.json().await;
    }
    raw.eof().await; // EOF for the peer's reader
    // No answer can come: the peer is told, one `$/cancelRequest` per call.
    let mut cancelled: Vec<i64> = Vec::new();
    for _ in 0..5 {
        let v = raw.json().await;
        assert_eq!(v["method"], "$/cancelRequest", "{v}");
        cancelled.push(v["params"]["id"].as_i64().unwrap());
    }
    assert_eq!(cancelled, vec![1, 2, 3, 4, 5]);
    for call in calls {
        match call.await.unwrap() {
            Err(e @ RpcError::ConnectionClosed { .. }) => {
                assert_eq!(e.to_string(), "connection closed: the peer closed the connection (EOF)")
            }
            other => panic!("{other:?}"),
        }
    }
    a.read_closed().await;
    assert!(a.is_read_closed());
    assert!(!a.is_write_closed() && !a.is_closed());
    assert_eq!(a.close_reason().as_deref(), Some("the peer closed the connection (EOF)"));
    // New requests fail at once (no answer can come)...
    match a.request::<_, Value>("m", ()).await {
        Err(e @ RpcError::ConnectionClosed { .. }) => {
            assert_eq!(e.to_string(), "connection closed: the peer closed the connection (EOF)")
        }
        other => panic!("{other:?}"),
    }
    // ...and nothing was written for them; notifications still go out.
    a.notify("after-eof", 1).await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(raw.json().await, json!({"jsonrpc": "2.0", "method": "after-eof", "params": 1}));
    // The write side closes only when asked (or when every handle is gone).
    raw.nothing_within(50).await;
    a.close();
    assert_eq!(raw.line().await, None);
    a.closed().await;
    assert!(a.is_closed());
    assert!(matches!(conn.wait().await, CloseReason::Eof), "the read side ended first");
    assert!(matches!(a.notify("m", ()).await, Err(RpcError::ConnectionClosed { .. })));
}

#[tokio::test]
async fn eof_in_the_middle_of_a_line_is_reported_not_parsed() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    r.notification("n", move |v: u32| {
        let tx = tx.clone();
        async move { tx.send(v).unwrap() }
    });
    // No handle kept: the write side closes once the reader is done.
    let (_, conn, mut raw) = raw_peer(r, PeerConfig::default());
    raw.send(b"{\"method\":\"n\",\"params\":1}\n{\"method\":\"n\",\"params\":2}").await;
    raw.eof().await;
    assert!(matches!(conn.wait().await, CloseReason::EofWithPartialLine { bytes: 25 }));
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, None);
}

#[tokio::test]
async fn notifications_received_before_eof_are_all_delivered() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let mut r = Router::new();
    r.notification("n", move |(): ()| {
        let c = c.clone();
        async move {
            tokio::task::yield_now().await;
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let config = PeerConfig { notification_capacity: 4, ..PeerConfig::default() };
    let (peer, conn, mut raw) = raw_peer(r, config);
    raw.send(&b"{\"method\":\"n\"}\n".repeat(500)).await;
    raw.eof().await;
    drop(peer); // the last handle: the write side closes once the reader is done
    assert!(matches!(conn.wait().await, CloseReason::Eof));
    assert_eq!(raw.line().await, None);
    assert_eq!(count.load(Ordering::SeqCst), 500);
}

#[tokio::test]
async fn close_cancels_everything_flushes_and_sends_eof() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut r = Router::new();
    r.request("hang", move |(): (), _ctx| {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let (a, conn, mut raw) = raw_peer(r, PeerConfig::default());
    raw.send(b"{\"id\":1,\"method\":\"hang\"}\n").await;
    let pending = tokio::spawn(a.request::<_, Value>("m", ()));
    assert_eq!(raw.json().await["method"], "m");
    eventually(|| a.incoming_requests() == 1).await;
    a.notify("last", ()).await.unwrap();
    a.close();
    match pending.await.unwrap() {
        Err(e @ RpcError::ConnectionClosed { .. }) => {
            assert_eq!(e.to_string(), "connection closed: closed locally")
        }
        other => panic!("{other:?}"),
    }
    a.read_closed().await;
    // The queued notification is flushed, then EOF; the cancelled handler is not answered.
    assert_eq!(raw.json().await["method"], "last");
    assert_eq!(raw.line().await, None);
    eventually(|| dropped.load(Ordering::SeqCst)).await;
    a.closed().await;
    assert!(a.is_closed());
    assert!(matches!(conn.wait().await, CloseReason::Closed));
    assert_eq!(a.close_reason().as_deref(), Some("closed locally"));
}

#[tokio::test]
async fn abort_stops_at_once() {
    let (a, conn, _raw) = raw_peer(Router::new(), PeerConfig::default());
    let pending = tokio::spawn(a.request::<_, Value>("m", ()));
    tokio::task::yield_now().await;
    conn.abort();
    assert!(matches!(pending.await.unwrap(), Err(RpcError::ConnectionClosed { .. })));
    assert!(matches!(conn.wait().await, CloseReason::Aborted));
}

#[tokio::test]
async fn slow_notification_consumer_applies_backpressure_to_the_reader() {
    let release = Arc::new(Notify::new());
    let seen = Arc::new(AtomicUsize::new(0));
    let (rel, s) = (release.clone(), seen.clone());
    let mut r = Router::new();
    r.notification("n", move |(): ()| {
        let (rel, s) = (rel.clone(), s.clone());
        async move {
            if s.fetch_add(1, Ordering::SeqCst) == 0 {
                rel.notified().await;
            }
        }
    })
    .request("ping", |(): (), _ctx| async move { Ok("pong") });
    let config = PeerConfig { notification_capacity: 2, ..PeerConfig::default() };
    let (_peer, _conn, mut raw) = raw_peer(r, config);
    let mut input = b"{\"method\":\"n\"}\n".repeat(1000);
    input.extend_from_slice(b"{\"id\":1,\"method\":\"ping\"}\n");
    raw.send(&input).await;
    // The reader is held up behind the blocked consumer: the ping is not read yet.
    raw.nothing_within(100).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    release.notify_one();
    assert_eq!(raw.json().await["result"], "pong");
    assert_eq!(seen.load(Ordering::SeqCst), 1000);
}

#[tokio::test]
async fn a_stalled_peer_applies_backpressure_to_senders() {
    // A tiny pipe nobody reads from, and a small outgoing queue.
    let (x, _y) = tokio::io::duplex(256);
    let (xr, xw) = tokio::io::split(x);
    let config = PeerConfig { outgoing_capacity: 4, ..PeerConfig::default() };
    let (a, _conn) = Peer::serve(xr, xw, Router::new(), config);
    let mut sent = 0;
    loop {
        let send = a.notify("n", "x".repeat(100));
        match tokio::time::timeout(Duration::from_millis(50), send).await {
            Ok(r) => {
                r.unwrap();
                sent += 1;
                assert!(sent < 1000, "the queue never filled up");
            }
            Err(_) => break,
        }
    }
    // Queue (4) + what the writer holds and the pipe and BufWriter absorb.
    assert!(sent < 1000);
}

#[tokio::test]
async fn unknown_response_ids_and_garbage_are_not_fatal() {
    let (_peer, _conn, mut raw) = raw_peer(math_router(), PeerConfig::default());
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":999,\"result\":1}\n").await;
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"error\":{\"code\":1,\"message\":\"m\"}}\n").await;
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"m\"}}\n").await;
    raw.send(b"\x00\x01garbage\n").await;
    let err = raw.json().await;
    assert_eq!(err["error"]["code"], codes::PARSE_ERROR);
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":-5,\"method\":\"add\",\"params\":{\"a\":1,\"b\":2}}\n").await;
    assert_eq!(raw.json().await, json!({"jsonrpc": "2.0", "id": -5, "result": 3}));
}

#[tokio::test]
async fn oversized_line_is_answered_and_the_next_line_served_without_more_input() {
    let config = PeerConfig { max_line_bytes: 64, ..PeerConfig::default() };
    let (_peer, _conn, mut raw) = raw_peer(math_router(), config);
    let long = format!("{{\"id\":1,\"method\":\"echo\",\"params\":\"{}\"}}", "x".repeat(100));
    assert_eq!(long.len(), 136);
    let mut input = format!("{long}\n").into_bytes();
    input.extend_from_slice(b"{\"id\":2,\"method\":\"add\",\"params\":{\"a\":1,\"b\":2}}\n");
    raw.send(&input).await;
    let err = raw.json().await;
    assert_eq!(err["id"], Value::Null);
    assert_eq!(err["error"]["code"], codes::INVALID_REQUEST);
    assert_eq!(err["error"]["data"], "line of 136 bytes exceeds the limit of 64 bytes");
    assert_eq!(raw.json().await, json!({"jsonrpc": "2.0", "id": 2, "result": 3}));
}

#[tokio::test]
async fn batches_follow_the_spec() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = math_router();
    r.notification("n", move |v: u32| {
        let tx = tx.clone();
        async move { tx.send(v).unwrap() }
    });
    let (_peer, _conn, mut raw) = raw_peer(r, PeerConfig::default());
    raw.send(
        br#"[{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":1,"b":1}},{"method":"n","params":7},1,{"id":"b","method":"nope"},{"id":2,"method":"echo","params":[true]}]
"#,
    )
    .await;
    assert_eq!(
        raw.json().await,
        json!([
            {"jsonrpc": "2.0", "id": 1, "result": 2},
            {"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "Invalid Request", "data": "a batch element must be a JSON object"}},
            {"jsonrpc": "2.0", "id": "b", "error": {"code": -32601, "message": "Method not found: nope"}},
            {"jsonrpc": "2.0", "id": 2, "result": [true]},
        ])
    );
    assert_eq!(rx.recv().await, Some(7));
    // All notifications: no answer at all.
    raw.send(b"[{\"method\":\"n\",\"params\":8},{\"method\":\"n\",\"params\":9}]\n").await;
    assert_eq!(rx.recv().await, Some(8));
    assert_eq!(rx.recv().await, Some(9));
    raw.nothing_within(50).await;
    // Empty batch: one error, not an array.
    raw.send(b"[]\n").await;
    let err = raw.json().await;
    assert_eq!(err["error"]["code"], codes::INVALID_REQUEST);
    assert_eq!(err["id"], Value::Null);
}

#[tokio::test]
async fn handlers_can_call_back_through_the_context() {
    let mut server = Router::new();
    server.request("ask", |q: String, ctx: deputy_rpc::RequestContext| async move {
        assert_eq!(ctx.id, Id::Integer(1));
        let answer: bool =
            ctx.peer.request("approve", &q).await.map_err(|e| ErrorObject::internal(e.to_string()))?;
        Ok(if answer { "approved" } else { "denied" })
    });
    let mut client = Router::new();
    client.request("approve", |q: String, _ctx| async move { Ok(q == "rm -rf /tmp/x") });
    let ((c, _cc), (_s, _sc)) = pair(client, server, PeerConfig::default());
    let r: String = c.request("ask", "rm -rf /tmp/x").await.unwrap();
    assert_eq!(r, "approved");
}

#[tokio::test]
async fn fallback_gets_unknown_methods() {
    let mut r = Router::new();
    r.fallback(|method: String, params, _ctx| async move {
        Ok(json!({"method": method, "params": params.map(|p: Box<deputy_rpc::RawValue>| p.get().to_owned())}))
    });
    let ((a, _ca), (_b, _cb)) = pair(Router::new(), r, PeerConfig::default());
    let v: Value = a.request("whatever", [1, 2]).await.unwrap();
    assert_eq!(v, json!({"method": "whatever", "params": "[1,2]"}));
}

#[tokio::test]
async fn bom_crlf_and_blank_lines_are_tolerated() {
    let (_peer, _conn, mut raw) = raw_peer(math_router(), PeerConfig::default());
    raw.send(b"\xEF\xBB\xBF{\"id\":1,\"method\":\"echo\",\"params\":1}\r\n\r\n\n   \n{\"id\":2,\"method\":\"echo\",\"params\":2}\r\n").await;
    assert_eq!(raw.json().await["result"], 1);
    assert_eq!(raw.json().await["result"], 2);
}

#[tokio::test]
async fn a_peer_that_does_not_read_is_slowed_down_and_every_request_is_answered() {
    // The raw side does not read our answers at first: the queue and the
    // pipe fill up, and then the reader must stop reading (backpressure)
    // rather than drop answers.
    let (x, y) = tokio::io::duplex(512);
    let (xr, xw) = tokio::io::split(x);
    let (yr, mut yw) = tokio::io::split(y);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    r.notification("n", move |v: u32| {
        let tx = tx.clone();
        async move { tx.send(v).unwrap() }
    });
    let config = PeerConfig { outgoing_capacity: 2, ..PeerConfig::default() };
    let (_peer, _conn) = Peer::serve(xr, xw, r, config);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Thousands of lines that each need an answer, then a notification.
        for i in 0..2000 {
            let line = if i % 2 == 0 {
                "garbage\n".to_owned()
            } else {
                format!("{{\"id\":{i},\"method\":\"nope\"}}\n")
            };
            yw.write_all(line.as_bytes()).await.unwrap();
        }
        yw.write_all(b"{\"method\":\"n\",\"params\":1}\n").await.unwrap();
        yw
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the reader kept reading while its answers could not be written");
    assert!(rx.try_recv().is_err(), "the notification was read past unanswered requests");
    use tokio::io::AsyncBufReadExt as _;
    // Now read: every line gets exactly one answer, in order, then the
    // notification is handled.
    let mut lines = tokio::io::BufReader::new(yr).lines();
    for i in 0..2000 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an answer is missing")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if i % 2 == 0 {
            assert_eq!(
                (v["id"].clone(), v["error"]["code"].clone()),
                (Value::Null, json!(codes::PARSE_ERROR))
            );
        } else {
            assert_eq!(
                (v["id"].clone(), v["error"]["code"].clone()),
                (json!(i), json!(codes::METHOD_NOT_FOUND))
            );
        }
    }
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(got.expect("the notification never came"), Some(1));
    let _yw = writer.await.unwrap();
}

#[tokio::test]
async fn a_huge_oversized_line_streams_through_in_bounded_memory() {
    let config = PeerConfig { max_line_bytes: 1024, ..PeerConfig::default() };
    let (_peer, _conn, mut raw) = raw_peer(math_router(), config);
    raw.send(b"{\"id\":1,\"method\":\"echo\",\"params\":\"").await;
    let chunk = vec![b'z'; 64 * 1024];
    for _ in 0..64 {
        raw.send(&chunk).await; // 4 MiB in total, never buffered whole
    }
    raw.send(b"\"}\n{\"id\":2,\"method\":\"echo\",\"params\":2}\n").await;
    let err = raw.json().await;
    assert_eq!(err["error"]["code"], codes::INVALID_REQUEST);
    assert_eq!(err["id"], Value::Null);
    assert_eq!(raw.json().await, json!({"jsonrpc": "2.0", "id": 2, "result": 2}));
}

#[tokio::test]
async fn odd_responses_to_our_requests() {
    let (a, _conn, mut raw) = raw_peer(Router::new(), PeerConfig::default());
    // An error member that is not an error object: a decode error, not a hang.
    let call = tokio::spawn(a.request::<_, Value>("m", ()));
    let id = raw.json().await["id"].clone();
    raw.send(format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":\"boom\"}}\n").as_bytes()).await;
    assert!(matches!(call.await.unwrap(), Err(RpcError::Decode { method, .. }) if method == "m"));
    // A response inside a batch is delivered too.
    let call = tokio::spawn(a.request::<_, Value>("m", ()));
    let id = raw.json().await["id"].clone();
    raw.send(format!("[{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":[1]}}]\n").as_bytes()).await;
    assert_eq!(call.await.unwrap().unwrap(), json!([1]));
    // `$/cancelRequest` sent as a request is acknowledged with null.
    raw.send(b"{\"id\":\"c\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":1}}\n").await;
    assert_eq!(raw.json().await, json!({"jsonrpc": "2.0", "id": "c", "result": null}));
}

#[tokio::test]
async fn eof_lets_incoming_handlers_finish_and_answers_them() {
    let release = Arc::new(Notify::new());
    let rel = release.clone();
    let mut r = Router::new();
    r.request("slow", move |(): (), ctx: deputy_rpc::RequestContext| {
        let rel = rel.clone();
        async move {
            rel.notified().await;
            // The handler may still talk to the peer after EOF.
            ctx.peer.notify("progress", "done").await.map_err(|e| ErrorObject::internal(e.to_string()))?;
            assert!(!ctx.is_cancelled());
            Ok("finished")
        }
    });
    let (peer, conn, mut raw) = raw_peer(r, PeerConfig::default());
    raw.send(b"{\"id\":1,\"method\":\"slow\"}\n{\"id\":2,\"method\":\"slow\"}\n").await;
    raw.eof().await;
    peer.read_closed().await;
    eventually(|| peer.incoming_requests() == 2).await;
    drop(peer); // the handlers hold their own handles: the write side stays open for them
    release.notify_waiters();
    let mut got = Vec::new();
    while let Some(line) = raw.line().await {
        got.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    // Both answered (and their notifications written), then EOF once the last handle went.
    assert_eq!(got.len(), 4, "{got:?}");
    for id in [1, 2] {
        assert!(got.contains(&json!({"jsonrpc": "2.0", "id": id, "result": "finished"})), "{got:?}");
    }
    assert_eq!(got.iter().filter(|v| v["method"] == "progress").count(), 2, "{got:?}");
    assert!(matches!(conn.wait().await, CloseReason::Eof));
}

#[tokio::test]
async fn close_write_half_closes_and_answers_still_arrive() {
    let (a, conn, mut raw) = raw_peer(Router::new(), PeerConfig::default());
    let call = tokio::spawn(a.request::<_, i64>("m", ()));
    eventually(|| a.pending_requests() == 1).await;
    a.notify("last", ()).await.unwrap();
    a.close_write();
    // Queued messages are written, then EOF.
    assert_eq!(raw.json().await["method"], "m");
    assert_eq!(raw.json().await["method"], "last");
    assert_eq!(raw.line().await, None);
    a.write_closed().await;
    assert!(a.is_write_closed() && !a.is_read_closed());
    match a.notify("n", ()).await {
        Err(e @ RpcError::ConnectionClosed { .. }) => {
            assert_eq!(e.to_string(), "connection closed: the write side was closed locally")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(a.request::<_, i64>("m", ()).await, Err(RpcError::ConnectionClosed { .. })));
    // The read side goes on: the pending call gets its answer.
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":7}\n").await;
    assert_eq!(call.await.unwrap().unwrap(), 7);
    a.flush().await.unwrap(); // nothing left to write: the writer ended cleanly
    raw.eof().await;
    a.closed().await;
    assert!(matches!(conn.wait().await, CloseReason::Eof));
}

#[tokio::test]
async fn dropping_every_handle_closes_the_write_side() {
    let (a, conn, mut raw) = raw_peer(Router::new(), PeerConfig::default());
    let b = a.clone();
    b.notify("one", ()).await.unwrap();
    drop(a);
    raw.json().await;
    raw.nothing_within(50).await; // `b` still holds it open
    b.notify("two", ()).await.unwrap();
    drop(b);
    assert_eq!(raw.json().await["method"], "two");
    // The reader still holds a handle (to answer requests) until it ends.
    raw.nothing_within(50).await;
    raw.eof().await;
    assert_eq!(raw.line().await, None);
    assert!(matches!(conn.wait().await, CloseReason::Eof));
}

#[tokio::test]
async fn flush_waits_until_everything_queued_is_written() {
    // A tiny pipe: nothing gets through until the other side reads.
    let (x, y) = tokio::io::duplex(64);
    let (xr, xw) = tokio::io::split(x);
    let (a, _conn) = Peer::serve(xr, xw, Router::new(), PeerConfig::default());
    for i in 0..20 {
        a.notify("n", i).await.unwrap();
    }
    let flushed = tokio::spawn(a.flush());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!flushed.is_finished(), "flush resolved before the queue was written");
    let (yr, _yw) = tokio::io::split(y);
    let mut reader = tokio::io::BufReader::new(yr);
    let reading = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt as _;
        let mut lines = Vec::new();
        let mut line = String::new();
        while lines.len() < 20 && reader.read_line(&mut line).await.unwrap() > 0 {
            lines.push(std::mem::take(&mut line));
        }
        lines
    });
    flushed.await.unwrap().unwrap();
    assert_eq!(reading.await.unwrap().len(), 20);
    // close() flushes too; flush after it resolves once the writer is done.
    a.notify("x", ()).await.unwrap();
    a.close();
    a.flush().await.unwrap();
    assert!(a.is_write_closed());
}

#[tokio::test]
async fn invalid_input_hook_is_called_once_per_invalid_line_or_element() {
    let seen: Arc<std::sync::Mutex<Vec<deputy_rpc::InvalidInput>>> = Arc::default();
    let s = seen.clone();
    let config = PeerConfig { max_line_bytes: 64, ..PeerConfig::default() }
        .on_invalid(move |invalid| s.lock().unwrap().push(invalid.clone()));
    let (_peer, _conn, mut raw) = raw_peer(math_router(), config);
    let take = || std::mem::take(&mut *seen.lock().unwrap());

    // Valid traffic (including odd but valid messages) never calls it.
    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"add\",\"params\":{\"a\":1,\"b\":2}}\n").await;
    raw.json().await;
    raw.send(b"{\"method\":\"unknown\"}\n{\"id\":9,\"result\":1}\n{\"id\":2,\"method\":\"nope\"}\n[{\"method\":\"n\"}]\n").await;
    assert_eq!(raw.json().await["error"]["code"], codes::METHOD_NOT_FOUND);
    assert!(take().is_empty());

    let oversized = format!("{{\"id\":1,\"method\":\"echo\",\"params\":\"{}\"}}", "x".repeat(300));
    let cases: Vec<(&str, Vec<u8>, i64, &str)> = vec![
        ("parse error", b"this is not json".to_vec(), codes::PARSE_ERROR, "this is not json"),
        ("invalid UTF-8", b"{\"a\":\"\xff\"}".to_vec(), codes::PARSE_ERROR, "{\"a\":\"\u{fffd}\"}"),
        ("not JSON-RPC", b"{\"hello\":1}".to_vec(), codes::INVALID_REQUEST, "{\"hello\":1}"),
        ("not an object", b"42".to_vec(), codes::INVALID_REQUEST, "42"),
        ("empty batch", b"[]".to_vec(), codes::INVALID_REQUEST, "[]"),
        ("oversized", oversized.clone().into_bytes(), codes::INVALID_REQUEST, &oversized[..200]),
    ];
    for (name, input, code, excerpt) in &cases {
        let mut bytes = input.clone();
        bytes.push(b'\n');
        raw.send(&bytes).await;
        let answer = raw.json().await;
        assert_eq!(answer["error"]["code"], *code, "{name}: the answer is unchanged");
        assert_eq!(answer["id"], Value::Null, "{name}");
        let got = take();
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert_eq!(got[0].code, *code, "{name}");
        assert_eq!(got[0].excerpt, *excerpt, "{name}");
        assert_eq!(got[0].line_bytes, input.len(), "{name}");
        assert!(got[0].excerpt.len() <= deputy_rpc::INVALID_EXCERPT_BYTES, "{name}");
        assert!(!got[0].message.is_empty(), "{name}");
    }
    // A batch: once per invalid element, valid elements never.
    raw.send(b"[1,{\"id\":3,\"method\":\"echo\",\"params\":3},{\"foo\":2}]\n").await;
    let answer = raw.json().await;
    assert_eq!(answer.as_array().unwrap().len(), 3);
    let got = take();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|g| g.code == codes::INVALID_REQUEST));
    assert_eq!(got[0].message, "Invalid Request: a batch element must be a JSON object");
    // Display names the code and the excerpt.
    let shown = got[1].to_string();
    assert!(shown.contains("-32600") && shown.contains("foo"), "{shown}");
}

/// Waits (up to a second) until `cond` holds.
async fn eventually(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never became true");
}

#[tokio::test]
async fn a_write_error_closes_the_connection() {
    struct Broken;
    impl tokio::io::AsyncWrite for Broken {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    let (keep, read) = tokio::io::duplex(64);
    let (a, conn) = Peer::serve(read, Broken, Router::new(), PeerConfig::default());
    match a.request::<_, Value>("m", ()).await {
        Err(RpcError::ConnectionClosed { reason }) => assert!(reason.starts_with("write error"), "{reason}"),
        other => panic!("{other:?}"),
    }
    a.write_closed().await;
    assert!(matches!(a.flush().await, Err(RpcError::ConnectionClosed { .. })));
    assert!(matches!(a.notify("n", ()).await, Err(RpcError::ConnectionClosed { .. })));
    // The read side is still open; the connection ends with it, and the write error was first.
    assert!(!a.is_read_closed());
    drop(keep);
    match conn.wait().await {
        CloseReason::WriteError(e) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("{other:?}"),
    }
}

/// The batch-end hook runs after the notifications of one read, in order, and
/// again after the next read's.
#[tokio::test]
async fn batch_end_runs_after_each_batch_of_notifications() {
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut router = Router::new();
    let seen = Arc::clone(&log);
    router.notification("note", move |n: i64| {
        let seen = Arc::clone(&seen);
        async move { seen.lock().unwrap().push(n.to_string()) }
    });
    let ends = Arc::clone(&log);
    let (tx, mut rx) = mpsc::unbounded_channel();
    router.notification_batch_end(move || {
        let ends = Arc::clone(&ends);
        let tx = tx.clone();
        async move {
            ends.lock().unwrap().push("end".into());
            let _ = tx.send(());
        }
    });
    let (_peer, _conn, mut raw) = raw_peer(router, PeerConfig::default());
    raw.send(
        b"{\"method\":\"note\",\"params\":1}\n{\"method\":\"note\",\"params\":2}\n{\"method\":\"note\",\"params\":3}\n",
    )
    .await;
    rx.recv().await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["1", "2", "3", "end"]);
    raw.send(b"{\"method\":\"note\",\"params\":4}\n").await;
    rx.recv().await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["1", "2", "3", "end", "4", "end"]);
}

/// Params are decoded by the reader: a params type whose `Deserialize`
/// panics skips that notification (as a panicking handler does), in the
/// plain shape and in any other, and the connection goes on.
#[tokio::test]
async fn a_panicking_params_decoder_skips_the_notification_not_the_connection() {
    struct Touchy(u32);
    impl<'de> Deserialize<'de> for Touchy {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let v = u32::deserialize(d)?;
            assert!(v != 13, "unlucky");
            Ok(Touchy(v))
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut r = Router::new();
    r.notification("n", move |t: Touchy| {
        let tx = tx.clone();
        async move { tx.send(t.0).unwrap() }
    });
    let (peer, conn, mut raw) = raw_peer(r, PeerConfig::default());
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":1}\n").await;
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":13}\n").await; // plain shape
    raw.send(b"{\"params\":13,\"method\":\"n\",\"x\":0}\n").await; // the full classifier's path
    raw.send(b"{\"method\":\"n\",\"params\":\"two\"}\n").await; // does not decode: skipped
    raw.send(b"{\"x\":1,\"method\":\"n\",\"params\":3}\n").await;
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, Some(3));
    raw.eof().await;
    drop(peer);
    assert!(matches!(conn.wait().await, CloseReason::Eof));
    assert_eq!(raw.line().await, None, "nothing is answered");
}
