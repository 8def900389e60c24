//! This process's stdin and stdout as the connection's two ends.
//!
//! tokio's `stdin()` and `stdout()` do every read and write on the blocking
//! thread pool: each is a hand-over to a pool thread and back, two futex
//! wake-ups per message and a thread switch on each. Measured with
//! `deputy-bench approvals`, that made a round trip cost four times one
//! through a plain pipe (77 µs against 19 µs): strace counted six futex calls
//! per approval in the agent.
//!
//! Instead, stdin and stdout are driven by the runtime's reactor, like any
//! socket, whenever they are one of the two things a host spawns a child
//! with:
//! - **A pipe** (Rust's and Python's subprocesses, a shell's `|`). A pipe can
//!   only be read without blocking once it is `O_NONBLOCK`, and that flag
//!   belongs to the open file description, which fd 0 and 1 may share with
//!   other processes or with fd 2 (a shell's `2>&1 |`): setting it there
//!   would make their writes fail with `EAGAIN`. So the pipe is opened again
//!   through `/proc/self/fd/N`, which on Linux gives a new description of the
//!   same pipe, and only that one is non-blocking.
//! - **A socket** (Node's `child_process` gives a child socketpairs). A
//!   socket cannot be reopened, but it needs no flag: each `recv` and `send`
//!   is made with `MSG_DONTWAIT`, on a duplicate of the fd registered with the
//!   reactor, and the description stays as it was.
//!
//! Anything else (a terminal, a file), or a system without `/proc`, keeps
//! tokio's blocking-pool stdio: slower, but correct.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::unix::pipe;
use tracing::debug;

/// The connection's read end: stdin.
pub(crate) type Input = Box<dyn AsyncRead + Unpin + Send>;
/// The connection's write end: stdout.
pub(crate) type Output = Box<dyn AsyncWrite + Unpin + Send>;

/// Stdin and stdout, each reactor-driven where possible. Must be called
/// inside the runtime (registering an fd needs its reactor).
pub(crate) fn stdio() -> (Input, Output) {
    let input: Input = match reactor_stdin() {
        Ok((input, kind)) => {
            debug!("stdin is a {kind}: reading it with the reactor");
            input
        }
        Err(e) => {
            debug!(error = %e, "stdin is neither a pipe nor a socket the reactor can drive: reading it on the blocking pool");
            Box::new(tokio::io::stdin())
        }
    };
    let output: Output = match reactor_stdout() {
        Ok((output, kind)) => {
            debug!("stdout is a {kind}: writing it with the reactor");
            output
        }
        Err(e) => {
            debug!(error = %e, "stdout is neither a pipe nor a socket the reactor can drive: writing it on the blocking pool");
            Box::new(tokio::io::stdout())
        }
    };
    (input, output)
}

/// Stdin driven by the reactor, and what it is (`socket` or `pipe`).
fn reactor_stdin() -> io::Result<(Input, &'static str)> {
    let stdin = io::stdin();
    if is_socket(stdin.as_fd()) {
        Ok((Box::new(Socket::dup_of(stdin.as_fd(), Interest::READABLE)?), "socket"))
    } else {
        Ok((Box::new(pipe::OpenOptions::new().open_receiver("/proc/self/fd/0")?), "pipe"))
    }
}

/// Stdout driven by the reactor, and what it is (`socket` or `pipe`).
fn reactor_stdout() -> io::Result<(Output, &'static str)> {
    let stdout = io::stdout();
    if is_socket(stdout.as_fd()) {
        Ok((Box::new(Socket::dup_of(stdout.as_fd(), Interest::WRITABLE)?), "socket"))
    } else {
        Ok((Box::new(open_sender("/proc/self/fd/1")?), "pipe"))
    }
}

fn open_sender(path: &str) -> io::Result<pipe::Sender> {
    // `open_sender` fails with ENXIO if nobody has the pipe open for reading:
    // then the host is gone and the blocking fallback meets the same EPIPE.
    pipe::OpenOptions::new().open_sender(path)
}

/// Whether `fd` is a stream socket (a datagram socket would cut lines).
fn is_socket(fd: BorrowedFd<'_>) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `kind`; the fd is
    // borrowed, so open. It fails with ENOTSOCK for anything not a socket.
    let ok = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut kind).cast(), &mut len)
    } == 0;
    ok && kind == libc::SOCK_STREAM
}

/// A stream socket end, read and written with `MSG_DONTWAIT` so that its
/// description's flags are never changed.
struct Socket {
    fd: AsyncFd<OwnedFd>,
}

impl Socket {
    /// A duplicate of `fd`, registered with the reactor for `interest`
    /// (edge-triggered, as tokio registers everything; `try_io` clears the
    /// readiness when a call finds nothing to do).
    fn dup_of(fd: BorrowedFd<'_>, interest: Interest) -> io::Result<Socket> {
        let owned = fd.try_clone_to_owned()?;
        // SAFETY: `owned` is an open fd that the `AsyncFd` owns, so it stays
        // open and refers to the same description until the `AsyncFd` drops.
        let fd = unsafe { AsyncFd::register_with_interest(owned, interest) }.map_err(io::Error::from)?;
        Ok(Socket { fd })
    }
}

/// Makes a `recv`/`send` call, again if a signal interrupted it.
fn retrying(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            // SAFETY: recv writes only initialised bytes, and at most `len`.
            let unfilled = unsafe { buf.unfilled_mut() };
            let read = guard.try_io(|fd| {
                // SAFETY: the pointer and length describe `unfilled`, which lives across the call.
                retrying(|| unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        unfilled.len(),
                        libc::MSG_DONTWAIT,
                    )
                })
            });
            match read {
                Ok(Ok(n)) => {
                    // SAFETY: recv initialised the first `n` bytes of `unfilled`.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            // MSG_NOSIGNAL: a reader that went away is an EPIPE error, not a signal.
            let written = guard.try_io(|fd| {
                // SAFETY: the pointer and length describe `data`, which lives across the call.
                retrying(|| unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        data.as_ptr().cast(),
                        data.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                })
            });
            match written {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Dropping the duplicate closes nothing the peer sees (fd 1 stays
        // open), exactly like tokio's stdout: the connection ends at exit.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
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

    /// A socket is read and written through a duplicate with MSG_DONTWAIT:
    /// its flags stay blocking, a write that finds the buffer full waits for
    /// room instead of failing, and everything arrives in order.
    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_is_driven_without_changing_its_flags_and_waits_for_room() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        assert!(is_socket(ours.as_fd()));
        let mut socket = Socket::dup_of(ours.as_fd(), Interest::WRITABLE).expect("register the socket");
        assert!(!is_nonblocking(ours.as_raw_fd()), "the description must stay blocking");
        // Far more than the socket buffer: the writer must wait for the reader.
        let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut &theirs, &mut got).expect("read");
            got
        });
        socket.write_all(&data).await.expect("write through the full buffer");
        drop(socket);
        drop(ours);
        assert!(reader.join().unwrap() == expected, "bytes lost or reordered");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_socket_reads_what_was_sent_then_end_of_input() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let mut socket = Socket::dup_of(ours.as_fd(), Interest::READABLE).expect("register the socket");
        let writer = std::thread::spawn(move || {
            std::io::Write::write_all(&mut &theirs, b"one line\n").expect("write");
            theirs.shutdown(std::net::Shutdown::Write).expect("shutdown");
        });
        let mut got = Vec::new();
        socket.read_to_end(&mut got).await.expect("read to the end");
        writer.join().unwrap();
        assert_eq!(got, b"one line\n");
        assert!(!is_nonblocking(ours.as_raw_fd()));
    }

    #[test]
    fn only_stream_sockets_are_sockets_here() {
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().expect("datagram pair");
        assert!(!is_socket(a.as_fd()), "a datagram socket would cut lines");
        let (r, _w) = std::io::pipe().expect("pipe");
        assert!(!is_socket(r.as_fd()));
    }

    /// A regular file is not a pipe: it is refused, so stdio falls back.
    #[tokio::test(flavor = "current_thread")]
    async fn a_file_is_not_reopened_as_a_pipe() {
        let file = tempfile::tempfile().expect("temp file");
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert!(pipe::OpenOptions::new().open_receiver(&path).is_err());
    }
}
