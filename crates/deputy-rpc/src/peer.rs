//! The peer: reader task, writer task, notification dispatcher, pending map.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufWriter};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, trace, warn};

use crate::CANCEL_REQUEST_METHOD;
use crate::error::{ErrorObject, RpcError};
use crate::framing::{Frame, LineFramer};
use crate::id::Id;
use crate::message::{
    Incoming, Message, Payload, classify, encode_batch, encode_error, encode_notification, encode_request,
    encode_result,
};
use crate::router::{BatchEndFn, BoxFuture, NotificationFn, RequestContext, Router};

/// Default for [`PeerConfig::max_line_bytes`]: 16 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Longest [`InvalidInput::excerpt`], in bytes.
pub const INVALID_EXCERPT_BYTES: usize = 200;

/// How many queued items the writer and the dispatcher take per wakeup.
const BATCH: usize = 128;
/// Notification permits are taken and given back in groups of this size.
const CREDIT_GROUP: usize = 32;
/// The writer's buffer size.
const WRITE_BUFFER: usize = 64 * 1024;

/// The hook called for every invalid incoming line or batch element
/// ([`PeerConfig::on_invalid`]).
pub type InvalidInputHook = Arc<dyn Fn(&InvalidInput) + Send + Sync>;

/// An incoming line (or batch element) that is not a valid JSON-RPC message,
/// as reported to [`PeerConfig::on_invalid`]. The peer answers it as usual
/// (the error, id `null`); the hook only gets to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidInput {
    /// The JSON-RPC error code it is answered with: `-32700` (not JSON, or not
    /// UTF-8) or `-32600` (not a JSON-RPC message, empty batch, oversized line,
    /// invalid batch element).
    pub code: i64,
    /// What is wrong, e.g. `Parse error: expected value at line 1 column 1`.
    pub message: String,
    /// The start of the offending line, at most [`INVALID_EXCERPT_BYTES`]
    /// bytes (invalid UTF-8 replaced by U+FFFD). For a batch element, the
    /// start of the whole batch line.
    pub excerpt: String,
    /// The offending line's length in bytes (terminator excluded).
    pub line_bytes: usize,
}

impl InvalidInput {
    fn new(error: &ErrorObject, line: &[u8], line_bytes: usize) -> Self {
        let message = match &error.data {
            None => error.message.clone(),
            Some(serde_json::Value::String(s)) => format!("{}: {s}", error.message),
            Some(other) => format!("{}: {other}", error.message),
        };
        InvalidInput { code: error.code, message, excerpt: excerpt(line), line_bytes }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {}) in a line of {} bytes: {:?}",
            self.message, self.code, self.line_bytes, self.excerpt
        )
    }
}

/// The first [`INVALID_EXCERPT_BYTES`] bytes of `line`, as text (never more bytes).
fn excerpt(line: &[u8]) -> String {
    let head = &line[..line.len().min(INVALID_EXCERPT_BYTES)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    if text.len() > INVALID_EXCERPT_BYTES {
        // Replacement characters are longer than the bytes they replace.
        let mut cut = INVALID_EXCERPT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Settings of one connection.
#[derive(Clone)]
pub struct PeerConfig {
    /// Longest accepted line, in bytes (terminator excluded). Default 16 MiB.
    pub max_line_bytes: usize,
    /// Capacity of the writer's queue, in messages. When it is full, senders wait
    /// (backpressure from a peer that does not read). Default 1024; at least 1.
    pub outgoing_capacity: usize,
    /// Capacity of the queue between the reader and the in-order notification
    /// dispatcher. When it is full, the reader waits, so a slow notification
    /// consumer slows the peer down instead of growing memory. Default 1024; at least 1.
    pub notification_capacity: usize,
    /// Timeout of [`Peer::request`] (and of [`Peer::request_with`] when its options
    /// name none). Default: none.
    pub default_request_timeout: Option<Duration>,
    /// Whether an outgoing request dropped, cancelled or timed out after it was sent
    /// sends `$/cancelRequest` to the peer. Default true.
    pub send_cancel_on_drop: bool,
    /// Called on the reader, once for every incoming line or batch element that
    /// is not a valid JSON-RPC message (parse error, invalid UTF-8, invalid
    /// request, oversized line, empty batch), before it is answered as usual.
    /// Never called for valid traffic (including responses with unknown ids).
    /// Keep it cheap: the reader waits for it. Default: none.
    pub on_invalid: Option<InvalidInputHook>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("max_line_bytes", &self.max_line_bytes)
            .field("outgoing_capacity", &self.outgoing_capacity)
            .field("notification_capacity", &self.notification_capacity)
            .field("default_request_timeout", &self.default_request_timeout)
            .field("send_cancel_on_drop", &self.send_cancel_on_drop)
            .field("on_invalid", &self.on_invalid.as_ref().map(|_| "Fn(&InvalidInput)"))
            .finish()
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            outgoing_capacity: 1024,
            notification_capacity: 1024,
            default_request_timeout: None,
            send_cancel_on_drop: true,
            on_invalid: None,
        }
    }
}

impl PeerConfig {
    /// Sets [`on_invalid`](Self::on_invalid).
    #[must_use]
    pub fn on_invalid(mut self, hook: impl Fn(&InvalidInput) + Send + Sync + 'static) -> Self {
        self.on_invalid = Some(Arc::new(hook));
        self
    }
}

/// Per-call options of [`Peer::request_with`].
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Fails the call with [`RpcError::Timeout`] after this long (`None`: the
    /// peer's default timeout, if any).
    pub timeout: Option<Duration>,
    /// Fails the call with [`RpcError::Cancelled`] when this token fires.
    pub cancel: Option<CancellationToken>,
    /// Overrides [`PeerConfig::send_cancel_on_drop`] for this call.
    pub send_cancel_on_drop: Option<bool>,
}

impl RequestOptions {
    /// Sets the timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the cancellation token.
    #[must_use]
    pub fn cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Sets whether `$/cancelRequest` is sent when the call is abandoned.
    #[must_use]
    pub fn send_cancel_on_drop(mut self, send: bool) -> Self {
        self.send_cancel_on_drop = Some(send);
        self
    }
}

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

enum OwnedPayload {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
}

/// What the writer is asked to do, in queue order.
enum Out {
    /// Write this line (terminator included).
    Line(Vec<u8>),
    /// Answer once everything queued before has been written and flushed.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Pending {
    map: HashMap<i64, oneshot::Sender<OwnedPayload>>,
    /// Set when no answer can come any more (read side ended, write error,
    /// local close): new requests fail at once with this reason.
    closed: Option<String>,
}

/// The first thing that ended the connection (see [`CloseReason`]).
const CAUSE_NONE: u8 = 0;
const CAUSE_LOCAL: u8 = 1;
const CAUSE_WRITE_ERROR: u8 = 2;
const CAUSE_READ_END: u8 = 3;

struct Inner {
    next_id: AtomicI64,
    pending: Mutex<Pending>,
    /// Incoming requests in flight: id → (registration number, token).
    incoming: Mutex<HashMap<Id, (u64, CancellationToken)>>,
    incoming_seq: AtomicU64,
    /// Fires on [`Peer::close`] or abort: the reader and the dispatcher stop at
    /// once, and incoming handlers are cancelled (parent of their tokens).
    local_close: CancellationToken,
    /// Fires when the write side is asked to close (close, close_write, abort):
    /// the writer writes what is queued, flushes and shuts down.
    write_close: CancellationToken,
    /// Set (before `write_close` fires) when the write side takes no new messages.
    write_refused: AtomicBool,
    /// Why the write side takes no new messages.
    write_reason: OnceLock<String>,
    /// Fires once the reader has stopped (for whatever reason).
    read_done: CancellationToken,
    /// Fires once the writer has stopped (shut down, failed or aborted).
    write_done: CancellationToken,
    /// The writer stopped without writing everything queued (error, abort, panic).
    write_failed: AtomicBool,
    aborted: AtomicBool,
    /// One of the `CAUSE_*` constants: the first thing that ended the connection.
    cause: AtomicU8,
    cause_text: OnceLock<String>,
    /// Messages the reader could not queue at once and handed to a task.
    overflow: AtomicUsize,
    config: PeerConfig,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// Records the first cause of the end of the connection.
    fn set_cause(&self, cause: u8, text: impl FnOnce() -> String) {
        if self.cause.compare_exchange(CAUSE_NONE, cause, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let text = text();
            debug!(reason = %text, "the connection is ending");
            let _ = self.cause_text.set(text);
        }
    }

    /// Fails every pending outgoing request, and every later one, with `reason`
    /// (the first reason wins).
    fn fail_pending(&self, reason: impl FnOnce() -> String) {
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
    fn close_write(&self, reason: impl FnOnce() -> String) {
        if !self.write_refused.load(Ordering::Acquire) {
            let _ = self.write_reason.set(reason());
            self.write_refused.store(true, Ordering::Release);
        }
        self.write_close.cancel();
    }

    /// A local full close (also used by abort).
    fn close_local(&self, reason: &'static str) {
        self.set_cause(CAUSE_LOCAL, || reason.to_owned());
        self.local_close.cancel();
        self.fail_pending(|| reason.to_owned());
        self.close_write(|| reason.to_owned());
    }

    /// The read side ended: no answer can come any more.
    fn read_ended(&self, reason: impl Fn() -> String) {
        self.set_cause(CAUSE_READ_END, &reason);
        self.fail_pending(&reason);
    }

    fn pending_closed_reason(&self) -> Option<String> {
        lock(&self.pending).closed.clone()
    }

    /// The error of a request that cannot be sent or answered.
    fn request_error(&self) -> RpcError {
        let reason = self
            .pending_closed_reason()
            .or_else(|| self.write_reason.get().cloned())
            .unwrap_or_else(|| "connection closed".to_owned());
        RpcError::ConnectionClosed { reason }
    }

    /// The error of a message that cannot be written.
    fn write_error(&self) -> RpcError {
        let reason = self
            .write_reason
            .get()
            .cloned()
            .or_else(|| self.pending_closed_reason())
            .unwrap_or_else(|| "the write side is closed".to_owned());
        RpcError::ConnectionClosed { reason }
    }

    fn register_incoming(&self, id: &Id) -> (u64, CancellationToken) {
        let token = self.local_close.child_token();
        let seq = self.incoming_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.incoming).insert(id.clone(), (seq, token.clone()));
        (seq, token)
    }

    fn unregister_incoming(&self, id: &Id, seq: u64) {
        let mut map = lock(&self.incoming);
        if map.get(id).is_some_and(|(s, _)| *s == seq) {
            map.remove(id);
        }
    }

    fn cancel_incoming(&self, id: &Id) -> bool {
        match lock(&self.incoming).get(id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    fn deliver_response(&self, id: Option<Id>, payload: Payload<'_>) {
        let sender = match &id {
            Some(Id::Integer(n)) => lock(&self.pending).map.remove(n),
            _ => None,
        };
        match sender {
            Some(tx) => {
                let owned = match payload {
                    Payload::Result(r) => OwnedPayload::Result(r.to_owned()),
                    Payload::Error(e) => OwnedPayload::Error(e.to_owned()),
                };
                // The caller may have gone in the meantime: nothing to do then.
                let _ = tx.send(owned);
            }
            None => match (id, payload) {
                (None, Payload::Error(e)) => {
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
struct Handle {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Out>,
}

/// A handle to one connection: send requests and notifications, flush, close
/// either side. Cheap to clone; all clones drive the same connection.
///
/// The write side stays open while any clone lives (including the ones the
/// reader holds while it runs and the ones handed to request handlers through
/// [`RequestContext::peer`]); when the last one is dropped, the writer writes
/// what is queued, flushes and shuts its side down.
#[derive(Clone)]
pub struct Peer {
    handle: Arc<Handle>,
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

enum ReaderEnd {
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
            debug!(id = self.id, "request abandoned: sending $/cancelRequest");
            #[derive(Serialize)]
            struct CancelParams {
                id: i64,
            }
            if let Ok(line) = encode_notification(CANCEL_REQUEST_METHOD, &CancelParams { id: self.id }) {
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
            config,
        });
        let peer = Peer { handle: Arc::new(Handle { inner: Arc::clone(&inner), tx: out_tx }) };
        let mut router = router;
        let mut notification_index = HashMap::new();
        let mut notification_handlers = Vec::new();
        for (method, handler) in std::mem::take(&mut router.notifications) {
            notification_index.insert(method, notification_handlers.len());
            notification_handlers.push((method, handler));
        }
        let batch_end = router.batch_end.take();
        let state = ReaderState {
            inner: Arc::clone(&inner),
            peer: peer.clone(),
            router,
            notification_index,
            notif_tx,
            permits: Arc::clone(&permits),
            credits: 0,
            batch: NotificationBatch::default(),
        };
        let reader = tokio::spawn(state.run(reader));
        let writer = tokio::spawn(write_loop(writer, out_rx, Arc::clone(&inner)));
        let dispatcher = tokio::spawn(dispatch_loop(
            notif_rx,
            notification_handlers,
            batch_end,
            permits,
            Arc::clone(&inner),
        ));
        (peer, Connection { reader, writer, dispatcher, inner })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Queues `line` without waiting: used where waiting could deadlock (the
    /// reader) or is impossible (a destructor). When the queue is full the line is
    /// handed to a task, at most `outgoing_capacity` of them at a time; past that
    /// it is dropped with a warning.
    fn send_nonblocking(&self, line: Vec<u8>) {
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
    /// [`RpcError::ConnectionClosed`] once the write side is closed (or closing).
    pub fn notify<P: Serialize>(
        &self,
        method: &str,
        params: P,
    ) -> impl Future<Output = Result<(), RpcError>> + Send + 'static + use<P> {
        let peer = self.clone();
        let encoded = encode_notification(method, &params);
        async move {
            let line = encoded.map_err(RpcError::Encode)?;
            let inner = peer.inner();
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

// ---------------------------------------------------------------------------
// Reader.

/// Marks the read side ended when the reader stops, however it stops
/// (return, panic, abort).
struct ReaderGuard<'a>(&'a Inner);

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        self.0.read_ended(|| "the reader task stopped unexpectedly".to_owned());
        self.0.read_done.cancel();
    }
}

struct ReaderState {
    inner: Arc<Inner>,
    peer: Peer,
    router: Router,
    /// Notification method → index of its handler in the dispatcher.
    notification_index: HashMap<&'static str, usize>,
    /// To the dispatcher: batches of notifications.
    notif_tx: mpsc::UnboundedSender<NotificationBatch>,
    /// One permit per notification queued and not yet handled.
    permits: Arc<Semaphore>,
    /// Permits taken from `permits` and not used yet (taken in groups).
    credits: usize,
    /// Notifications from the current read, sent before the next read.
    batch: NotificationBatch,
}

/// Notifications handed from the reader to the dispatcher in one go. Their params
/// are copied into one string, so the reader allocates nothing per notification
/// and the decoding (and its allocations) happens on the dispatcher.
#[derive(Default)]
struct NotificationBatch {
    text: String,
    jobs: Vec<(usize, Option<std::ops::Range<usize>>)>,
}

/// Whether the reader should keep going.
enum Flow {
    Continue,
    Stop,
}

/// How an incoming request was started.
enum Started {
    /// Answered at once (error, or cancel acknowledgement).
    Ready(Vec<u8>),
    /// Running: yields the response line, or `None` when the connection closed.
    Running(BoxFuture<Option<Vec<u8>>>),
}

impl ReaderState {
    async fn run<R: AsyncRead + Unpin>(mut self, mut reader: R) -> ReaderEnd {
        let inner = Arc::clone(&self.inner);
        let _guard = ReaderGuard(&inner);
        let mut framer = LineFramer::new(inner.config.max_line_bytes);
        loop {
            while let Some(frame) = framer.next_frame() {
                match frame {
                    Frame::Line(line) => {
                        trace!(line = %String::from_utf8_lossy(line), "<-");
                        if let Flow::Stop = self.handle_line(line).await {
                            return ReaderEnd::Stopped;
                        }
                    }
                    Frame::Oversized { len } => {
                        let limit = framer.max_line_bytes();
                        warn!(len, limit, "dropped an oversized line");
                        let error = ErrorObject::invalid_request(format!(
                            "line of {len} bytes exceeds the limit of {limit} bytes"
                        ));
                        if let Some(hook) = &inner.config.on_invalid {
                            hook(&InvalidInput::new(&error, framer.oversized_head(), len));
                        }
                        self.peer.send_nonblocking(encode_error(None, &error));
                    }
                }
            }
            self.flush_notifications();
            let read = tokio::select! {
                biased;
                () = inner.local_close.cancelled() => return ReaderEnd::Stopped,
                read = reader.read_buf(framer.read_buffer()) => read,
            };
            match read {
                Ok(0) => {
                    self.flush_notifications();
                    return match framer.finish() {
                        None => {
                            debug!("EOF");
                            inner.read_ended(|| CloseReason::Eof.to_string());
                            ReaderEnd::Eof
                        }
                        Some(bytes) => {
                            warn!(bytes, "EOF in the middle of a line: discarding it");
                            inner.read_ended(|| CloseReason::EofWithPartialLine { bytes }.to_string());
                            ReaderEnd::Partial(bytes)
                        }
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(error = %e, "read error");
                    inner.read_ended(|| format!("read error: {e}"));
                    return ReaderEnd::Error(e);
                }
            }
        }
    }

    async fn handle_line(&mut self, line: &[u8]) -> Flow {
        match classify(line) {
            Incoming::Single(Message::Notification { method, params }) => {
                self.handle_notification(&method, params).await
            }
            Incoming::Single(Message::Request { id, method, params }) => {
                match self.start_request(id, &method, params) {
                    Started::Ready(line) => self.peer.send_nonblocking(line),
                    Started::Running(fut) => {
                        // Holds a handle: the write side stays open until it has answered.
                        let peer = self.peer.clone();
                        tokio::spawn(async move {
                            if let Some(line) = fut.await {
                                send_answer(&peer, line).await;
                            }
                        });
                    }
                }
                Flow::Continue
            }
            Incoming::Single(Message::Response { id, payload }) => {
                self.inner.deliver_response(id, payload);
                Flow::Continue
            }
            Incoming::Invalid(error) => {
                debug!(code = error.code, error = %error, "invalid message");
                self.report_invalid(&error, line);
                self.peer.send_nonblocking(encode_error(None, &error));
                Flow::Continue
            }
            Incoming::Batch(items) => self.handle_batch(items, line).await,
        }
    }

    /// Tells the [`PeerConfig::on_invalid`] hook, if any.
    fn report_invalid(&self, error: &ErrorObject, line: &[u8]) {
        if let Some(hook) = &self.inner.config.on_invalid {
            hook(&InvalidInput::new(error, line, line.len()));
        }
    }

    async fn handle_batch(&mut self, items: Vec<Result<Message<'_>, ErrorObject>>, line: &[u8]) -> Flow {
        let mut ready: Vec<Vec<u8>> = Vec::new();
        let mut running: Vec<(usize, BoxFuture<Option<Vec<u8>>>)> = Vec::new();
        for item in items {
            match item {
                Err(error) => {
                    self.report_invalid(&error, line);
                    ready.push(encode_error(None, &error));
                }
                Ok(Message::Notification { method, params }) => {
                    if let Flow::Stop = self.handle_notification(&method, params).await {
                        return Flow::Stop;
                    }
                }
                Ok(Message::Response { id, payload }) => self.inner.deliver_response(id, payload),
                Ok(Message::Request { id, method, params }) => {
                    match self.start_request(id, &method, params) {
                        Started::Ready(line) => ready.push(line),
                        Started::Running(fut) => {
                            running.push((ready.len(), fut));
                            ready.push(Vec::new());
                        }
                    }
                }
            }
        }
        if ready.is_empty() {
            return Flow::Continue;
        }
        if running.is_empty() {
            self.peer.send_nonblocking(encode_batch(&ready));
            return Flow::Continue;
        }
        let peer = self.peer.clone();
        tokio::spawn(async move {
            let (slots, futs): (Vec<usize>, Vec<_>) = running.into_iter().unzip();
            let results = futures::future::join_all(futs).await;
            for (slot, result) in slots.into_iter().zip(results) {
                match result {
                    Some(line) => ready[slot] = line,
                    None => return, // closed locally: nothing to answer
                }
            }
            send_answer(&peer, encode_batch(&ready)).await;
        });
        Flow::Continue
    }

    async fn handle_notification(&mut self, method: &str, params: Option<&RawValue>) -> Flow {
        if method == CANCEL_REQUEST_METHOD {
            self.handle_cancel(params);
            return Flow::Continue;
        }
        let Some(&handler) = self.notification_index.get(method) else {
            debug!(method, "ignoring a notification with no handler");
            return Flow::Continue;
        };
        if self.credits == 0 {
            // Take permits in groups: one atomic operation per group, not per message.
            let group = CREDIT_GROUP.min(self.inner.config.notification_capacity);
            if let Ok(permits) = self.permits.try_acquire_many(group as u32) {
                permits.forget();
                self.credits = group;
            } else {
                match self.permits.try_acquire().map(SemaphorePermit::forget) {
                    Ok(()) => {}
                    Err(TryAcquireError::Closed) => return Flow::Stop,
                    Err(TryAcquireError::NoPermits) => {
                        trace!("notification queue full: waiting");
                        self.flush_notifications();
                        let acquired = tokio::select! {
                            biased;
                            () = self.inner.local_close.cancelled() => return Flow::Stop,
                            acquired = self.permits.acquire() => acquired,
                        };
                        match acquired {
                            Ok(permit) => permit.forget(),
                            Err(_) => return Flow::Stop,
                        }
                    }
                }
                self.credits = 1;
            }
        }
        self.credits -= 1;
        let batch = &mut self.batch;
        let range = params.map(|p| {
            if batch.text.capacity() == 0 {
                batch.text.reserve(crate::framing::READ_CHUNK);
            }
            let start = batch.text.len();
            batch.text.push_str(p.get());
            start..batch.text.len()
        });
        batch.jobs.push((handler, range));
        Flow::Continue
    }

    /// Hands the notifications read so far to the dispatcher (one wakeup).
    fn flush_notifications(&mut self) {
        if !self.batch.jobs.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            // If the dispatcher is gone the connection is closing: drop them.
            let _ = self.notif_tx.send(batch);
        }
    }

    fn handle_cancel(&self, params: Option<&RawValue>) {
        #[derive(serde::Deserialize)]
        struct CancelParams {
            id: Id,
        }
        match crate::router::decode_params::<CancelParams>(params) {
            Ok(CancelParams { id }) => {
                if self.inner.cancel_incoming(&id) {
                    debug!(%id, "the peer cancelled a request");
                } else {
                    debug!(%id, "cancel for a request not in flight");
                }
            }
            Err(e) => warn!(error = %e, "malformed $/cancelRequest params"),
        }
    }

    fn start_request(&self, id: Id, method: &str, params: Option<&RawValue>) -> Started {
        if method == CANCEL_REQUEST_METHOD {
            self.handle_cancel(params);
            return Started::Ready(encode_result(&id, &()).expect("null serializes"));
        }
        let (seq, token) = self.inner.register_incoming(&id);
        let ctx = RequestContext { id: id.clone(), peer: self.peer.clone(), cancel: token.clone() };
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if let Some(handler) = self.router.requests.get(method) {
                handler(params, ctx).map_err(|e| {
                    ErrorObject::new(crate::codes::INVALID_PARAMS, "Invalid params").with_data(e.to_string())
                })
            } else if let Some(fallback) = &self.router.fallback {
                Ok(fallback(method, params, ctx))
            } else {
                debug!(method, %id, "request for an unknown method");
                Err(ErrorObject::method_not_found(method))
            }
        }));
        let fut = match started {
            Ok(Ok(fut)) => fut,
            Ok(Err(error)) => {
                self.inner.unregister_incoming(&id, seq);
                return Started::Ready(encode_error(Some(&id), &error));
            }
            Err(_) => {
                error!(method, %id, "a request handler panicked");
                self.inner.unregister_incoming(&id, seq);
                return Started::Ready(encode_error(
                    Some(&id),
                    &ErrorObject::internal("the request handler panicked"),
                ));
            }
        };
        let inner = Arc::clone(&self.inner);
        Started::Running(Box::pin(async move {
            let outcome = tokio::select! {
                biased;
                () = token.cancelled() => None,
                r = AssertUnwindSafe(fut).catch_unwind() => Some(r),
            };
            inner.unregister_incoming(&id, seq);
            match outcome {
                Some(Ok(line)) => Some(line),
                Some(Err(_)) => {
                    error!(%id, "a request handler panicked");
                    Some(encode_error(Some(&id), &ErrorObject::internal("the request handler panicked")))
                }
                None if inner.local_close.is_cancelled() => None,
                None => {
                    debug!(%id, "request cancelled");
                    Some(encode_error(Some(&id), &ErrorObject::request_cancelled()))
                }
            }
        }))
    }
}

// ---------------------------------------------------------------------------
// Writer and dispatcher.

/// Queues the answer to an incoming request (dropped if the write side is closed).
async fn send_answer(peer: &Peer, line: Vec<u8>) {
    if peer.handle.tx.send(Out::Line(line)).await.is_err() {
        debug!("the write side is closed: an answer is dropped");
    }
}

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

async fn write_loop<W: AsyncWrite + Unpin>(
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

/// If the dispatcher stops abnormally, the reader must not wait for permits
/// that never come back.
struct DispatcherGuard(Arc<Semaphore>);

impl Drop for DispatcherGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs notification handlers one at a time, in order. Permits go back to the
/// reader as handlers finish (in groups, to keep the hot path cheap).
async fn dispatch_loop(
    mut rx: mpsc::UnboundedReceiver<NotificationBatch>,
    handlers: Vec<(&'static str, Box<NotificationFn>)>,
    batch_end: Option<Box<BatchEndFn>>,
    permits: Arc<Semaphore>,
    inner: Arc<Inner>,
) {
    let _guard = DispatcherGuard(Arc::clone(&permits));
    loop {
        let batch = tokio::select! {
            biased;
            batch = rx.recv() => batch,
            () = inner.local_close.cancelled() => return,
        };
        let Some(batch) = batch else { return };
        let mut done = 0;
        for (handler, range) in batch.jobs {
            if inner.local_close.is_cancelled() {
                return;
            }
            let (method, handler) = &handlers[handler];
            let params = range.map(|r| &batch.text[r]);
            match std::panic::catch_unwind(AssertUnwindSafe(|| handler(params))) {
                Ok(Ok(fut)) => {
                    tokio::select! {
                        biased;
                        r = AssertUnwindSafe(fut).catch_unwind() => if r.is_err() {
                            error!(method, "a notification handler panicked");
                        },
                        () = inner.local_close.cancelled() => return,
                    }
                }
                Ok(Err(e)) => {
                    warn!(method, error = %e, "skipping a notification whose params do not decode");
                }
                Err(_) => error!(method, "a notification handler panicked"),
            }
            done += 1;
            if done == CREDIT_GROUP {
                permits.add_permits(done);
                done = 0;
            }
        }
        permits.add_permits(done);
        if let Some(batch_end) = &batch_end {
            tokio::select! {
                biased;
                r = AssertUnwindSafe(batch_end()).catch_unwind() => if r.is_err() {
                    error!("the notification batch-end hook panicked");
                },
                () = inner.local_close.cancelled() => return,
            }
        }
    }
}
