//! Protocol violations on the agent's stdout.
//!
//! `deputy-rpc` calls [`PeerConfig::on_invalid`] for every line (or batch
//! element) that is not a valid JSON-RPC message: not JSON, not UTF-8, JSON
//! that is not JSON-RPC, an oversized line, an empty batch. The host turns
//! the first one into a [`ProtocolSignal`], which makes the supervisor kill
//! the agent with [`crate::HostError::ProtocolViolation`].

use std::sync::{Arc, OnceLock};

use deputy_rpc::{InvalidInput, PeerConfig};
use tokio_util::sync::CancellationToken;

/// Set once when the agent breaks the protocol on stdout; the first detail wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProtocolSignal {
    inner: Arc<ProtocolInner>,
}

#[derive(Debug, Default)]
struct ProtocolInner {
    detail: OnceLock<String>,
    fired: CancellationToken,
}

impl ProtocolSignal {
    /// Records a violation (ignored after the first).
    pub fn report(&self, detail: impl FnOnce() -> String) {
        if self.inner.detail.get().is_none() {
            let _ = self.inner.detail.set(detail());
            self.inner.fired.cancel();
        }
    }

    /// Resolves once a violation was reported.
    pub async fn fired(&self) {
        self.inner.fired.cancelled().await
    }

    /// The first violation's description.
    pub fn detail(&self) -> Option<&str> {
        self.inner.detail.get().map(String::as_str)
    }

    /// `config` with an invalid-input hook that reports to this signal (after
    /// calling the caller's own hook, if it set one).
    pub fn hook_into(&self, mut config: PeerConfig) -> PeerConfig {
        let signal = self.clone();
        let callers = config.on_invalid.take();
        config.on_invalid = Some(Arc::new(move |invalid: &InvalidInput| {
            if let Some(hook) = &callers {
                hook(invalid);
            }
            signal.report(|| describe(invalid));
        }));
        config
    }
}

/// "the agent wrote an invalid message to stdout: Parse error: … (code -32700): `…`".
fn describe(invalid: &InvalidInput) -> String {
    format!(
        "the agent wrote an invalid message to stdout: {} (code {}): `{}`",
        invalid.message, invalid.code, invalid.excerpt
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_rpc::{Peer, Router};
    use tokio::io::AsyncWriteExt as _;

    /// Feeds `input` to a peer hooked to a signal; returns the detail reported.
    async fn detail_for(input: &[u8]) -> Option<String> {
        detail_with(input, PeerConfig::default()).await
    }

    async fn detail_with(input: &[u8], config: PeerConfig) -> Option<String> {
        let signal = ProtocolSignal::default();
        let (mut agent_stdout, host_side) = tokio::io::duplex(4096);
        let (read, write) = tokio::io::split(host_side);
        let (peer, _conn) = Peer::serve(read, write, Router::new(), signal.hook_into(config));
        agent_stdout.write_all(input).await.unwrap();
        agent_stdout.shutdown().await.unwrap();
        peer.read_closed().await;
        signal.detail().map(str::to_owned)
    }

    #[tokio::test]
    async fn valid_traffic_is_no_violation() {
        let lines = b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{}}\r\n\n  \n\
            {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":1}\n{\"id\":1,\"method\":\"x\"}\n[{\"method\":\"n\"}]\n";
        assert_eq!(detail_for(lines).await, None);
    }

    #[tokio::test]
    async fn garbage_and_json_that_is_not_json_rpc_are_violations() {
        let detail = detail_for(b"{\"a\":1,\"method\":\"n\"}\nhello world\n{}\n").await.unwrap();
        assert!(detail.contains("`hello world`") && detail.contains("-32700"), "{detail}");
        let detail = detail_for(b"{\"hello\":1}\n").await.unwrap();
        assert!(detail.contains("`{\"hello\":1}`") && detail.contains("-32600"), "{detail}");
    }

    #[tokio::test]
    async fn the_callers_hook_is_called_too() {
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = Arc::clone(&seen);
        let config = PeerConfig::default().on_invalid(move |_| {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let detail = detail_with(b"[]\n", config).await.unwrap();
        assert!(detail.contains("empty batch"), "{detail}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
