//! The writer task: the one place that writes to the peer.
//!
//! Everything goes through one bounded queue ([`PeerConfig::outgoing_capacity`](crate::PeerConfig::outgoing_capacity)
//! messages) in order; the writer takes up to [`BATCH`] items per wake-up,
//! writes them through a `BufWriter` and flushes when the queue is empty (or
//! someone waits for a flush). Senders that find the queue full wait: that is
//! how a peer that stops reading slows this side down.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

use crate::peer::{CAUSE_WRITE_ERROR, Inner, Out};

/// How many queued items the writer takes per wake-up.
const BATCH: usize = 128;
/// The writer's buffer size.
const WRITE_BUFFER: usize = 64 * 1024;

/// Marks the write side done when the writer stops, however it stops; if it
/// did not finish cleanly, pending requests fail and nothing more is taken.
struct WriterGuard<'a> {
    inner: &'a Inner,
    clean: bool,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if !self.clean {
            self.inner.write_failed.store(true, Ordering::Release);
            self.inner.fail_pending(|| "the writer task stopped unexpectedly".to_owned());
        }
        self.inner.close_write(|| "the write side is closed".to_owned());
        self.inner.write_done.cancel();
    }
}

/// Writes a batch of queued items; flush requests are collected in `waiters`.
async fn write_batch<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    batch: &mut Vec<Out>,
    waiters: &mut Vec<oneshot::Sender<()>>,
) -> io::Result<()> {
    for item in batch.drain(..) {
        match item {
            Out::Line(line) => {
                trace!(line = %String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line)), "->");
                out.write_all(&line).await?;
            }
            Out::Flush(waiter) => waiters.push(waiter),
        }
    }
    Ok(())
}

pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Out>,
    inner: Arc<Inner>,
) -> io::Result<()> {
    // Declared first, dropped last: `write_done` fires after the writer itself
    // (e.g. a child's stdin pipe) has been dropped, i.e. closed.
    let mut guard = WriterGuard { inner: &inner, clean: false };
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, writer);
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let result: io::Result<()> = async {
        loop {
            let n = tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, BATCH) => n,
                () = inner.write_close.cancelled() => 0,
            };
            if n == 0 {
                // Asked to close, or every handle is gone.
                break;
            }
            write_batch(&mut out, &mut batch, &mut waiters).await?;
            if rx.is_empty() || !waiters.is_empty() {
                out.flush().await?;
                for waiter in waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }
        // Closing: refuse new messages, write what is queued, flush, shut down.
        rx.close();
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            write_batch(&mut out, &mut batch, &mut waiters).await?;
        }
        out.flush().await?;
        for waiter in waiters.drain(..) {
            let _ = waiter.send(());
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            if let Err(e) = out.shutdown().await {
                debug!(error = %e, "shutting down the write side failed");
            }
            drop(out);
            debug!("the write side is closed");
            guard.clean = true;
            Ok(())
        }
        Err(e) => {
            debug!(error = %e, "write error");
            rx.close();
            inner.set_cause(CAUSE_WRITE_ERROR, || format!("write error: {e}"));
            inner.close_write(|| format!("write error: {e}"));
            inner.fail_pending(|| format!("write error: {e}"));
            Err(e)
        }
    }
}
