//! The handle ([`Peer`]), the shared state, the pending map and the
//! connection's tasks ([`Connection`]). The tasks themselves live in
//! `reader.rs` (with the flow-control rules), `writer.rs` and `dispatcher.rs`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{PeerConfig, RequestOptions};
use crate::dispatcher::dispatch_loop;
use crate::error::{ErrorObject, RpcError};
use crate::id::Id;
use crate::message::{Payload, encode_notification, encode_request};
use crate::reader::ReaderState;
use crate::router::Router;
use crate::writer::write_loop;

/// Why a connection ended, from [`Connection::wait`].
///
/// It is the **first** of these to happen: the read side ending (EOF, read
/// error), a write error, a local [`Peer::close`] (or [`Connection::abort`]).
/// Closing only the write side ([`Peer::close_write`], or dropping every
/// [`Peer`] handle) is not a reason by itself: the connection ends when the
/// read side does.
#[derive(Debug)]
pub enum CloseReason {
    /// The peer closed its end (EOF on a line boundary).
    Eof,
    /// The peer closed its end in the middle of a line; those bytes were discarded.
    EofWithPartialLine {
        /// Length of the unterminated line.
        bytes: usize,
    },
    /// Reading failed.
    ReadError(io::Error),
    /// Writing failed (for example the peer stopped reading and closed its end).
    WriteError(io::Error),
    /// Closed locally with [`Peer::close`].
    Closed,
    /// Stopped with [`Connection::abort`] (or a task ended abnormally).
    Aborted,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Eof => f.write_str("the peer closed the connection (EOF)"),
            CloseReason::EofWithPartialLine { bytes } => {
                write!(f, "the peer closed the connection (EOF) after an unterminated line of {bytes} bytes")
            }
            CloseReason::ReadError(e) => write!(f, "read error: {e}"),
            CloseReason::WriteError(e) => write!(f, "write error: {e}"),
            CloseReason::Closed => f.write_str("closed locally"),
            CloseReason::Aborted => f.write_str("connection aborted"),
        }
    }
}

pub(crate) enum OwnedPayload {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
}

impl From<Payload<'_>> for OwnedPayload {
    fn from(payload: Payload<'_>) -> Self {
        match payload {
            Payload::Result(r) => OwnedPayload::Result(r.to_owned()),
            Payload::Error(e) => OwnedPayload::Error(e.to_owned()),
        }
    }
}

/// What the writer is asked to do, in queue order.
pub(crate) enum Out {
    /// Write this line (terminator included).
    Line(Vec<u8>),
    /// Answer once everything queued before has been written and flushed.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) map: HashMap<i64, oneshot::Sender<OwnedPayload>>,
    /// Set when no answer can come any more (read side ended, write error,
    /// local close): new requests fail at once with this reason.
    pub(crate) closed: Option<String>,
}

/// The first thing that ended the connection (see [`CloseReason`]).
pub(crate) const CAUSE_NONE: u8 = 0;
pub(crate) const CAUSE_LOCAL: u8 = 1;
pub(crate) const CAUSE_WRITE_ERROR: u8 = 2;
pub(crate) const CAUSE_READ_END: u8 = 3;

pub(crate) struct Inner {
    pub(crate) next_id: AtomicI64,
    pub(crate) pending: Mutex<Pending>,
    /// Incoming requests in flight: id → (registration number, token).
    pub(crate) incoming: Mutex<HashMap<Id, (u64, CancellationToken)>>,
    pub(crate) incoming_seq: AtomicU64,
    /// Fires on [`Peer::close`] or abort: the reader and the dispatcher stop at
    /// once, and incoming handlers are cancelled (parent of their tokens).
    pub(crate) local_close: CancellationToken,
    /// Fires when the write side is asked to close (close, close_write, abort):
    /// the writer writes what is queued, flushes and shuts down.
    pub(crate) write_close: CancellationToken,
    /// Set (before `write_close` fires) when the write side takes no new messages.
    pub(crate) write_refused: AtomicBool,
    /// Why the write side takes no new messages.
    pub(crate) write_reason: OnceLock<String>,
    /// Fires once the reader has stopped (for whatever reason).
    pub(crate) read_done: CancellationToken,
    /// Fires once the writer has stopped (shut down, failed or aborted).
    pub(crate) write_done: CancellationToken,
    /// The writer stopped without writing everything queued (error, abort, panic).
    pub(crate) write_failed: AtomicBool,
    pub(crate) aborted: AtomicBool,
    /// One of the `CAUSE_*` constants: the first thing that ended the connection.
    pub(crate) cause: AtomicU8,
    pub(crate) cause_text: OnceLock<String>,
    /// `$/cancelRequest` notifications from destructors that could not be
    /// queued at once and were handed to a task.
    pub(crate) overflow: AtomicUsize,
    /// One permit per incoming request in flight ([`PeerConfig::max_incoming_requests`]).
    pub(crate) incoming_permits: Arc<Semaphore>,
    /// [`PeerConfig::max_outgoing_bytes`], `usize::MAX` for none.
    pub(crate) max_outgoing: AtomicUsize,
    pub(crate) config: PeerConfig,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Records the first cause of the end of the connection.
    pub(crate) fn set_cause(&self, cause: u8, text: impl FnOnce() -> String) {
        if self.cause.compare_exchange(CAUSE_NONE, cause, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let text = text();
            debug!(reason = %text, "the connection is ending");
            let _ = self.cause_text.set(text);
        }
    }

    /// Fails every pending outgoing request, and every later one, with `reason`
    /// (the first reason wins).
    pub(crate) fn fail_pending(&self, reason: impl FnOnce() -> String) {
        let failed = {
            let mut pending = lock(&self.pending);
            if pending.closed.is_none() {
                pending.closed = Some(reason());
            }
            std::mem::take(&mut pending.map)
        };
        if !failed.is_empty() {
            debug!(count = failed.len(), "failing pending requests: no answer can come any more");
        }
        drop(failed);
    }

    /// The write side takes no new messages from now on; the writer is told to
    /// write what is queued, flush and shut down.
    pub(crate) fn close_write(&self, reason: impl FnOnce() -> String) {
        if !self.write_refused.load(Ordering::Acquire) {
            let _ = self.write_reason.set(reason());
            self.write_refused.store(true, Ordering::Release);
        }
        self.write_close.cancel();
    }

    /// A local full close (also used by abort).
    pub(crate) fn close_local(&self, reason: &'static str) {
        self.set_cause(CAUSE_LOCAL, || reason.to_owned());
        self.local_close.cancel();
        self.fail_pending(|| reason.to_owned());
        self.close_write(|| reason.to_owned());
    }

    /// The ids of the outgoing requests waiting for an answer.
    pub(crate) fn pending_ids(&self) -> Vec<i64> {
        lock(&self.pending).map.keys().copied().collect()
    }

    /// The read side ended: no answer can come any more.
    pub(crate) fn read_ended(&self, reason: impl Fn() -> String) {
        self.set_cause(CAUSE_READ_END, &reason);
        self.fail_pending(&reason);
    }

    pub(crate) fn pending_closed_reason(&self) -> Option<String> {
        lock(&self.pending).closed.clone()
    }

    /// The error of a request that cannot be sent or answered.
    pub(crate) fn request_error(&self) -> RpcError {
        let reason = self
            .pending_closed_reason()
            .or_else(|| self.write_reason.get().cloned())
            .unwrap_or_else(|| "connection closed".to_owned());
        RpcError::ConnectionClosed { reason }
    }

    /// The error of a message that cannot be written.
    pub(crate) fn write_error(&self) -> RpcError {
        let reason = self
            .write_reason
            .get()
            .cloned()
            .or_else(|| self.pending_closed_reason())
            .unwrap_or_else(|| "the write side is closed".to_owned());
        RpcError::ConnectionClosed { reason }
    }

    /// Fails a message whose line (terminator excluded) exceeds the limit.
    pub(crate) fn check_outgoing_size(&self, method: &str, line: &[u8]) -> Result<(), RpcError> {
        let limit = self.max_outgoing.load(Ordering::Acquire);
        let bytes = line.len().saturating_sub(1);
        if bytes > limit {
            warn!(method, bytes, limit, "not sending a message over the peer's line limit");
            return Err(RpcError::MessageTooLarge { method: method.to_owned(), bytes, limit });
        }
        Ok(())
    }

    pub(crate) fn register_incoming(&self, id: &Id) -> (u64, CancellationToken) {
        let token = self.local_close.child_token();
        let seq = self.incoming_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.incoming).insert(id.clone(), (seq, token.clone()));
        (seq, token)
    }

    pub(crate) fn unregister_incoming(&self, id: &Id, seq: u64) {
        let mut map = lock(&self.incoming);
        if map.get(id).is_some_and(|(s, _)| *s == seq) {
            map.remove(id);
        }
    }

    pub(crate) fn cancel_incoming(&self, id: &Id) -> bool {
        match lock(&self.incoming).get(id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    pub(crate) fn deliver_response(&self, id: Option<Id>, payload: OwnedPayload) {
        let sender = match &id {
            Some(Id::Integer(n)) => lock(&self.pending).map.remove(n),
            _ => None,
        };
        match sender {
            Some(tx) => {
                // The caller may have gone in the meantime: nothing to do then.
                let _ = tx.send(payload);
            }
            None => match (id, payload) {
                (None, OwnedPayload::Error(e)) => {
                    warn!(error = e.get(), "the peer reported an error for a message it could not read")
                }
                (id, _) => debug!(
                    id = id.as_ref().map(ToString::to_string),
                    "ignoring a response with an unknown id (late, cancelled, or not ours)"
                ),
            },
        }
    }
}

/// What every [`Peer`] clone shares. The writer's queue stays open as long as
/// one of these lives (each holds a sender): dropping the last one lets the
/// writer finish.
pub(crate) struct Handle {
    pub(crate) inner: Arc<Inner>,
    pub(crate) tx: mpsc::Sender<Out>,
}

/// A handle to one connection: send requests and notifications, flush, close
/// either side. Cheap to clone; all clones drive the same connection.
///
/// The write side stays open while any clone lives (including the ones the
/// reader holds while it runs and the ones handed to request handlers through
/// [`RequestContext::peer`](crate::RequestContext::peer)); when the last one
/// is dropped, the writer writes what is queued, flushes and shuts its side
/// down.
#[derive(Clone)]
pub struct Peer {
    pub(crate) handle: Arc<Handle>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("read_closed", &self.is_read_closed())
            .field("write_closed", &self.is_write_closed())
            .finish_non_exhaustive()
    }
}

/// The tasks of one connection. Not `Clone`: one owner waits for the end.
pub struct Connection {
    reader: JoinHandle<ReaderEnd>,
    writer: JoinHandle<io::Result<()>>,
    dispatcher: JoinHandle<()>,
    inner: Arc<Inner>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("read_closed", &self.inner.read_done.is_cancelled())
            .field("write_closed", &self.inner.write_done.is_cancelled())
            .finish_non_exhaustive()
    }
}

pub(crate) enum ReaderEnd {
    Eof,
    Partial(usize),
    Error(io::Error),
    Stopped,
}

impl Connection {
    /// Resolves when both directions are done and the tasks have finished:
    /// the reader stopped (EOF, read error, [`Peer::close`]) and the
    /// dispatcher delivered the notifications read before (after a local
    /// close it drops them instead), and the writer wrote what was queued,
    /// flushed and shut its side down (after [`Peer::close`],
    /// [`Peer::close_write`], a write error, or once every [`Peer`] handle is
    /// gone). Says why the connection ended ([`CloseReason`]: the first cause).
    ///
    /// After EOF the write side stays open: call [`Peer::close`] (or drop
    /// every handle) or this does not resolve.
    pub async fn wait(self) -> CloseReason {
        let reader = self.reader.await;
        let writer = self.writer.await;
        let _ = self.dispatcher.await;
        if self.inner.aborted.load(Ordering::Acquire) {
            return CloseReason::Aborted;
        }
        match self.inner.cause.load(Ordering::Acquire) {
            CAUSE_LOCAL => CloseReason::Closed,
            CAUSE_WRITE_ERROR => match writer {
                Ok(Err(e)) => CloseReason::WriteError(e),
                _ => CloseReason::Aborted,
            },
            _ => match reader {
                Ok(ReaderEnd::Eof) => CloseReason::Eof,
                Ok(ReaderEnd::Partial(bytes)) => CloseReason::EofWithPartialLine { bytes },
                Ok(ReaderEnd::Error(e)) => CloseReason::ReadError(e),
                Ok(ReaderEnd::Stopped) | Err(_) => CloseReason::Aborted,
            },
        }
    }

    /// Hard-stops the connection's tasks now, without flushing (for example when a
    /// grandchild process keeps the pipe open). Pending requests fail and incoming
    /// handlers are cancelled as with [`Peer::close`].
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::Release);
        self.inner.close_local("connection aborted");
        self.reader.abort();
        self.writer.abort();
        self.dispatcher.abort();
    }
}

/// Removes a pending outgoing request when the call ends without an answer
/// (dropped, timed out, cancelled), and tells the peer if the request was sent.
struct PendingGuard<'a> {
    peer: &'a Peer,
    id: i64,
    sent: bool,
    send_cancel: bool,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let inner = &self.peer.handle.inner;
        let removed = lock(&inner.pending).map.remove(&self.id).is_some();
        if removed && self.sent && self.send_cancel && !inner.write_refused.load(Ordering::Acquire) {
            let style = inner.config.cancel_style;
            debug!(
                id = self.id,
                method = style.method(),
                "request abandoned: sending the cancel notification"
            );
            if let Ok(line) = encode_notification(style.method(), &style.params(self.id.into())) {
                self.peer.send_nonblocking(line);
            }
        }
    }
}

impl Peer {
    /// Starts serving a connection on the current tokio runtime: spawns the reader,
    /// the writer and the notification dispatcher.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn serve<R, W>(reader: R, writer: W, router: Router, config: PeerConfig) -> (Peer, Connection)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let mut config = config;
        config.outgoing_capacity = config.outgoing_capacity.max(1);
        config.notification_capacity = config.notification_capacity.max(1);
        config.max_incoming_requests = config.max_incoming_requests.max(1);
        let (out_tx, out_rx) = mpsc::channel(config.outgoing_capacity);
        // Notifications travel in batches (one per read), bounded by permits.
        let (notif_tx, notif_rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(config.notification_capacity));
        let inner = Arc::new(Inner {
            next_id: AtomicI64::new(1),
            pending: Mutex::new(Pending::default()),
            incoming: Mutex::new(HashMap::new()),
            incoming_seq: AtomicU64::new(0),
            local_close: CancellationToken::new(),
            write_close: CancellationToken::new(),
            write_refused: AtomicBool::new(false),
            write_reason: OnceLock::new(),
            read_done: CancellationToken::new(),
            write_done: CancellationToken::new(),
            write_failed: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            cause: AtomicU8::new(CAUSE_NONE),
            cause_text: OnceLock::new(),
            overflow: AtomicUsize::new(0),
            incoming_permits: Arc::new(Semaphore::new(config.max_incoming_requests)),
            max_outgoing: AtomicUsize::new(config.max_outgoing_bytes.unwrap_or(usize::MAX)),
            config,
        });
        let peer = Peer { handle: Arc::new(Handle { inner: Arc::clone(&inner), tx: out_tx }) };
        let mut router = router;
        let mut notifications = HashMap::new();
        let mut runners = Vec::new();
        for (method, handler) in std::mem::take(&mut router.notifications) {
            notifications.insert(method, (handler.decode, runners.len()));
            runners.push((method, handler.run));
        }
        let batch_end = router.batch_end.take();
        let lines = router.lines.take();
        let state = ReaderState::new(
            Arc::clone(&inner),
            peer.clone(),
            router,
            notifications,
            lines.is_some(),
            notif_tx,
            Arc::clone(&permits),
        );
        let reader = tokio::spawn(state.run(reader));
        let writer = tokio::spawn(write_loop(writer, out_rx, Arc::clone(&inner)));
        let dispatcher =
            tokio::spawn(dispatch_loop(notif_rx, runners, lines, batch_end, permits, Arc::clone(&inner)));
        (peer, Connection { reader, writer, dispatcher, inner })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Queues `line` without waiting, where waiting is impossible: the
    /// `$/cancelRequest` of an abandoned call, sent from a destructor. When the
    /// queue is full the line is handed to a task, at most `outgoing_capacity`
    /// of them at a time; past that it is dropped with a warning (a cancel is
    /// advisory: the answer it would have stopped is ignored when it comes).
    /// Answers never go this way: they wait for room (see `reader.rs`).
    pub(crate) fn send_nonblocking(&self, line: Vec<u8>) {
        let inner = self.inner();
        match self.handle.tx.try_send(Out::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(out)) => {
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    warn!("outgoing queue full and no runtime: dropping a message");
                    return;
                };
                if inner.overflow.fetch_add(1, Ordering::AcqRel) >= inner.config.outgoing_capacity {
                    inner.overflow.fetch_sub(1, Ordering::AcqRel);
                    if let Out::Line(line) = &out {
                        warn!(
                            line = %String::from_utf8_lossy(line).trim_end(),
                            "outgoing queue full: dropping a message"
                        );
                    }
                    return;
                }
                let peer = self.clone();
                handle.spawn(async move {
                    let _ = peer.handle.tx.send(out).await;
                    peer.inner().overflow.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }

    /// Calls `method` and decodes its result, with the default options (the peer's
    /// default timeout, if any). Params are serialized before this returns.
    pub fn request<P, R>(
        &self,
        method: &str,
        params: P,
    ) -> impl Future<Output = Result<R, RpcError>> + Send + 'static + use<P, R>
    where
        P: Serialize,
        R: DeserializeOwned + 'static,
    {
        self.request_with(method, params, RequestOptions::default())
    }

    /// Calls `method` with per-call options. Params are serialized before this
    /// returns; the returned future owns everything it needs (`'static`).
    ///
    /// If the call is dropped, its token fires, or it times out before the answer
    /// arrives, the pending entry is removed and, if the request had been queued
    /// and `send_cancel_on_drop` is on, `$/cancelRequest {"id": <id>}` is sent.
    ///
    /// Fails at once with [`RpcError::MessageTooLarge`] (nothing is written)
    /// when the line would exceed [`max_outgoing_bytes`](Self::max_outgoing_bytes).
    /// Fails at once with [`RpcError::ConnectionClosed`] when no answer can
    /// come any more (the read side ended, a write error, [`close`](Self::close))
    /// or the request cannot be sent ([`close_write`](Self::close_write)); a
    /// call waiting for its answer fails when the read side ends.
    pub fn request_with<P, R>(
        &self,
        method: &str,
        params: P,
        opts: RequestOptions,
    ) -> impl Future<Output = Result<R, RpcError>> + Send + 'static + use<P, R>
    where
        P: Serialize,
        R: DeserializeOwned + 'static,
    {
        let peer = self.clone();
        let id = peer.inner().next_id.fetch_add(1, Ordering::Relaxed);
        let encoded = encode_request(id, method, &params);
        let method = method.to_owned();
        let timeout = opts.timeout.or(peer.inner().config.default_request_timeout);
        let send_cancel = opts.send_cancel_on_drop.unwrap_or(peer.inner().config.send_cancel_on_drop);
        let cancel = opts.cancel;
        async move {
            let line = encoded.map_err(RpcError::Encode)?;
            let inner = peer.inner();
            inner.check_outgoing_size(&method, &line)?;
            let call = async {
                let (tx, rx) = oneshot::channel();
                let mut guard = PendingGuard { peer: &peer, id, sent: false, send_cancel, armed: false };
                {
                    let mut pending = lock(&inner.pending);
                    if let Some(reason) = &pending.closed {
                        return Err(RpcError::ConnectionClosed { reason: reason.clone() });
                    }
                    if inner.write_refused.load(Ordering::Acquire) {
                        drop(pending);
                        return Err(inner.write_error());
                    }
                    pending.map.insert(id, tx);
                }
                guard.armed = true;
                peer.handle.tx.send(Out::Line(line)).await.map_err(|_| inner.write_error())?;
                guard.sent = true;
                let payload = rx.await.map_err(|_| inner.request_error())?;
                guard.armed = false;
                Ok(payload)
            };
            let timed = async {
                match timeout {
                    Some(limit) => {
                        tokio::time::timeout(limit, call).await.unwrap_or(Err(RpcError::Timeout(limit)))
                    }
                    None => call.await,
                }
            };
            let payload = match &cancel {
                Some(token) => tokio::select! {
                    biased;
                    r = timed => r,
                    () = token.cancelled() => Err(RpcError::Cancelled),
                },
                None => timed.await,
            }?;
            match payload {
                OwnedPayload::Result(raw) => {
                    serde_json::from_str(raw.get()).map_err(|source| RpcError::Decode { method, source })
                }
                OwnedPayload::Error(raw) => match serde_json::from_str::<ErrorObject>(raw.get()) {
                    Ok(e) => Err(RpcError::Remote(e)),
                    Err(source) => Err(RpcError::Decode { method, source }),
                },
            }
        }
    }

    /// Sends a notification. Params are serialized before this returns; the
    /// future waits for room in the outgoing queue (backpressure). It works
    /// after the read side ended (half-close) and fails with
    /// [`RpcError::ConnectionClosed`] once the write side is closed (or closing),
    /// and with [`RpcError::MessageTooLarge`] (nothing written) when the line
    /// would exceed [`max_outgoing_bytes`](Self::max_outgoing_bytes).
    pub fn notify<P: Serialize>(
        &self,
        method: &str,
        params: P,
    ) -> impl Future<Output = Result<(), RpcError>> + Send + 'static + use<P> {
        let peer = self.clone();
        let encoded = encode_notification(method, &params);
        let method = method.to_owned();
        async move {
            let line = encoded.map_err(RpcError::Encode)?;
            let inner = peer.inner();
            inner.check_outgoing_size(&method, &line)?;
            if inner.write_refused.load(Ordering::Acquire) {
                return Err(inner.write_error());
            }
            peer.handle.tx.send(Out::Line(line)).await.map_err(|_| inner.write_error())
        }
    }

    /// Line mode ([`Router::lines`](crate::Router::lines)): queues `line`
    /// (one JSON value; the newline is added) after everything queued
    /// before, waiting for room (backpressure). Fails like
    /// [`notify`](Self::notify): once the write side is closed, or with
    /// [`RpcError::MessageTooLarge`] over the peer's limit; a line that
    /// holds a line break is refused too ([`RpcError::LineBreak`]), as the
    /// peer would read it as two.
    pub fn send_line(
        &self,
        line: impl Into<String>,
    ) -> impl Future<Output = Result<(), RpcError>> + Send + 'static {
        let peer = self.clone();
        let mut line = line.into().into_bytes();
        async move {
            if line.iter().any(|&b| b == b'\n' || b == b'\r') {
                return Err(RpcError::LineBreak);
            }
            line.push(b'\n');
            let inner = peer.inner();
            inner.check_outgoing_size("(line)", &line)?;
            if inner.write_refused.load(Ordering::Acquire) {
                return Err(inner.write_error());
            }
            peer.handle.tx.send(Out::Line(line)).await.map_err(|_| inner.write_error())
        }
    }

    /// Resolves once everything queued before the call (by any clone) has been
    /// written and flushed. Fails with [`RpcError::ConnectionClosed`] if the
    /// writer stopped without writing it (write error, abort). After a clean
    /// [`close`](Self::close) or [`close_write`](Self::close_write) it resolves
    /// once the writer has written and flushed everything and shut down.
    pub fn flush(&self) -> impl Future<Output = Result<(), RpcError>> + Send + 'static {
        let peer = self.clone();
        async move {
            let inner = peer.inner();
            let (tx, rx) = oneshot::channel();
            if peer.handle.tx.send(Out::Flush(tx)).await.is_ok() && rx.await.is_ok() {
                return Ok(());
            }
            // The writer is closing or gone: it ends by flushing everything, unless it failed.
            inner.write_done.cancelled().await;
            if inner.write_failed.load(Ordering::Acquire) { Err(inner.write_error()) } else { Ok(()) }
        }
    }

    /// Whether the read side has ended (EOF, read error, [`close`](Self::close), abort).
    pub fn is_read_closed(&self) -> bool {
        self.inner().read_done.is_cancelled()
    }

    /// Resolves once the read side has ended: EOF, a read error,
    /// [`close`](Self::close) or abort. Nothing more will be read; pending
    /// outgoing requests have failed; the write side may still be open.
    pub async fn read_closed(&self) {
        self.inner().read_done.cancelled().await
    }

    /// Whether the writer has stopped (see [`write_closed`](Self::write_closed)).
    pub fn is_write_closed(&self) -> bool {
        self.inner().write_done.is_cancelled()
    }

    /// Resolves once the writer has stopped: it wrote what was queued, flushed
    /// and shut its side down (after [`close`](Self::close),
    /// [`close_write`](Self::close_write), or once every handle was dropped),
    /// or it failed (write error) or was aborted.
    pub async fn write_closed(&self) {
        self.inner().write_done.cancelled().await
    }

    /// Whether both sides are done ([`is_read_closed`](Self::is_read_closed)
    /// and [`is_write_closed`](Self::is_write_closed)).
    pub fn is_closed(&self) -> bool {
        self.is_read_closed() && self.is_write_closed()
    }

    /// Resolves once both sides are done (see [`read_closed`](Self::read_closed)
    /// and [`write_closed`](Self::write_closed)).
    pub async fn closed(&self) {
        self.read_closed().await;
        self.write_closed().await;
    }

    /// Sets the longest line this side may write (terminator excluded): the
    /// limit the other side announced. `None` lifts it. Applies to every
    /// message queued from now on (see [`PeerConfig::max_outgoing_bytes`]).
    pub fn set_max_outgoing_bytes(&self, limit: Option<usize>) {
        self.inner().max_outgoing.store(limit.unwrap_or(usize::MAX), Ordering::Release);
    }

    /// The longest line this side may write, if a limit is set.
    pub fn max_outgoing_bytes(&self) -> Option<usize> {
        match self.inner().max_outgoing.load(Ordering::Acquire) {
            usize::MAX => None,
            limit => Some(limit),
        }
    }

    /// How many outgoing requests are waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        lock(&self.inner().pending).map.len()
    }

    /// How many incoming requests are being handled.
    pub fn incoming_requests(&self) -> usize {
        lock(&self.inner().incoming).len()
    }

    /// Why the connection is ending (the first cause, as in [`CloseReason`]),
    /// once the read side has ended, a write failed or it was closed locally.
    pub fn close_reason(&self) -> Option<String> {
        self.inner().cause_text.get().cloned()
    }

    /// Closes the whole connection: stops reading, cancels every incoming
    /// handler (their answers are not sent), fails every pending outgoing
    /// request with [`RpcError::ConnectionClosed`], drops queued notifications
    /// not yet delivered, lets the writer write and flush what is already
    /// queued and then shuts the write side down, so the peer sees EOF.
    /// Idempotent.
    pub fn close(&self) {
        self.inner().close_local("closed locally");
    }

    /// Closes the write side only (a half-close): new messages are refused,
    /// the writer writes and flushes what is queued, then shuts its side down
    /// so the peer sees EOF. Reading goes on: responses to pending requests,
    /// notifications and requests still arrive (answers to the latter can no
    /// longer be sent). Idempotent.
    pub fn close_write(&self) {
        self.inner().close_write(|| "the write side was closed locally".to_owned());
    }
}
