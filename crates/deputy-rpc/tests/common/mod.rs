//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use deputy_rpc::{Connection, Peer, PeerConfig, Router};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

/// Two peers connected over an in-memory duplex pipe.
pub fn pair(a: Router, b: Router, config: PeerConfig) -> ((Peer, Connection), (Peer, Connection)) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (xr, xw) = tokio::io::split(x);
    let (yr, yw) = tokio::io::split(y);
    (Peer::serve(xr, xw, a, config.clone()), Peer::serve(yr, yw, b, config))
}

/// The raw side of a connection: write bytes, read lines.
pub struct Raw {
    pub reader: BufReader<ReadHalf<DuplexStream>>,
    pub writer: WriteHalf<DuplexStream>,
}

impl Raw {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// Closes the write side: the peer reads EOF.
    pub async fn eof(&mut self) {
        self.writer.shutdown().await.unwrap();
    }

    /// The next line, or `None` on EOF; panics after 5 s.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for a line")
            .unwrap();
        (n > 0).then_some(line)
    }

    pub async fn json(&mut self) -> Value {
        let line = self.line().await.expect("EOF instead of a line");
        assert!(line.ends_with('\n'), "unterminated line {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
    }

    /// Asserts that nothing arrives within `ms` milliseconds.
    pub async fn nothing_within(&mut self, ms: u64) {
        let mut line = String::new();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(ms), self.reader.read_line(&mut line)).await
        {
            panic!("expected silence, got {r:?}: {line:?}");
        }
    }
}

/// A peer served on one end, the raw other end for the test.
pub fn raw_peer(router: Router, config: PeerConfig) -> (Peer, Connection, Raw) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (xr, xw) = tokio::io::split(x);
    let (yr, yw) = tokio::io::split(y);
    let (peer, conn) = Peer::serve(xr, xw, router, config);
    (peer, conn, Raw { reader: BufReader::new(yr), writer: yw })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_test_writer()
        .try_init();
}
