//! Tracing: every line in and out is logged at trace level, through the
//! subscriber, never printed. Alone in its own test binary: tracing caches
//! per-callsite interest process-wide, and a concurrently running test that hits
//! the same callsites with no subscriber installed can make them look disabled.

mod common;

use std::sync::Arc;

use common::*;
use deputy_rpc::{PeerConfig, Router};
use serde_json::Value;

fn echo_router() -> Router {
    let mut r = Router::new();
    r.request("echo", |v: Value, _ctx| async move { Ok(v) });
    r
}

#[test]
fn every_line_in_and_out_is_traced_never_printed() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    // A current-thread runtime runs every task on this thread, under this subscriber.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (_peer, _conn, mut raw) = raw_peer(echo_router(), PeerConfig::default());
        raw.send(b"{\"id\":1,\"method\":\"echo\",\"params\":\"traced\"}\n").await;
        raw.json().await;
    });
    let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains(r#"TRACE"#), "{out}");
    assert!(out.contains(r#"<- line={"id":1,"method":"echo","params":"traced"}"#), "{out}");
    assert!(out.contains(r#"-> line={"jsonrpc":"2.0","id":1,"result":"traced"}"#), "{out}");
}
