//! Error codes, the wire error object and the caller-side error type.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Standard JSON-RPC 2.0 error codes, plus LSP's `RequestCancelled`.
pub mod codes {
    /// Invalid JSON (or invalid UTF-8) was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON sent is not a valid request object (also used for oversized lines).
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params did not decode into what the handler expects.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error (for example a handler panicked or its result did not encode).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The request was cancelled (by `$/cancelRequest` or because the connection closed).
    pub const REQUEST_CANCELLED: i64 = -32800;
}

/// A JSON-RPC error object, as sent in the `error` member of a response.
///
/// Handlers return it to answer with an error; [`RpcError::Remote`] carries the one
/// the peer sent back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// The error code (see [`codes`]).
    pub code: i64,
    /// A short human readable description.
    pub message: String,
    /// Optional structured details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error with `code` and `message` and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        ErrorObject { code, message: message.into(), data: None }
    }

    /// Attaches `data`.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// `-32602` with `message`.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID_PARAMS, message)
    }

    /// `-32603` with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL_ERROR, message)
    }

    /// `-32601`, naming the method in the message.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(codes::METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    /// `-32700` ("Parse error") with the detail in `data`.
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::new(codes::PARSE_ERROR, "Parse error").with_data(detail.to_string())
    }

    /// `-32600` ("Invalid Request") with the detail in `data`.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::new(codes::INVALID_REQUEST, "Invalid Request").with_data(detail.to_string())
    }

    /// `-32800` ("Request cancelled").
    pub fn request_cancelled() -> Self {
        Self::new(codes::REQUEST_CANCELLED, "Request cancelled")
    }
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)?;
        match &self.data {
            None => Ok(()),
            Some(Value::String(s)) => write!(f, ": {s}"),
            Some(other) => write!(f, ": {other}"),
        }
    }
}

impl std::error::Error for ErrorObject {}

/// Why an outgoing request (or notification) failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The peer answered with an error object.
    #[error("the peer answered with an error: {0}")]
    Remote(ErrorObject),
    /// The connection closed (EOF, read/write error, or closed locally) before an
    /// answer arrived, or was already closed.
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// What closed it.
        reason: String,
    },
    /// No answer arrived within the timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The request was cancelled locally (its cancellation token fired).
    #[error("request cancelled")]
    Cancelled,
    /// The message would be a line longer than the peer accepts
    /// ([`PeerConfig::max_outgoing_bytes`](crate::PeerConfig::max_outgoing_bytes)):
    /// nothing was written.
    #[error("`{method}` is {bytes} bytes, over the peer's limit of {limit} bytes per line: not sent")]
    MessageTooLarge {
        /// The method of the request or notification.
        method: String,
        /// The length of its line, terminator excluded.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A line for [`Peer::send_line`](crate::Peer::send_line) holds a line
    /// break: nothing was written.
    #[error("the line holds a line break: not sent")]
    LineBreak,
    /// The params could not be serialized.
    #[error("failed to encode params: {0}")]
    Encode(#[source] serde_json::Error),
    /// The answer to `method` did not decode into the expected result type.
    #[error("failed to decode the response to `{method}`: {source}")]
    Decode {
        /// The method that was called.
        method: String,
        /// The serde error.
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_wire_form() {
        let e = ErrorObject::invalid_params("bad").with_data("missing field `x`");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":-32602,"message":"bad","data":"missing field `x`"}"#
        );
        let e = ErrorObject::internal("boom");
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"code":-32603,"message":"boom"}"#);
        assert_eq!(e.to_string(), "boom (code -32603)");
        assert_eq!(ErrorObject::method_not_found("x").to_string(), "Method not found: x (code -32601)");
    }

    #[test]
    fn rpc_error_messages_are_readable() {
        let e = RpcError::ConnectionClosed { reason: "the peer closed the connection (EOF)".into() };
        assert_eq!(e.to_string(), "connection closed: the peer closed the connection (EOF)");
        assert_eq!(
            RpcError::Timeout(Duration::from_millis(1500)).to_string(),
            "request timed out after 1.5s"
        );
        let e = RpcError::Remote(ErrorObject::parse_error("eof"));
        assert_eq!(e.to_string(), "the peer answered with an error: Parse error (code -32700): eof");
    }
}
