//! Settings of a connection and of one call, and what the invalid-input hook is told.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::ErrorObject;

/// Default for [`PeerConfig::max_line_bytes`]: 16 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Longest [`InvalidInput::excerpt`], in bytes.
pub const INVALID_EXCERPT_BYTES: usize = 200;

/// Default for [`PeerConfig::max_incoming_requests`].
pub const DEFAULT_MAX_INCOMING_REQUESTS: usize = 256;

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
    pub(crate) fn new(error: &ErrorObject, line: &[u8], line_bytes: usize) -> Self {
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

/// The spelling of the cancel notification ([`PeerConfig::cancel_style`]).
///
/// Both protocols Deputy speaks are JSON-RPC 2.0 over the same framing, but
/// they name the request-cancel notification differently; the peer sends
/// and recognises exactly one of them (the other is an ordinary, unknown
/// notification).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CancelStyle {
    /// `$/cancelRequest {"id": <id>}` (LSP's spelling; Deputy's protocol).
    #[default]
    Lsp,
    /// `$/cancel_request {"requestId": <id>}` (the Agent Client Protocol).
    Acp,
}

impl CancelStyle {
    /// The notification's method name.
    pub fn method(self) -> &'static str {
        match self {
            CancelStyle::Lsp => crate::CANCEL_REQUEST_METHOD,
            CancelStyle::Acp => crate::ACP_CANCEL_REQUEST_METHOD,
        }
    }

    /// The params field naming the cancelled request's id.
    pub fn id_field(self) -> &'static str {
        match self {
            CancelStyle::Lsp => "id",
            CancelStyle::Acp => "requestId",
        }
    }

    /// The cancel notification's params for `id`.
    pub(crate) fn params(self, id: serde_json::Value) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert(self.id_field().to_owned(), id);
        serde_json::Value::Object(map)
    }
}

/// Settings of one connection.
#[derive(Clone)]
pub struct PeerConfig {
    /// Longest accepted line, in bytes (terminator excluded). Default 16 MiB.
    pub max_line_bytes: usize,
    /// Capacity of the writer's queue, in messages. When it is full, senders wait
    /// (backpressure from a peer that does not read). Default 1024; at least 1.
    pub outgoing_capacity: usize,
    /// How many incoming requests may be in flight at once (handlers running,
    /// or answers waiting for room in the writer's queue). When it is reached,
    /// the reader stops reading until one is answered, so a peer that floods
    /// requests without reading the answers is slowed down through the pipe
    /// instead of growing memory. A batch counts as one request per element
    /// that runs a handler, up to this bound. Default
    /// [`DEFAULT_MAX_INCOMING_REQUESTS`]; at least 1.
    pub max_incoming_requests: usize,
    /// The longest line, in bytes (terminator excluded), this side may write:
    /// the limit the other side announced (for Deputy, `max_line_bytes` in
    /// `initialize`). A request or notification over it fails at the sender
    /// with [`RpcError::MessageTooLarge`](crate::RpcError::MessageTooLarge)
    /// and nothing is written; an answer over it is replaced by a `-32603`
    /// error saying so. Can be changed later with
    /// [`Peer::set_max_outgoing_bytes`](crate::Peer::set_max_outgoing_bytes).
    /// Default: none.
    pub max_outgoing_bytes: Option<usize>,
    /// Capacity of the queue between the reader and the in-order notification
    /// dispatcher. When it is full, the reader waits, so a slow notification
    /// consumer slows the peer down instead of growing memory. Default 1024; at least 1.
    pub notification_capacity: usize,
    /// Timeout of [`Peer::request`](crate::Peer::request) (and of
    /// [`Peer::request_with`](crate::Peer::request_with) when its options name
    /// none). Default: none.
    pub default_request_timeout: Option<Duration>,
    /// Whether an outgoing request dropped, cancelled or timed out after it was sent
    /// sends `$/cancelRequest` to the peer. Default true.
    pub send_cancel_on_drop: bool,
    /// How a request is cancelled on this connection: the method name and
    /// params of the cancel notification, sent for abandoned outgoing calls
    /// and recognised for incoming ones. Default [`CancelStyle::Lsp`]
    /// (`$/cancelRequest {"id"}`, Deputy's own protocol); the Agent Client
    /// Protocol spells it [`CancelStyle::Acp`] (`$/cancel_request
    /// {"requestId"}`).
    pub cancel_style: CancelStyle,
    /// Hand responses and incoming requests over in arrival order with the
    /// notifications: a response resolves its request only after every
    /// notification read before it was handled, and a request's handler
    /// starts only after them. For protocols where a request or a response
    /// refers to what earlier notifications said (ACP's `session/prompt`
    /// answer ends the turn its `session/update`s streamed; a permission
    /// request names a tool call announced just before). Costs a hop through
    /// the dispatcher per response and request. Default false: responses
    /// are delivered by the reader at once, requests start at once.
    pub in_order: bool,
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
            .field("max_incoming_requests", &self.max_incoming_requests)
            .field("max_outgoing_bytes", &self.max_outgoing_bytes)
            .field("default_request_timeout", &self.default_request_timeout)
            .field("send_cancel_on_drop", &self.send_cancel_on_drop)
            .field("cancel_style", &self.cancel_style)
            .field("in_order", &self.in_order)
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
            max_incoming_requests: DEFAULT_MAX_INCOMING_REQUESTS,
            max_outgoing_bytes: None,
            default_request_timeout: None,
            send_cancel_on_drop: true,
            cancel_style: CancelStyle::Lsp,
            in_order: false,
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

/// Per-call options of [`Peer::request_with`](crate::Peer::request_with).
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Fails the call with [`RpcError::Timeout`](crate::RpcError::Timeout) after
    /// this long (`None`: the peer's default timeout, if any).
    pub timeout: Option<Duration>,
    /// Fails the call with [`RpcError::Cancelled`](crate::RpcError::Cancelled)
    /// when this token fires.
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
