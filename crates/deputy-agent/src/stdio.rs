//! This process's stdin and stdout as the connection's two ends.
//!
//! tokio's `stdin()` and `stdout()` do every read and write on the blocking
//! thread pool: each is a hand-over to a pool thread and back, two futex
//! wake-ups per message and a thread switch on each. Measured with
//! `deputy-bench approvals`, that made a round trip cost four times one
//! through a plain pipe (77 µs against 19 µs): strace counted six futex calls
//! per approval in the agent.
//!
//! A host spawns the agent with pipes, and a pipe can be driven by the
//! runtime's reactor like a socket once it is non-blocking. But `O_NONBLOCK`
//! belongs to the open file description, which fd 0 and 1 may share with
//! other processes or with fd 2 (a shell's `2>&1 |`, a terminal): setting it
//! there would make their writes fail with `EAGAIN`. So each pipe is opened
//! again through `/proc/self/fd/N`, which on Linux gives a new description of
//! the same pipe, and only that one is non-blocking.
//!
//! Anything that is not a pipe (a terminal, a file, a socket), or a system
//! without `/proc`, keeps tokio's blocking-pool stdio: slower, but correct.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tracing::debug;

/// The connection's read end: stdin.
pub(crate) type Input = Box<dyn AsyncRead + Unpin + Send>;
/// The connection's write end: stdout.
pub(crate) type Output = Box<dyn AsyncWrite + Unpin + Send>;

/// Stdin and stdout, each as a reactor-driven pipe where possible. Must be
/// called inside the runtime (registering a pipe needs its reactor).
pub(crate) fn stdio() -> (Input, Output) {
    let input: Input = match pipe::OpenOptions::new().open_receiver("/proc/self/fd/0") {
        Ok(pipe) => Box::new(pipe),
        Err(e) => {
            debug!(error = %e, "stdin is not a pipe that can be reopened; reading it on the blocking pool");
            Box::new(tokio::io::stdin())
        }
    };
    let output: Output = match open_sender("/proc/self/fd/1") {
        Ok(pipe) => Box::new(pipe),
        Err(e) => {
            debug!(error = %e, "stdout is not a pipe that can be reopened; writing it on the blocking pool");
            Box::new(tokio::io::stdout())
        }
    };
    (input, output)
}

fn open_sender(path: &str) -> io::Result<pipe::Sender> {
    // `open_sender` fails with ENXIO if nobody has the pipe open for reading:
    // then the host is gone and the blocking fallback meets the same EPIPE.
    pipe::OpenOptions::new().open_sender(path)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn is_nonblocking(fd: i32) -> bool {
        // SAFETY: F_GETFL on an fd this test owns; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert!(flags >= 0, "fcntl: {}", io::Error::last_os_error());
        flags & libc::O_NONBLOCK != 0
    }

    /// Reopening a pipe through /proc gives a non-blocking description of the
    /// same pipe and leaves the original blocking (what fd 0/1 rely on).
    #[tokio::test(flavor = "current_thread")]
    async fn a_reopened_pipe_is_the_same_pipe_and_leaves_the_original_blocking() {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let read_path = format!("/proc/self/fd/{}", reader.as_raw_fd());
        let write_path = format!("/proc/self/fd/{}", writer.as_raw_fd());
        let mut receiver = pipe::OpenOptions::new().open_receiver(&read_path).expect("reopen the read end");
        let mut sender = open_sender(&write_path).expect("reopen the write end");
        assert!(!is_nonblocking(reader.as_raw_fd()), "the original read end must stay blocking");
        assert!(!is_nonblocking(writer.as_raw_fd()), "the original write end must stay blocking");
        assert!(is_nonblocking(receiver.as_raw_fd()));
        sender.write_all(b"through the reopened end\n").await.expect("write");
        let mut got = vec![0; 25];
        receiver.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"through the reopened end\n");
        // End of input needs every write end closed, the reopened one too.
        drop(sender);
        drop(writer);
        let mut rest = Vec::new();
        receiver.read_to_end(&mut rest).await.expect("read to the end");
        assert!(rest.is_empty());
    }

    /// A regular file is not a pipe: it is refused, so stdio falls back.
    #[tokio::test(flavor = "current_thread")]
    async fn a_file_is_not_reopened_as_a_pipe() {
        let file = tempfile::tempfile().expect("temp file");
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert!(pipe::OpenOptions::new().open_receiver(&path).is_err());
    }
}
