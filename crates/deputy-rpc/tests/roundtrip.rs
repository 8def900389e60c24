//! Both sides issue 10,000 requests each, concurrently, over one duplex pipe.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::pair;
use deputy_rpc::{ErrorObject, Peer, PeerConfig, Router};
use serde::{Deserialize, Serialize};

const N: u64 = 10_000;

#[derive(Serialize, Deserialize)]
struct Req {
    n: u64,
    from: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Resp {
    n: u64,
    square: u64,
    by: String,
}

fn router(name: &'static str, notified: Arc<AtomicU64>) -> Router {
    let mut r = Router::new();
    r.request("square", move |req: Req, _ctx| async move {
        // Yield sometimes so answers come back out of order.
        if req.n.is_multiple_of(7) {
            tokio::task::yield_now().await;
        }
        Ok::<_, ErrorObject>(Resp { n: req.n, square: req.n * req.n, by: format!("{name} for {}", req.from) })
    })
    .notification("tick", move |n: u64| {
        let notified = notified.clone();
        async move {
            // In order: each tick is the previous one plus one (a gap poisons the count).
            let prev = notified.swap(n, Ordering::SeqCst);
            if prev + 1 != n {
                notified.store(u64::MAX / 2, Ordering::SeqCst);
            }
        }
    });
    r
}

async fn hammer(peer: Peer, me: &'static str, other: &'static str) {
    let calls = (0..N).map(|n| {
        let call = peer.request::<_, Resp>("square", Req { n, from: me.to_owned() });
        async move { (n, call.await) }
    });
    let notifies = {
        let peer = peer.clone();
        async move {
            for i in 1..=1000u64 {
                peer.notify("tick", i).await.unwrap();
            }
        }
    };
    let (results, ()) = tokio::join!(futures::future::join_all(calls), notifies);
    assert_eq!(results.len() as u64, N);
    for (n, result) in results {
        let resp = result.unwrap_or_else(|e| panic!("request {n} from {me} failed: {e}"));
        assert_eq!(resp, Resp { n, square: n * n, by: format!("{other} for {me}") });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_interleaved_requests_each_way() {
    let (ticks_a, ticks_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ((a, conn_a), (b, conn_b)) = pair(
        router("a", ticks_a.clone()),
        router("b", ticks_b.clone()),
        PeerConfig {
            // Small queues so backpressure paths are exercised too.
            outgoing_capacity: 64,
            notification_capacity: 16,
            // Both sides flood requests at once and each waits for the other
            // to read its answers: with both in-flight bounds reached, both
            // readers would wait on each other (see "Flow control" in the
            // crate docs). Room for every request keeps this a test of
            // matching, not of that limit (`flow.rs` tests the bound).
            max_incoming_requests: 2 * N as usize,
            ..PeerConfig::default()
        },
    );
    let (ta, tb) = (tokio::spawn(hammer(a.clone(), "a", "b")), tokio::spawn(hammer(b.clone(), "b", "a")));
    ta.await.unwrap();
    tb.await.unwrap();
    // A sent notification is only queued: wait until each side handled all
    // of the other's before closing (`close` drops undelivered ones).
    let start = std::time::Instant::now();
    while (ticks_a.load(Ordering::SeqCst) != 1000 || ticks_b.load(Ordering::SeqCst) != 1000)
        && start.elapsed() < std::time::Duration::from_secs(10)
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    a.close();
    assert!(matches!(conn_a.wait().await, deputy_rpc::CloseReason::Closed));
    // `b` reads EOF; its write side closes when its last handle goes.
    b.read_closed().await;
    drop(b);
    let reason = conn_b.wait().await;
    assert!(matches!(reason, deputy_rpc::CloseReason::Eof), "{reason:?}");
    assert_eq!(ticks_a.load(Ordering::SeqCst), 1000);
    assert_eq!(ticks_b.load(Ordering::SeqCst), 1000);
}
