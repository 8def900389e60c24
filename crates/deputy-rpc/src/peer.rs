//! The peer: reader task, writer task, notification dispatcher, pending map.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
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
use crate::router::{BoxFuture, NotificationFn, RequestContext, Router};

/// Default for [`PeerConfig::max_line_bytes`]: 16 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How many queued items the writer and the dispatcher take per wakeup.
const BATCH: usize = 128;
/// Notification permits are taken and given back in groups of this size.
const CREDIT_GROUP: usize = 32;
/// The writer's buffer size.
const WRITE_BUFFER: usize = 64 * 1024;

/// Settings of one connection.
#[derive(Debug, Clone)]
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
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            outgoing_capacity: 1024,
            notification_capacity: 1024,
            default_request_timeout: None,
            send_cancel_on_drop: true,
        }
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

#[derive(Default)]
struct Pending {
    map: HashMap<i64, oneshot::Sender<OwnedPayload>>,
    closed: bool,
}

struct Inner {
    out_tx: mpsc::Sender<Vec<u8>>,
    next_id: AtomicI64,
    pending: Mutex<Pending>,
    /// Incoming requests in flight: id → (registration number, token).
    incoming: Mutex<HashMap<Id, (u64, CancellationToken)>>,
    incoming_seq: AtomicU64,
    /// Fires on any close (EOF, error, local). Parent of every incoming token.
    shutdown: CancellationToken,
    /// Fires on a local close or abort only: the dispatcher then stops at once.
    local_close: CancellationToken,
    locally_closed: AtomicBool,
    /// Set (before `shutdown` fires) on any close; cheaper to read than the token.
    closed: AtomicBool,
    aborted: AtomicBool,
    close_reason: OnceLock<String>,
    /// Messages the reader could not queue at once and handed to a task.
    overflow: AtomicUsize,
    config: PeerConfig,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn closed_error(&self) -> RpcError {
        RpcError::ConnectionClosed {
            reason: self.close_reason.get().cloned().unwrap_or_else(|| "connection closed".to_owned()),
        }
    }

    /// Closes the connection: the first reason wins. Pending outgoing requests
    /// fail at once, incoming handlers are cancelled, the writer drains and
    /// shuts down, the reader stops.
    fn close_with(&self, reason: impl FnOnce() -> String, local: bool) {
        if local {
            self.locally_closed.store(true, Ordering::Release);
            self.local_close.cancel();
        }
        if self.close_reason.get().is_none() {
            let reason = reason();
            if self.close_reason.set(reason).is_ok() {
                debug!(reason = %self.close_reason.get().map_or("", String::as_str), "closing the connection");
            }
        }
        let failed = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.map)
        };
        self.closed.store(true, Ordering::Release);
        self.shutdown.cancel();
        if !failed.is_empty() {
            debug!(count = failed.len(), "failing pending requests: connection closed");
        }
        drop(failed);
    }

    /// Queues `line` without waiting: used where waiting could deadlock (the
    /// reader) or is impossible (a destructor). When the queue is full the line is
    /// handed to a task, at most `outgoing_capacity` of them at a time; past that
    /// it is dropped with a warning.
    fn send_nonblocking(self: &Arc<Self>, line: Vec<u8>) {
        match self.out_tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(line)) => {
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    warn!("outgoing queue full and no runtime: dropping a message");
                    return;
                };
                if self.overflow.fetch_add(1, Ordering::AcqRel) >= self.config.outgoing_capacity {
                    self.overflow.fetch_sub(1, Ordering::AcqRel);
                    warn!(
                        line = %String::from_utf8_lossy(&line).trim_end(),
                        "outgoing queue full: dropping a message"
                    );
                    return;
                }
                let inner = Arc::clone(self);
                handle.spawn(async move {
                    let _ = inner.out_tx.send(line).await;
                    inner.overflow.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }

    fn register_incoming(&self, id: &Id) -> (u64, CancellationToken) {
        let token = self.shutdown.child_token();
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

/// A handle to one connection: send requests and notifications, close it.
/// Cheap to clone; all clones drive the same connection.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer").field("closed", &self.is_closed()).finish_non_exhaustive()
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
        f.debug_struct("Connection").field("closed", &self.inner.is_closed()).finish_non_exhaustive()
    }
}

enum ReaderEnd {
    Eof,
    Partial(usize),
    Error(io::Error),
    Stopped,
}

impl Connection {
    /// Resolves when the connection has ended and its tasks have finished: the
    /// reader stopped (EOF, read error, or a close), the writer flushed what was
    /// queued and shut its end down, and the dispatcher delivered the notifications
    /// received before EOF (after a local close it drops them instead).
    pub async fn wait(self) -> CloseReason {
        let reader = self.reader.await;
        let writer = self.writer.await;
        let _ = self.dispatcher.await;
        if self.inner.aborted.load(Ordering::Acquire) {
            return CloseReason::Aborted;
        }
        match reader {
            Ok(ReaderEnd::Eof) => CloseReason::Eof,
            Ok(ReaderEnd::Partial(bytes)) => CloseReason::EofWithPartialLine { bytes },
            Ok(ReaderEnd::Error(e)) => CloseReason::ReadError(e),
            Ok(ReaderEnd::Stopped) => match writer {
                Ok(Err(e)) => CloseReason::WriteError(e),
                Ok(Ok(())) if self.inner.locally_closed.load(Ordering::Acquire) => CloseReason::Closed,
                _ => CloseReason::Aborted,
            },
            Err(_) => CloseReason::Aborted,
        }
    }

    /// Hard-stops the connection's tasks now, without flushing (for example when a
    /// grandchild process keeps the pipe open). Pending requests fail and incoming
    /// handlers are cancelled as with [`Peer::close`].
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::Release);
        self.inner.close_with(|| "connection aborted".to_owned(), true);
        self.reader.abort();
        self.writer.abort();
        self.dispatcher.abort();
    }
}

/// Removes a pending outgoing request when the call ends without an answer
/// (dropped, timed out, cancelled), and tells the peer if the request was sent.
struct PendingGuard<'a> {
    inner: &'a Arc<Inner>,
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
        let removed = lock(&self.inner.pending).map.remove(&self.id).is_some();
        if removed && self.sent && self.send_cancel && !self.inner.is_closed() {
            debug!(id = self.id, "request abandoned: sending $/cancelRequest");
            #[derive(Serialize)]
            struct CancelParams {
                id: i64,
            }
            if let Ok(line) = encode_notification(CANCEL_REQUEST_METHOD, &CancelParams { id: self.id }) {
                self.inner.send_nonblocking(line);
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
            out_tx,
            next_id: AtomicI64::new(1),
            pending: Mutex::new(Pending::default()),
            incoming: Mutex::new(HashMap::new()),
            incoming_seq: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            local_close: CancellationToken::new(),
            locally_closed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            close_reason: OnceLock::new(),
            overflow: AtomicUsize::new(0),
            config,
        });
        let peer = Peer { inner: Arc::clone(&inner) };
        let mut router = router;
        let mut notification_index = HashMap::new();
        let mut notification_handlers = Vec::new();
        for (method, handler) in std::mem::take(&mut router.notifications) {
            notification_index.insert(method, notification_handlers.len());
            notification_handlers.push((method, handler));
        }
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
        let dispatcher =
            tokio::spawn(dispatch_loop(notif_rx, notification_handlers, permits, Arc::clone(&inner)));
        (peer, Connection { reader, writer, dispatcher, inner })
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
        let inner = Arc::clone(&self.inner);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let encoded = encode_request(id, method, &params);
        let method = method.to_owned();
        let timeout = opts.timeout.or(inner.config.default_request_timeout);
        let send_cancel = opts.send_cancel_on_drop.unwrap_or(inner.config.send_cancel_on_drop);
        let cancel = opts.cancel;
        async move {
            let line = encoded.map_err(RpcError::Encode)?;
            let call = async {
                let (tx, rx) = oneshot::channel();
                let mut guard = PendingGuard { inner: &inner, id, sent: false, send_cancel, armed: false };
                {
                    let mut pending = lock(&inner.pending);
                    if pending.closed {
                        return Err(inner.closed_error());
                    }
                    pending.map.insert(id, tx);
                }
                guard.armed = true;
                inner.out_tx.send(line).await.map_err(|_| inner.closed_error())?;
                guard.sent = true;
                let payload = rx.await.map_err(|_| inner.closed_error())?;
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
    /// future waits for room in the outgoing queue (backpressure) and fails with
    /// [`RpcError::ConnectionClosed`] once the connection is closed.
    pub fn notify<P: Serialize>(
        &self,
        method: &str,
        params: P,
    ) -> impl Future<Output = Result<(), RpcError>> + Send + 'static + use<P> {
        let inner = Arc::clone(&self.inner);
        let encoded = encode_notification(method, &params);
        async move {
            let line = encoded.map_err(RpcError::Encode)?;
            if inner.is_closed() {
                return Err(inner.closed_error());
            }
            inner.out_tx.send(line).await.map_err(|_| inner.closed_error())
        }
    }

    /// Whether the connection is closed (EOF, error, or [`close`](Self::close)).
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Resolves once the connection is closed.
    pub async fn closed(&self) {
        self.inner.shutdown.cancelled().await
    }

    /// How many outgoing requests are waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        lock(&self.inner.pending).map.len()
    }

    /// How many incoming requests are being handled.
    pub fn incoming_requests(&self) -> usize {
        lock(&self.inner.incoming).len()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<String> {
        self.inner.close_reason.get().cloned()
    }

    /// Closes the connection: cancels every incoming handler (their answers are not
    /// sent), fails every pending outgoing request with
    /// [`RpcError::ConnectionClosed`], drops queued notifications not yet
    /// delivered, stops reading, lets the writer flush what is already queued and
    /// then shuts the write side down, so the peer sees EOF. Idempotent.
    pub fn close(&self) {
        self.inner.close_with(|| "closed locally".to_owned(), true);
    }
}

// ---------------------------------------------------------------------------
// Reader.

/// Closes the connection if a task ends without doing so (panic or abort).
struct CloseOnDrop<'a>(&'a Inner, &'static str);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        if !self.0.is_closed() {
            self.0.close_with(|| self.1.to_owned(), false);
        }
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
        let _guard = CloseOnDrop(&inner, "the reader task stopped unexpectedly");
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
                        inner.send_nonblocking(encode_error(None, &error));
                    }
                }
            }
            self.flush_notifications();
            let read = tokio::select! {
                biased;
                () = inner.shutdown.cancelled() => return ReaderEnd::Stopped,
                read = reader.read_buf(framer.read_buffer()) => read,
            };
            match read {
                Ok(0) => {
                    self.flush_notifications();
                    return match framer.finish() {
                        None => {
                            debug!("EOF");
                            inner.close_with(|| CloseReason::Eof.to_string(), false);
                            ReaderEnd::Eof
                        }
                        Some(bytes) => {
                            warn!(bytes, "EOF in the middle of a line: discarding it");
                            inner.close_with(|| CloseReason::EofWithPartialLine { bytes }.to_string(), false);
                            ReaderEnd::Partial(bytes)
                        }
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(error = %e, "read error");
                    inner.close_with(|| format!("read error: {e}"), false);
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
                    Started::Ready(line) => self.inner.send_nonblocking(line),
                    Started::Running(fut) => {
                        let inner = Arc::clone(&self.inner);
                        tokio::spawn(async move {
                            if let Some(line) = fut.await {
                                let _ = inner.out_tx.send(line).await;
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
                self.inner.send_nonblocking(encode_error(None, &error));
                Flow::Continue
            }
            Incoming::Batch(items) => self.handle_batch(items).await,
        }
    }

    async fn handle_batch(&mut self, items: Vec<Result<Message<'_>, ErrorObject>>) -> Flow {
        let mut ready: Vec<Vec<u8>> = Vec::new();
        let mut running: Vec<(usize, BoxFuture<Option<Vec<u8>>>)> = Vec::new();
        for item in items {
            match item {
                Err(error) => ready.push(encode_error(None, &error)),
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
            self.inner.send_nonblocking(encode_batch(&ready));
            return Flow::Continue;
        }
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let (slots, futs): (Vec<usize>, Vec<_>) = running.into_iter().unzip();
            let results = futures::future::join_all(futs).await;
            for (slot, result) in slots.into_iter().zip(results) {
                match result {
                    Some(line) => ready[slot] = line,
                    None => return, // the connection closed: nothing to answer
                }
            }
            let _ = inner.out_tx.send(encode_batch(&ready)).await;
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
                            () = self.inner.shutdown.cancelled() => return Flow::Stop,
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
                None if inner.is_closed() => None,
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

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    inner: Arc<Inner>,
) -> io::Result<()> {
    let _guard = CloseOnDrop(&inner, "the writer task stopped unexpectedly");
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, writer);
    let mut batch = Vec::with_capacity(BATCH);
    let result: io::Result<()> = async {
        loop {
            let n = tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, BATCH) => n,
                () = inner.shutdown.cancelled() => 0,
            };
            if n == 0 {
                break;
            }
            for line in batch.drain(..) {
                trace!(line = %String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line)), "->");
                out.write_all(&line).await?;
            }
            if rx.is_empty() {
                out.flush().await?;
            }
        }
        // Closing: refuse new messages, write what is queued, flush, shut down.
        rx.close();
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            for line in batch.drain(..) {
                trace!(line = %String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line)), "->");
                out.write_all(&line).await?;
            }
        }
        out.flush().await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            if let Err(e) = out.shutdown().await {
                debug!(error = %e, "shutting down the write side failed");
            }
            Ok(())
        }
        Err(e) => {
            debug!(error = %e, "write error");
            rx.close();
            inner.close_with(|| format!("write error: {e}"), false);
            Err(e)
        }
    }
}

/// Runs notification handlers one at a time, in order. Permits go back to the
/// reader as handlers finish (in groups, to keep the hot path cheap).
async fn dispatch_loop(
    mut rx: mpsc::UnboundedReceiver<NotificationBatch>,
    handlers: Vec<(&'static str, Box<NotificationFn>)>,
    permits: Arc<Semaphore>,
    inner: Arc<Inner>,
) {
    let _guard = CloseOnDrop(&inner, "the notification dispatcher stopped unexpectedly");
    loop {
        let batch = tokio::select! {
            biased;
            batch = rx.recv() => batch,
            () = inner.local_close.cancelled() => return,
        };
        let Some(batch) = batch else { return };
        let mut done = 0;
        for (handler, range) in batch.jobs {
            if inner.locally_closed.load(Ordering::Acquire) {
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
    }
}
