//! Draining the agent's stderr: into `tracing`, and into a bounded tail kept for errors.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::task::JoinHandle;

/// How many bytes of the agent's stderr are kept for error reports.
pub const STDERR_TAIL_BYTES: usize = 64 * 1024;

/// Longest stderr line logged as one `tracing` record; longer ones are split.
const MAX_LOG_LINE: usize = 4 * 1024;
/// Read chunk of the drain task.
const READ_CHUNK: usize = 4 * 1024;

/// The last [`STDERR_TAIL_BYTES`] bytes written to a stream. Grows lazily (no
/// up-front allocation), never beyond its limit.
#[derive(Debug)]
pub struct StderrTail {
    limit: usize,
    buf: Mutex<VecDeque<u8>>,
}

impl Default for StderrTail {
    fn default() -> Self {
        Self::with_limit(STDERR_TAIL_BYTES)
    }
}

impl StderrTail {
    /// A tail keeping the last `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        StderrTail { limit, buf: Mutex::new(VecDeque::new()) }
    }

    /// Appends bytes, dropping the oldest beyond the limit.
    pub fn push(&self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.limit)..];
        let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let overflow = (buf.len() + bytes.len()).saturating_sub(self.limit);
        buf.drain(..overflow);
        buf.extend(bytes);
    }

    /// How many bytes are held.
    pub fn len(&self) -> usize {
        self.buf.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tail as text (invalid UTF-8 replaced; a character cut at the start is dropped).
    pub fn snapshot(&self) -> String {
        let buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
        let (a, b) = buf.as_slices();
        let mut bytes = Vec::with_capacity(buf.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        drop(buf);
        // Skip UTF-8 continuation bytes left over from a cut character.
        let start = bytes.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// Spawns the task that reads `stderr` to its end: every chunk goes into `tail`,
/// every line to `tracing` (target `deputy_host::agent_stderr`, level debug).
pub(crate) fn spawn_drain<R>(stderr: R, tail: Arc<StderrTail>, pid: u32) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(drain(stderr, tail, pid))
}

async fn drain<R: AsyncRead + Unpin>(mut stderr: R, tail: Arc<StderrTail>, pid: u32) {
    let mut chunk = [0u8; READ_CHUNK];
    // The current unterminated line, only kept while logging is on.
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match stderr.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(pid, error = %e, "reading the agent's stderr failed");
                break;
            }
        };
        let data = &chunk[..n];
        tail.push(data);
        if tracing::enabled!(target: "deputy_host::agent_stderr", tracing::Level::DEBUG) {
            log_lines(&mut line, data, pid);
        }
    }
    if !line.is_empty() {
        emit(&line, pid);
    }
}

fn log_lines(line: &mut Vec<u8>, mut data: &[u8], pid: u32) {
    while let Some(nl) = memchr::memchr(b'\n', data) {
        if line.is_empty() {
            emit(&data[..nl], pid);
        } else {
            line.extend_from_slice(&data[..nl]);
            emit(line, pid);
            line.clear();
        }
        data = &data[nl + 1..];
    }
    line.extend_from_slice(data);
    while line.len() >= MAX_LOG_LINE {
        emit(&line[..MAX_LOG_LINE], pid);
        line.drain(..MAX_LOG_LINE);
    }
}

fn emit(line: &[u8], pid: u32) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    tracing::debug!(target: "deputy_host::agent_stderr", pid, "{}", String::from_utf8_lossy(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_only() {
        let tail = StderrTail::with_limit(10);
        assert!(tail.is_empty());
        tail.push(b"hello ");
        tail.push(b"world!");
        assert_eq!(tail.snapshot(), "llo world!");
        assert_eq!(tail.len(), 10);
        tail.push(b"0123456789abcdef");
        assert_eq!(tail.snapshot(), "6789abcdef");
    }

    #[test]
    fn tail_drops_a_character_cut_at_the_start() {
        let tail = StderrTail::with_limit(4);
        tail.push("xé€".as_bytes()); // x(1) é(2) €(3): last 4 bytes = é's 2nd byte + €
        assert_eq!(tail.snapshot(), "€");
    }

    #[test]
    fn default_limit_is_64_kib_and_grows_lazily() {
        let tail = StderrTail::default();
        assert_eq!(tail.buf.lock().unwrap().capacity(), 0);
        tail.push(&vec![b'a'; 100 * 1024]);
        tail.push(b"end");
        assert_eq!(tail.len(), STDERR_TAIL_BYTES);
        assert!(tail.snapshot().ends_with("aend"));
    }

    #[tokio::test]
    async fn drain_reads_to_the_end() {
        let (mut w, r) = tokio::io::duplex(64);
        let tail = Arc::new(StderrTail::with_limit(1024));
        let task = spawn_drain(r, Arc::clone(&tail), 1);
        use tokio::io::AsyncWriteExt as _;
        for i in 0..100 {
            w.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        }
        drop(w);
        task.await.unwrap();
        assert!(tail.snapshot().ends_with("line 98\nline 99\n"));
    }
}
