//! The reader task, and the connection's flow-control rules.
//!
//! # Flow control
//!
//! Every resource the peer can make this side hold has a bound, and reaching
//! it makes the reader stop reading — backpressure through the pipe, so the
//! peer's writes block — rather than dropping anything:
//!
//! - **Lines**: at most `max_line_bytes` (16 MiB by default); a longer one is
//!   skipped as it streams and answered `-32600`. The buffer never holds more
//!   than the limit + 1 byte + one 64 KiB read.
//! - **Notifications**: at most `notification_capacity` read and not yet
//!   handled; when the dispatcher lags, the reader waits for it.
//! - **Incoming requests**: at most `max_incoming_requests` in flight (a
//!   handler running, or its answer waiting for room in the writer's queue);
//!   at the bound the reader waits until one is answered.
//! - **Answers the reader makes itself** (`-32700`/`-32600` for garbage and
//!   invalid messages, `-32601`, `-32602`, the answer to a `$/cancelRequest`
//!   sent as a request) wait for room in the writer's queue like every other
//!   message, in order. None is ever dropped while the write side is open:
//!   every request gets exactly one answer. A peer that floods and does not
//!   read its answers fills the writer's queue, then the pipe, and stalls.
//! - **Outgoing lines**: a message over `max_outgoing_bytes` (the peer's
//!   announced limit) is never written: a request or notification fails at
//!   the sender (`RpcError::MessageTooLarge`), an answer is replaced by a
//!   `-32603` error that says so ([`fit_answer`]).
//!
//! Before every wait the reader hands the notifications read so far to the
//! dispatcher, and every wait is raced against a local close. The one message
//! sent without waiting is the `$/cancelRequest` of an abandoned call, from a
//! destructor (`Peer::send_nonblocking`).

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::FutureExt as _;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, TryAcquireError, mpsc};
use tracing::{debug, error, trace, warn};

use crate::config::InvalidInput;
use crate::error::ErrorObject;
use crate::framing::{Frame, LineFramer};
use crate::id::Id;
use crate::message::{
    Incoming, Message, Payload, classify, encode_batch, encode_error, encode_notification, encode_result,
    plain_notification,
};
use crate::peer::{CloseReason, Inner, Out, OwnedPayload, Peer, ReaderEnd};
use crate::router::{BoxFuture, DecodeFn, Decoded, RequestContext, Router};

/// Notification permits are taken and given back in groups of this size.
pub(crate) const CREDIT_GROUP: usize = 32;

/// Marks the read side ended when the reader stops, however it stops
/// (return, panic, abort).
struct ReaderGuard<'a>(&'a Inner);

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        self.0.read_ended(|| "the reader task stopped unexpectedly".to_owned());
        self.0.read_done.cancel();
    }
}

pub(crate) struct ReaderState {
    inner: Arc<Inner>,
    peer: Peer,
    router: Router,
    /// Notification method → its decoder, and the index of its runner in
    /// the dispatcher.
    notifications: HashMap<&'static str, (Box<DecodeFn>, usize)>,
    /// Line mode ([`Router::lines`]).
    lines: bool,
    /// To the dispatcher: batches of notifications.
    notif_tx: mpsc::UnboundedSender<NotificationBatch>,
    /// One permit per notification queued and not yet handled.
    permits: Arc<Semaphore>,
    /// Permits taken from `permits` and not used yet (taken in groups).
    credits: usize,
    /// Notifications from the current read, sent before the next read.
    batch: NotificationBatch,
}

/// Notifications handed from the reader to the dispatcher in one go: their
/// params decoded, or in line mode the lines copied into one string.
#[derive(Default)]
pub(crate) struct NotificationBatch {
    pub(crate) text: String,
    pub(crate) jobs: Vec<Job>,
}

/// One thing for the dispatcher to do, in order.
pub(crate) enum Job {
    /// A notification: its handler's index, and its decoded params.
    Notify(usize, Decoded),
    /// Line mode: where the line is in the batch's text (`None`: end of input).
    Line(Option<std::ops::Range<usize>>),
    /// In-order mode ([`PeerConfig::in_order`](crate::PeerConfig::in_order)):
    /// hand over a response, or start a request's handler, once the
    /// notifications before it were handled. Takes no notification permit.
    Then(Box<dyn FnOnce() + Send>),
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
    pub(crate) fn new(
        inner: Arc<Inner>,
        peer: Peer,
        router: Router,
        notifications: HashMap<&'static str, (Box<DecodeFn>, usize)>,
        lines: bool,
        notif_tx: mpsc::UnboundedSender<NotificationBatch>,
        permits: Arc<Semaphore>,
    ) -> Self {
        ReaderState {
            inner,
            peer,
            router,
            notifications,
            lines,
            notif_tx,
            permits,
            credits: 0,
            batch: NotificationBatch::default(),
        }
    }

    /// Queues an answer, waiting for room in the writer's queue (backpressure:
    /// meanwhile nothing more is read). Never drops it while the write side is
    /// open. `Stop` on a local close.
    async fn reply(&mut self, line: Vec<u8>) -> Flow {
        match self.peer.handle.tx.try_send(Out::Line(line)) {
            Ok(()) => Flow::Continue,
            Err(TrySendError::Closed(_)) => {
                debug!("the write side is closed: an answer is dropped");
                Flow::Continue
            }
            Err(TrySendError::Full(out)) => {
                trace!("outgoing queue full: the reader waits");
                self.flush_notifications();
                tokio::select! {
                    biased;
                    () = self.inner.local_close.cancelled() => Flow::Stop,
                    sent = self.peer.handle.tx.send(out) => {
                        if sent.is_err() {
                            debug!("the write side is closed: an answer is dropped");
                        }
                        Flow::Continue
                    }
                }
            }
        }
    }

    /// Takes `n` permits for incoming requests, waiting (backpressure) while
    /// too many are in flight. `None` on a local close.
    async fn incoming_permits(&mut self, n: usize) -> Option<OwnedSemaphorePermit> {
        let permits = Arc::clone(&self.inner.incoming_permits);
        let n = n.min(self.inner.config.max_incoming_requests) as u32;
        if let Ok(permit) = Arc::clone(&permits).try_acquire_many_owned(n) {
            return Some(permit);
        }
        trace!("too many incoming requests in flight: the reader waits");
        self.flush_notifications();
        tokio::select! {
            biased;
            () = self.inner.local_close.cancelled() => None,
            permit = permits.acquire_many_owned(n) => permit.ok(),
        }
    }

    /// At the end of input, no answer to our pending requests can come: they
    /// fail (see `Inner::read_ended`), and, while the write side is open, the
    /// peer is told with `$/cancelRequest` for each (when
    /// `send_cancel_on_drop` is on), so it can withdraw what it shows — e.g.
    /// an approval question.
    async fn cancel_unanswerable(&mut self) {
        if !self.inner.config.send_cancel_on_drop || self.inner.write_refused.load(Ordering::Acquire) {
            return;
        }
        let mut ids = self.inner.pending_ids();
        ids.sort_unstable();
        for id in ids {
            debug!(id, "end of input: sending $/cancelRequest for an unanswerable request");
            let style = self.inner.config.cancel_style;
            if let Ok(line) = encode_notification(style.method(), &style.params(serde_json::json!(id)))
                && let Flow::Stop = self.reply(line).await
            {
                return;
            }
        }
    }

    /// Whether a request for `method` runs a handler (and so takes a permit).
    fn runs_handler(&self, method: &str) -> bool {
        method != self.inner.config.cancel_style.method()
            && (self.router.requests.contains_key(method) || self.router.fallback.is_some())
    }

    pub(crate) async fn run<R: AsyncRead + Unpin>(mut self, mut reader: R) -> ReaderEnd {
        let inner = Arc::clone(&self.inner);
        let _guard = ReaderGuard(&inner);
        let mut framer = LineFramer::new(inner.config.max_line_bytes);
        loop {
            while let Some(frame) = framer.next_frame() {
                match frame {
                    Frame::Line(line) => {
                        trace!(line = %String::from_utf8_lossy(line), "<-");
                        let flow = if self.lines {
                            self.queue_line(Some(&String::from_utf8_lossy(line))).await
                        } else {
                            self.handle_line(line).await
                        };
                        if let Flow::Stop = flow {
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
                        // In line mode the peer would not understand an answer.
                        if !self.lines
                            && let Flow::Stop = self.reply(encode_error(None, &error)).await
                        {
                            return ReaderEnd::Stopped;
                        }
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
                    if let Flow::Stop = self.end_of_lines().await {
                        return ReaderEnd::Stopped;
                    }
                    self.flush_notifications();
                    self.cancel_unanswerable().await;
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
                    if let Flow::Stop = self.end_of_lines().await {
                        return ReaderEnd::Stopped;
                    }
                    self.flush_notifications();
                    self.cancel_unanswerable().await;
                    inner.read_ended(|| format!("read error: {e}"));
                    return ReaderEnd::Error(e);
                }
            }
        }
    }

    async fn handle_line(&mut self, line: &[u8]) -> Flow {
        // The common case first, read once: a plain notification whose
        // params decode. Anything else, or params that do not decode, goes
        // to the full classifier, which decides exactly as if this were not here.
        if let Some((method, params)) = plain_notification(line)
            && method != self.inner.config.cancel_style.method()
            && let Some((decode, handler)) = self.notifications.get(method)
            && let Ok(Ok(decoded)) = std::panic::catch_unwind(AssertUnwindSafe(|| decode(params)))
        {
            let handler = *handler;
            return self.queue(Job::Notify(handler, decoded)).await;
        }
        match classify(line) {
            Incoming::Single(Message::Notification { method, params }) => {
                self.handle_notification(&method, params).await
            }
            Incoming::Single(Message::Request { id, method, params }) => {
                let permit = if self.runs_handler(&method) {
                    match self.incoming_permits(1).await {
                        Some(permit) => Some(permit),
                        None => return Flow::Stop,
                    }
                } else {
                    None
                };
                match self.start_request(id, &method, params) {
                    Started::Ready(line) => self.reply(line).await,
                    Started::Running(fut) => {
                        // Holds a handle: the write side stays open until it has
                        // answered; holds the permit until the answer is queued.
                        let peer = self.peer.clone();
                        self.start(move || {
                            tokio::spawn(async move {
                                if let Some(line) = fut.await {
                                    send_answer(&peer, line).await;
                                }
                                drop(permit);
                            });
                        });
                        Flow::Continue
                    }
                }
            }
            Incoming::Single(Message::Response { id, payload }) => {
                self.deliver_response(id, payload);
                Flow::Continue
            }
            Incoming::Invalid(error) => {
                debug!(code = error.code, error = %error, "invalid message");
                self.report_invalid(&error, line);
                self.reply(encode_error(None, &error)).await
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
        // The batch's handlers run together: take their permits up front
        // (at most the bound, so a big batch cannot wait for itself).
        let handlers = items
            .iter()
            .filter(|item| matches!(item, Ok(Message::Request { method, .. }) if self.runs_handler(method)))
            .count();
        let permit = if handlers > 0 {
            match self.incoming_permits(handlers).await {
                Some(permit) => Some(permit),
                None => return Flow::Stop,
            }
        } else {
            None
        };
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
                Ok(Message::Response { id, payload }) => self.deliver_response(id, payload),
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
            let limit = self.inner.max_outgoing.load(Ordering::Acquire);
            return self.reply(encode_batch(&fit_batch(ready, limit))).await;
        }
        let peer = self.peer.clone();
        self.start(move || {
            tokio::spawn(async move {
                let (slots, futs): (Vec<usize>, Vec<_>) = running.into_iter().unzip();
                let results = futures::future::join_all(futs).await;
                for (slot, result) in slots.into_iter().zip(results) {
                    match result {
                        Some(line) => ready[slot] = line,
                        None => return, // closed locally: nothing to answer
                    }
                }
                let limit = peer.handle.inner.max_outgoing.load(Ordering::Acquire);
                send_answer(&peer, encode_batch(&fit_batch(ready, limit))).await;
                drop(permit);
            });
        });
        Flow::Continue
    }

    /// Starts a request's handler: now, or in in-order mode once the
    /// notifications read before it were handled.
    fn start(&mut self, spawn: impl FnOnce() + Send + 'static) {
        if self.inner.config.in_order {
            self.batch.jobs.push(Job::Then(Box::new(spawn)));
        } else {
            spawn();
        }
    }

    /// Resolves the request a response answers: now, or in in-order mode
    /// once the notifications read before it were handled.
    fn deliver_response(&mut self, id: Option<Id>, payload: Payload<'_>) {
        if self.inner.config.in_order {
            let inner = Arc::clone(&self.inner);
            let payload = OwnedPayload::from(payload);
            self.batch.jobs.push(Job::Then(Box::new(move || inner.deliver_response(id, payload))));
        } else {
            self.inner.deliver_response(id, OwnedPayload::from(payload));
        }
    }

    async fn handle_notification(&mut self, method: &str, params: Option<&RawValue>) -> Flow {
        if method == self.inner.config.cancel_style.method() {
            self.handle_cancel(params);
            return Flow::Continue;
        }
        let Some((decode, handler)) = self.notifications.get(method) else {
            debug!(method, "ignoring a notification with no handler");
            return Flow::Continue;
        };
        let handler = *handler;
        // A params type's own `Deserialize` may panic: that skips this
        // notification, as a handler's panic does, and not the connection.
        match std::panic::catch_unwind(AssertUnwindSafe(|| decode(params.map(RawValue::get)))) {
            Ok(Ok(decoded)) => self.queue(Job::Notify(handler, decoded)).await,
            Ok(Err(e)) => {
                warn!(method, error = %e, "skipping a notification whose params do not decode");
                Flow::Continue
            }
            Err(_) => {
                error!(method, "decoding a notification's params panicked");
                Flow::Continue
            }
        }
    }

    /// Line mode: tells the line handler the input ended (`None`).
    async fn end_of_lines(&mut self) -> Flow {
        if self.lines { self.queue_line(None).await } else { Flow::Continue }
    }

    /// Line mode: queues `line` for the line handler.
    async fn queue_line(&mut self, line: Option<&str>) -> Flow {
        // The permit first: waiting for one hands the batch (and its text) over.
        if let Flow::Stop = self.take_permit().await {
            return Flow::Stop;
        }
        let batch = &mut self.batch;
        let range = line.map(|l| {
            if batch.text.capacity() == 0 {
                batch.text.reserve(crate::framing::READ_CHUNK);
            }
            let start = batch.text.len();
            batch.text.push_str(l);
            start..batch.text.len()
        });
        batch.jobs.push(Job::Line(range));
        Flow::Continue
    }

    /// Queues a job for the dispatcher, taking a permit.
    async fn queue(&mut self, job: Job) -> Flow {
        if let Flow::Stop = self.take_permit().await {
            return Flow::Stop;
        }
        self.batch.jobs.push(job);
        Flow::Continue
    }

    /// Takes a notification permit, waiting for one when the dispatcher
    /// lags (after handing it the batch so far).
    async fn take_permit(&mut self) -> Flow {
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
        let style = self.inner.config.cancel_style;
        let decoded = crate::router::decode_params::<serde_json::Map<String, serde_json::Value>>(params)
            .and_then(|mut map| {
                let id = map.remove(style.id_field()).unwrap_or(serde_json::Value::Null);
                serde_json::from_value::<Id>(id)
            });
        match decoded {
            Ok(id) => {
                if self.inner.cancel_incoming(&id) {
                    debug!(%id, "the peer cancelled a request");
                } else {
                    debug!(%id, "cancel for a request not in flight");
                }
            }
            Err(e) => warn!(error = %e, method = style.method(), "malformed cancel params"),
        }
    }

    fn start_request(&self, id: Id, method: &str, params: Option<&RawValue>) -> Started {
        if method == self.inner.config.cancel_style.method() {
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
                Some(Ok(line)) => Some(fit_answer(&id, line, inner.max_outgoing.load(Ordering::Acquire))),
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

/// Queues the answer of a running request, waiting for room (backpressure to
/// whoever produced it); dropped only if the write side is closed.
async fn send_answer(peer: &Peer, line: Vec<u8>) {
    if peer.handle.tx.send(Out::Line(line)).await.is_err() {
        debug!("the write side is closed: an answer is dropped");
    }
}

/// `line` (an answer to `id`), or a `-32603` error in its place if it would
/// exceed `limit` bytes: the request is still answered, with a message the
/// peer accepts.
fn fit_answer(id: &Id, line: Vec<u8>, limit: usize) -> Vec<u8> {
    let bytes = line.len().saturating_sub(1);
    if bytes <= limit {
        return line;
    }
    warn!(%id, bytes, limit, "an answer is over the peer's line limit: answering an error instead");
    encode_error(Some(id), &too_large(bytes, limit))
}

fn too_large(bytes: usize, limit: usize) -> ErrorObject {
    ErrorObject::internal("the answer is larger than the peer accepts")
        .with_data(format!("{bytes} bytes, over the limit of {limit} bytes per line"))
}

/// The answers of one batch, with the largest ones replaced by `-32603`
/// errors until the batch line fits in `limit` bytes.
fn fit_batch(mut answers: Vec<Vec<u8>>, limit: usize) -> Vec<Vec<u8>> {
    // `[` + `]` + commas + each element without its newline.
    let total =
        |answers: &[Vec<u8>]| 1 + answers.iter().map(|a| a.len().saturating_sub(1) + 1).sum::<usize>();
    let mut order: Vec<usize> = (0..answers.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(answers[i].len()));
    for i in order {
        let bytes = total(&answers);
        if bytes <= limit {
            break;
        }
        let id = serde_json::from_slice::<serde_json::Value>(&answers[i])
            .ok()
            .and_then(|v| serde_json::from_value::<Id>(v.get("id")?.clone()).ok());
        warn!(bytes, limit, "a batch answer is over the peer's line limit: answering errors instead");
        answers[i] = encode_error(id.as_ref(), &too_large(answers[i].len().saturating_sub(1), limit));
    }
    answers
}
