//! Adapters between the agent's pipes and the rpc peer.
//!
//! - [`ClosableStdin`]: the peer's writer. The cancel ladder closes the
//!   agent's stdin right after the `shutdown` submission is flushed (EOF is
//!   one more shutdown signal) while the peer keeps reading stdout. The rpc
//!   crate has no half-close, so the adapter watches for the shutdown line (a
//!   unique marker in its submission id) and closes the pipe after the flush
//!   that follows it; later writes are discarded.
//! - [`StdoutTap`]: the peer's reader. It reports a line that cannot be a
//!   JSON-RPC message (first byte not `{` or `[`) to a [`ProtocolSignal`].
//!   Interim: lines that are JSON but not valid JSON-RPC are only caught once
//!   the rpc crate reports invalid messages itself.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// Protocol violations.

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
}

/// Wraps the agent's stdout and reports lines that cannot be JSON-RPC.
pub(crate) struct StdoutTap<R> {
    inner: R,
    signal: ProtocolSignal,
    at_line_start: bool,
    at_stream_start: bool,
}

impl<R> StdoutTap<R> {
    pub fn new(inner: R, signal: ProtocolSignal) -> Self {
        StdoutTap { inner, signal, at_line_start: true, at_stream_start: true }
    }

    fn inspect(&mut self, mut data: &[u8]) {
        if self.at_stream_start && !data.is_empty() {
            data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
            self.at_stream_start = false;
        }
        while !data.is_empty() {
            if self.at_line_start {
                let skip = data.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')).count();
                data = &data[skip..];
                let Some(&first) = data.first() else { return };
                self.at_line_start = false;
                if first != b'{' && first != b'[' {
                    let end = memchr::memchr(b'\n', data).unwrap_or(data.len()).min(120);
                    let line = String::from_utf8_lossy(&data[..end]).into_owned();
                    self.signal.report(|| format!("the agent wrote a non-JSON-RPC line to stdout: {line:?}"));
                }
            }
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    self.at_line_start = true;
                    data = &data[nl + 1..];
                }
                None => return,
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for StdoutTap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let this = &mut *self;
            this.inspect(&buf.filled()[before..]);
        }
        res
    }
}

// ---------------------------------------------------------------------------
// Stdin with close-after-marker.

/// Shared control of a [`ClosableStdin`].
///
/// It also holds a duplicate of the pipe's write end, so that the peer
/// shutting its writer down (which it does when it reads EOF on stdout) does
/// not send EOF to the agent: only the ladder does, or the final cleanup.
#[derive(Debug, Default)]
pub(crate) struct StdinControl {
    marker: Mutex<Option<Vec<u8>>>,
    closed: std::sync::atomic::AtomicBool,
    keepalive: Mutex<Option<std::os::fd::OwnedFd>>,
}

impl StdinControl {
    /// A control keeping a duplicate (close-on-exec) of `pipe` open.
    pub fn new(pipe: &impl std::os::fd::AsFd) -> Self {
        let keepalive = pipe.as_fd().try_clone_to_owned().ok();
        StdinControl { keepalive: Mutex::new(keepalive), ..Default::default() }
    }

    /// Closes the duplicate: the agent sees EOF once the writer's end is closed too.
    pub fn release(&self) {
        drop(self.keepalive.lock().unwrap_or_else(PoisonError::into_inner).take());
    }

    /// Closes the pipe after the flush following a write that contains `marker`.
    /// Arm before the line carrying the marker is queued.
    pub fn close_after(&self, marker: &str) {
        *self.marker.lock().unwrap_or_else(PoisonError::into_inner) = Some(marker.as_bytes().to_vec());
    }

    /// Whether the pipe was closed.
    #[cfg(test)]
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The agent's stdin, closable by the ladder while the peer keeps reading.
pub(crate) struct ClosableStdin<W> {
    inner: Option<W>,
    control: Arc<StdinControl>,
    /// Tail of the previous write (a marker may straddle two writes).
    carry: Vec<u8>,
    /// The marker was written: close after the next successful flush.
    close_pending: bool,
}

impl<W> ClosableStdin<W> {
    pub fn new(inner: W, control: Arc<StdinControl>) -> Self {
        ClosableStdin { inner: Some(inner), control, carry: Vec::new(), close_pending: false }
    }

    fn saw_marker(&mut self, written: &[u8]) -> bool {
        let guard = self.control.marker.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(marker) = guard.as_deref() else { return false };
        let keep = marker.len().saturating_sub(1);
        let mut found = memchr::memmem::find(written, marker).is_some();
        if !found && !self.carry.is_empty() {
            let mut joined = self.carry.clone();
            joined.extend_from_slice(&written[..written.len().min(keep)]);
            found = memchr::memmem::find(&joined, marker).is_some();
        }
        let mut combined = std::mem::take(&mut self.carry);
        combined.extend_from_slice(&written[written.len().saturating_sub(keep)..]);
        combined.drain(..combined.len().saturating_sub(keep));
        self.carry = combined;
        found
    }

    fn close(&mut self) {
        if self.inner.take().is_some() {
            self.control.release();
            self.control.closed.store(true, std::sync::atomic::Ordering::Release);
            tracing::trace!("closed the agent's stdin");
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ClosableStdin<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            // Closed by the ladder: the agent is going away; drop what follows.
            return Poll::Ready(Ok(buf.len()));
        };
        let res = Pin::new(inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res
            && !this.close_pending
            && this.saw_marker(&buf[..n])
        {
            this.close_pending = true;
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(Ok(())) };
        let res = Pin::new(inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = res
            && this.close_pending
        {
            this.close();
        }
        res
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(Ok(())) };
        let res = Pin::new(inner).poll_shutdown(cx);
        if res.is_ready() {
            // The peer is closing (e.g. it read EOF): drop our end, but the
            // agent sees EOF only when the control releases its duplicate.
            this.inner = None;
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn tap(chunks: &[&[u8]]) -> Option<String> {
        let signal = ProtocolSignal::default();
        let (mut w, r) = tokio::io::duplex(1024);
        let mut tap = StdoutTap::new(r, signal.clone());
        for c in chunks {
            w.write_all(c).await.unwrap();
            let mut buf = vec![0; c.len()];
            tap.read_exact(&mut buf).await.unwrap();
        }
        signal.detail().map(str::to_owned)
    }

    #[tokio::test]
    async fn tap_accepts_json_lines_across_chunks() {
        assert_eq!(tap(&[b"\xEF\xBB\xBF{\"a\":1}\n", b"\r\n  {\"b\"", b":2}\n[1]\n\n", b"{}"]).await, None);
    }

    #[tokio::test]
    async fn tap_reports_a_garbage_line() {
        let detail = tap(&[b"{\"a\":1}\nhello world\n{}\n"]).await.unwrap();
        assert!(detail.contains("\"hello world\""), "{detail}");
        // Garbage at the start of a later chunk.
        let detail = tap(&[b"{\"a\":1}\n", b"oops"]).await.unwrap();
        assert!(detail.contains("oops"), "{detail}");
    }

    #[tokio::test]
    async fn stdin_closes_after_the_flush_following_the_marker() {
        let control = Arc::new(StdinControl::default());
        let (w, mut r) = tokio::io::duplex(4096);
        // (A duplex has no fd to keep alive; the marker logic is what is tested here.)
        let mut stdin = ClosableStdin::new(w, Arc::clone(&control));
        stdin.write_all(b"before\n").await.unwrap();
        stdin.flush().await.unwrap();
        control.close_after("MARK-123");
        stdin.write_all(b"one\n{\"id\":\"MA").await.unwrap();
        stdin.write_all(b"RK-123\"}\n").await.unwrap();
        assert!(!control.is_closed());
        stdin.flush().await.unwrap();
        assert!(control.is_closed());
        stdin.write_all(b"discarded\n").await.unwrap();
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "before\none\n{\"id\":\"MARK-123\"}\n");
    }
}
