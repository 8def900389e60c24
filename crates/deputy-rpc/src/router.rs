//! The handler table.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::CANCEL_REQUEST_METHOD;
use crate::error::ErrorObject;
use crate::id::Id;
use crate::message::{encode_error, encode_result};
use crate::peer::Peer;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Decodes params and starts the handler; the future yields the complete response line.
pub(crate) type RequestFn =
    dyn Fn(Option<&RawValue>, RequestContext) -> Result<BoxFuture<Vec<u8>>, serde_json::Error> + Send + Sync;
/// Line mode: starts the line handler with one line (`None`: end of input).
pub(crate) type NotificationFn =
    dyn Fn(Option<&str>) -> Result<BoxFuture<()>, serde_json::Error> + Send + Sync;
/// A notification's params, decoded by the reader, for its handler.
pub(crate) type Decoded = Box<dyn Any + Send>;
/// Decodes a notification's params (raw JSON text), on the reader.
pub(crate) type DecodeFn = dyn Fn(Option<&str>) -> Result<Decoded, serde_json::Error> + Send + Sync;
/// Starts a notification's handler with what its decoder made, on the dispatcher.
pub(crate) type RunFn = dyn Fn(Decoded) -> BoxFuture<()> + Send + Sync;

/// A notification handler in two halves. The reader decodes (so a line is
/// read once, and a params text that is not JSON is found before the next
/// line is read); the dispatcher runs the handler, one at a time, in order.
pub(crate) struct NotificationHandler {
    pub(crate) decode: Box<DecodeFn>,
    pub(crate) run: Box<RunFn>,
}
/// Called by the dispatcher after each batch of notifications.
pub(crate) type BatchEndFn = dyn Fn() -> BoxFuture<()> + Send + Sync;
/// Starts the fallback handler for an unknown method.
pub(crate) type FallbackFn =
    dyn Fn(&str, Option<&RawValue>, RequestContext) -> BoxFuture<Vec<u8>> + Send + Sync;

/// What an incoming request's handler gets besides its params.
#[derive(Clone)]
pub struct RequestContext {
    /// The request's id.
    pub id: Id,
    /// A handle to the connection, to send requests or notifications back
    /// (it keeps the write side open while it lives).
    pub peer: Peer,
    pub(crate) cancel: CancellationToken,
}

impl RequestContext {
    /// Resolves when the request is cancelled: the peer sent `$/cancelRequest` for
    /// it, or the connection was closed locally ([`Peer::close`], abort). End of
    /// input does not cancel it: the handler runs to completion and its answer is
    /// written. The handler's future is dropped at that point anyway; use this to
    /// stop work spawned elsewhere.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the request was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The request's cancellation token (a clone, cheap).
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("id", &self.id)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// Decodes params for a handler. Absent (or `null`) params decode as `null`, and if
/// that fails, as `{}`, so `()`, `Option<T>` and structs whose fields all have
/// defaults accept a call without params.
pub(crate) fn decode_params<P: DeserializeOwned>(params: Option<&RawValue>) -> Result<P, serde_json::Error> {
    decode_params_str(params.map(RawValue::get))
}

/// [`decode_params`] on raw JSON text.
pub(crate) fn decode_params_str<P: DeserializeOwned>(params: Option<&str>) -> Result<P, serde_json::Error> {
    match params {
        Some(text) => serde_json::from_str(text),
        None => serde_json::from_str("null").or_else(|e| serde_json::from_str("{}").map_err(|_| e)),
    }
}

/// The table of request and notification handlers, built before [`Peer::serve`].
///
/// Request handlers run concurrently, each in its own task, raced against the
/// request's cancellation. Notification handlers run one at a time, in arrival
/// order, on a dedicated task fed by a bounded queue. A request handler closure
/// is called by the reader (to decode params and build the future), a
/// notification handler closure by the dispatcher (with params the reader
/// decoded): keep them cheap and put the work in the returned future.
#[derive(Default)]
pub struct Router {
    pub(crate) requests: HashMap<&'static str, Box<RequestFn>>,
    pub(crate) notifications: HashMap<&'static str, NotificationHandler>,
    pub(crate) fallback: Option<Box<FallbackFn>>,
    pub(crate) batch_end: Option<Box<BatchEndFn>>,
    /// Line mode ([`Router::lines`]): the handler of every line.
    pub(crate) lines: Option<Box<NotificationFn>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut requests: Vec<_> = self.requests.keys().collect();
        requests.sort();
        let mut notifications: Vec<_> = self.notifications.keys().collect();
        notifications.sort();
        f.debug_struct("Router")
            .field("requests", &requests)
            .field("notifications", &notifications)
            .field("fallback", &self.fallback.is_some())
            .field("batch_end", &self.batch_end.is_some())
            .field("lines", &self.lines.is_some())
            .finish()
    }
}

fn check_method(method: &str, taken: bool) {
    assert!(method != CANCEL_REQUEST_METHOD, "`{CANCEL_REQUEST_METHOD}` is handled by deputy-rpc itself");
    assert!(!taken, "method `{method}` registered twice");
}

fn response_line<R: Serialize>(id: &Id, result: Result<R, ErrorObject>) -> Vec<u8> {
    match result {
        Ok(r) => encode_result(id, &r).unwrap_or_else(|e| {
            tracing::error!(%id, error = %e, "request handler result did not serialize");
            encode_error(Some(id), &ErrorObject::internal(format!("failed to encode the result: {e}")))
        }),
        Err(e) => encode_error(Some(id), &e),
    }
}

impl Router {
    /// An empty router: every request gets `-32601`, every notification is ignored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles requests for `method`. Params that do not decode into `P` are
    /// answered with `-32602` and the serde message in `data`; `Err(e)` from the
    /// handler is sent as the error object `e`.
    ///
    /// # Panics
    /// If `method` is already registered or is `$/cancelRequest`.
    pub fn request<P, R, F, Fut>(&mut self, method: &'static str, f: F) -> &mut Self
    where
        P: DeserializeOwned,
        R: Serialize,
        F: Fn(P, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ErrorObject>> + Send + 'static,
    {
        check_method(method, self.requests.contains_key(method));
        let handler = move |params: Option<&RawValue>, ctx: RequestContext| {
            let params: P = decode_params(params)?;
            let id = ctx.id.clone();
            let fut = f(params, ctx);
            Ok(Box::pin(async move { response_line(&id, fut.await) }) as BoxFuture<Vec<u8>>)
        };
        self.requests.insert(method, Box::new(handler));
        self
    }

    /// Handles notifications for `method`, one at a time and in order. Params that
    /// do not decode into `P` are logged (warn) and the notification is skipped.
    ///
    /// # Panics
    /// If `method` is already registered or is `$/cancelRequest`.
    pub fn notification<P, F, Fut>(&mut self, method: &'static str, f: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        check_method(method, self.notifications.contains_key(method));
        let decode = |params: Option<&str>| decode_params_str::<P>(params).map(|p| Box::new(p) as Decoded);
        let run = move |decoded: Decoded| {
            let params = decoded.downcast::<P>().expect("decoded by this handler's own decoder");
            Box::pin(f(*params)) as BoxFuture<()>
        };
        self.notifications
            .insert(method, NotificationHandler { decode: Box::new(decode), run: Box::new(run) });
        self
    }

    /// Runs `f` on the dispatcher each time it has handled the notifications of
    /// one batch (those found in one read from the peer), before it waits for
    /// more. A notification handler that buffers its work (say, events for a
    /// consumer on another thread) can hand it over here in bulk: one wake-up
    /// per batch instead of one per notification. Awaited like a handler, so it
    /// may apply backpressure.
    pub fn notification_batch_end<F, Fut>(&mut self, f: F) -> &mut Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.batch_end = Some(Box::new(move || Box::pin(f()) as BoxFuture<()>));
        self
    }

    /// Line mode, for peers whose newline-delimited JSON is not JSON-RPC 2.0
    /// (Codex's app-server leaves out `jsonrpc`; Claude Code's stream-json
    /// is not JSON-RPC at all), so that they get this crate's transport —
    /// framing, line limit, bounded queues with backpressure, ordered
    /// writes, half-close — while the caller speaks their protocol.
    ///
    /// `f` gets every line the peer writes, whole (terminator removed,
    /// invalid UTF-8 replaced by U+FFFD), as `Some(line)`, and `None` once at
    /// the end of input (EOF or a read error; not after a local close or an
    /// abort). It runs on the dispatcher like a notification handler: one at
    /// a time, in order, at most `notification_capacity` lines queued, then
    /// the reader waits (backpressure). The batch-end hook runs as usual.
    ///
    /// In line mode nothing is decoded and nothing is answered: request,
    /// notification and fallback handlers are never called, and a line over
    /// `max_line_bytes` is reported to [`PeerConfig::on_invalid`](crate::PeerConfig::on_invalid) and
    /// skipped (no `-32600`, which the peer would not understand). Write
    /// lines with [`Peer::send_line`](crate::Peer::send_line).
    pub fn lines<F, Fut>(&mut self, f: F) -> &mut Self
    where
        F: Fn(Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = move |line: Option<&str>| Ok(Box::pin(f(line.map(str::to_owned))) as BoxFuture<()>);
        self.lines = Some(Box::new(handler));
        self
    }

    /// Handles requests for methods with no handler (instead of `-32601`). It gets
    /// the method name and the raw params.
    pub fn fallback<R, F, Fut>(&mut self, f: F) -> &mut Self
    where
        R: Serialize,
        F: Fn(String, Option<Box<RawValue>>, RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ErrorObject>> + Send + 'static,
    {
        let handler = move |method: &str, params: Option<&RawValue>, ctx: RequestContext| {
            let id = ctx.id.clone();
            let fut = f(method.to_owned(), params.map(RawValue::to_owned), ctx);
            Box::pin(async move { response_line(&id, fut.await) }) as BoxFuture<Vec<u8>>
        };
        self.fallback = Some(Box::new(handler));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    struct AllDefault {
        #[serde(default)]
        a: u32,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Required {
        a: u32,
    }

    #[test]
    fn absent_params_decode_for_unit_option_and_default_structs() {
        decode_params::<()>(None).unwrap();
        assert_eq!(decode_params::<Option<u32>>(None).unwrap(), None);
        assert_eq!(decode_params::<AllDefault>(None).unwrap(), AllDefault::default());
        let err = decode_params::<Required>(None).unwrap_err();
        assert!(err.to_string().contains("invalid type: null"), "{err}");
        let raw = RawValue::from_string("{\"a\":\"x\"}".into()).unwrap();
        let err = decode_params::<Required>(Some(&raw)).unwrap_err();
        assert!(err.to_string().contains("invalid type: string"), "{err}");
    }
}
