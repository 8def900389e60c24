//! Newline-delimited JSON-RPC 2.0 between two symmetric peers.
//!
//! `deputy-rpc` is Deputy's transport: one JSON value per line over any
//! [`AsyncRead`](tokio::io::AsyncRead)/[`AsyncWrite`](tokio::io::AsyncWrite) pair (a
//! child's stdio in production, [`tokio::io::duplex`] in tests), where both sides
//! send requests, notifications and responses. It knows nothing of agents.
//!
//! Why not jsonrpsee: its client drops the ids of requests the peer initiates, tears
//! the connection down on garbage or an unknown response id, and its `RpcModule` has
//! no notification dispatch, so it does not fit a bidirectional stdio peer. A small
//! own peer (a reader task, a writer task, a pending map and a handler table) does,
//! with exactly the edge-case behaviour below.
//!
//! # Example
//!
//! ```
//! use deputy_rpc::{CloseReason, Peer, PeerConfig, Router};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (left, right) = tokio::io::duplex(64 * 1024);
//! let (left_read, left_write) = tokio::io::split(left);
//! let (right_read, right_write) = tokio::io::split(right);
//!
//! // The server side answers "add" and may call back into the client.
//! let mut router = Router::new();
//! router.request("add", |(a, b): (i64, i64), _ctx| async move { Ok(a + b) });
//! let (server, server_conn) = Peer::serve(right_read, right_write, router, PeerConfig::default());
//!
//! let (client, client_conn) =
//!     Peer::serve(left_read, left_write, Router::new(), PeerConfig::default());
//! let sum: i64 = client.request("add", (2, 3)).await.unwrap();
//! assert_eq!(sum, 5);
//! client.notify("progress", serde_json::json!({"done": true})).await.unwrap(); // ignored: no route
//!
//! client.close(); // flushes, then the server reads EOF
//! assert!(matches!(client_conn.wait().await, CloseReason::Closed));
//! // A half-close: the server's read side ended, its write side is still open...
//! server.read_closed().await;
//! server.notify("bye", ()).await.unwrap();
//! // ...until its last handle goes (or `close()`).
//! drop(server);
//! assert!(matches!(server_conn.wait().await, CloseReason::Eof));
//! # }
//! ```
//!
//! # Semantics
//!
//! **Framing** ([`framing`]). One JSON value per `\n`-terminated line. A trailing
//! `\r` and a leading UTF-8 BOM (`EF BB BF`) are removed; lines that are empty or
//! hold only spaces/tabs are skipped. An unterminated last line at EOF is not
//! parsed: it is reported as [`CloseReason::EofWithPartialLine`]. Outgoing JSON
//! is always compact, so it never contains a raw newline.
//!
//! **Oversized lines.** A line longer than [`PeerConfig::max_line_bytes`] (16 MiB
//! by default; `\n` and a trailing `\r` are not counted) is dropped as it
//! arrives, answered with `-32600` and id `null`, and the lines after it are
//! handled at once, without waiting for more input. The read buffer never holds
//! more than `max_line_bytes + 1` bytes plus one 64 KiB read.
//!
//! **Classification** ([`message`]). Invalid UTF-8 or invalid JSON → `-32700`, id
//! `null`. An object with `method` and `id` is a request, with `method` alone a
//! notification, with `id` and exactly one of `result`/`error` a response;
//! anything else → `-32600`, id `null` (also: a duplicated member, `jsonrpc`
//! present but not `"2.0"`, an id that is `null`, fractional, an exponent, out of
//! the `i64` range, or not a number or string). `jsonrpc` may be absent. Ids are
//! echoed exactly.
//!
//! **Batches.** A JSON array is a batch: each element is handled as above, the
//! answers (one per request and per invalid element, in element order) go back as
//! one array once all are done; no answer if only notifications and responses were
//! in it. `[]` → one `-32600` (not an array).
//!
//! **Invalid input.** [`PeerConfig::on_invalid`], if set, is called on the
//! reader once for every line or batch element that is not a valid JSON-RPC
//! message — parse error, invalid UTF-8, invalid request, oversized line,
//! empty batch — with an [`InvalidInput`]: the error code, a message and an
//! excerpt (at most [`INVALID_EXCERPT_BYTES`] bytes) of the line. The answer
//! does not change. Valid traffic (unknown methods, responses with unknown
//! ids) never calls it. A host uses it to treat a peer writing garbage as a
//! protocol violation.
//!
//! **Dispatch.** Unknown method → `-32601`; params that do not decode into the
//! handler's type → `-32602` with the serde message in `data` (absent params decode
//! as `null`, then as `{}`); a handler that panics → `-32603`. Unknown
//! notifications are ignored (debug log); notifications whose params do not decode
//! are skipped (warn log). A response with an unknown id (late, cancelled, or not
//! ours) is logged at debug and ignored: never fatal, never answered. Incoming
//! requests run concurrently, each in its own task, so a slow one never blocks
//! other messages. Notifications run one at a time, in arrival order, on a
//! dispatcher task fed by a queue bounded by [`PeerConfig::notification_capacity`]:
//! a slow consumer holds the reader back (end-to-end backpressure). Params of
//! notifications are decoded on the reader, the handler runs on the dispatcher.
//! A notification of the plain shape (`jsonrpc`, `method` without escapes,
//! `params`, nothing else: what this crate writes) is read in one pass, the
//! params decoded straight from the line
//! ([`message::plain_notification`]); every other line, and one whose params
//! do not decode, goes through the full [`message::classify`], so the
//! outcome is the same either way. The reader hands the
//! notifications of each read to the dispatcher as one batch;
//! [`Router::notification_batch_end`] runs after each batch, so a handler that
//! buffers can pass its work on in bulk (one cross-thread wake-up per batch).
//!
//! **Flow control.** Every resource a peer can make this side hold is
//! bounded, and at the bound the reader stops reading (the peer's writes
//! block) instead of dropping anything: notifications read and not yet
//! handled ([`PeerConfig::notification_capacity`]), incoming requests in
//! flight ([`PeerConfig::max_incoming_requests`], default
//! [`DEFAULT_MAX_INCOMING_REQUESTS`]), and answers waiting for the writer —
//! including the reader's own error answers to garbage and invalid
//! messages, which are never dropped: every request gets exactly one answer.
//! A consequence of any fully bounded transport: two peers that each flood
//! the other with more requests than its bound while neither reads its
//! answers can stall each other; a host and an agent keep a handful in
//! flight. Outgoing lines over [`PeerConfig::max_outgoing_bytes`] (the
//! limit the peer announced) are never written: requests and notifications
//! fail with [`RpcError::MessageTooLarge`], an answer becomes a `-32603`
//! error saying so. The rules in one place: `src/reader.rs`.
//!
//! **Outgoing.** [`Peer::request`] and [`Peer::notify`] serialize their params at
//! the call, then wait for room in the writer's queue, bounded by
//! [`PeerConfig::outgoing_capacity`] (a stalled peer applies backpressure). One
//! writer task writes through a `BufWriter` and flushes whenever its queue is
//! empty. [`Peer::flush`] resolves once everything queued before it has been
//! written and flushed. Request ids are increasing integers from 1.
//!
//! **Cancellation.** An outgoing call that is dropped, whose
//! [`RequestOptions::cancel`] token fires, or that times out, removes its pending
//! entry and, if it had been queued and [`PeerConfig::send_cancel_on_drop`] is on,
//! sends `$/cancelRequest {"id": <id>}` (or, with [`CancelStyle::Acp`],
//! `$/cancel_request {"requestId": <id>}`). An incoming `$/cancelRequest` (handled
//! here, not by a route) cancels that request's token: its handler future is
//! dropped and the request is answered `-32800`.
//!
//! **End of input is a half-close.** At EOF or a read error the read side ends
//! ([`Peer::read_closed`] resolves): every pending outgoing call fails at once
//! with [`RpcError::ConnectionClosed`] and new ones fail at once (no answer
//! can come); notifications already read are still delivered, in order;
//! incoming request handlers are **not** cancelled: they run to completion
//! and their answers are written; the write side stays open, so
//! [`Peer::notify`] still works.
//!
//! **The write side** is closed — the writer writes what is queued, flushes,
//! shuts the `AsyncWrite` down and drops it, so the other side sees EOF, then
//! [`Peer::write_closed`] resolves — only by [`Peer::close_write`] (a
//! half-close: reading goes on and pending calls can still be answered),
//! [`Peer::close`], a write error (pending calls fail; reading goes on), or
//! when every [`Peer`] handle is gone: the caller's clones, the one the reader
//! holds while it runs, and those of request handlers
//! ([`RequestContext::peer`]) and of notification handlers that captured one.
//!
//! **Close.** [`Peer::close`] closes both sides locally: it stops reading,
//! cancels incoming handlers (not answered), fails pending calls, drops
//! notifications not yet delivered, and closes the write side as above.
//! [`Peer::closed`] resolves when both sides are done. [`Connection::wait`]
//! resolves when both directions are done and the tasks have finished, and
//! says why ([`CloseReason`]: the first of read side ended, write error, local
//! close); [`Connection::abort`] stops the tasks at once, without flushing.
//!
//! **Logging.** Through `tracing` only (never stdout): every line in (`<-`) and out
//! (`->`) at trace level, protocol problems at debug or warn.

#![warn(missing_docs)]

pub mod framing;
pub mod message;

mod config;
mod dispatcher;
mod error;
mod id;
mod peer;
mod reader;
mod router;
mod writer;

pub use config::{
    CancelStyle, DEFAULT_MAX_INCOMING_REQUESTS, DEFAULT_MAX_LINE_BYTES, INVALID_EXCERPT_BYTES, InvalidInput,
    InvalidInputHook, PeerConfig, RequestOptions,
};
pub use error::{ErrorObject, RpcError, codes};
pub use id::Id;
pub use peer::{CloseReason, Connection, Peer};
pub use router::{RequestContext, Router};
pub use serde_json::value::RawValue;
pub use tokio_util::sync::CancellationToken;

/// The notification that cancels an incoming request: params `{"id": <id>}`
/// (with the default [`CancelStyle::Lsp`]).
pub const CANCEL_REQUEST_METHOD: &str = "$/cancelRequest";

/// The Agent Client Protocol's cancel notification: params `{"requestId":
/// <id>}` (with [`CancelStyle::Acp`]).
pub const ACP_CANCEL_REQUEST_METHOD: &str = "$/cancel_request";
