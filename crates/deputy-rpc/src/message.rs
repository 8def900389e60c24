//! Classifying one line into a JSON-RPC message, and encoding outgoing ones.
//!
//! [`classify`] parses only the envelope: `params`, `result` and `error` stay
//! borrowed [`RawValue`]s, decoded later into the handler's own types.
//!
//! Rules, in order:
//! 1. Invalid UTF-8, or not exactly one JSON value → `-32700`, id `null`.
//! 2. An array is a batch: `[]` → one `-32600`; otherwise each element is classified
//!    by rules 3–4 on its own (an element that is not an object → `-32600`).
//! 3. Anything but an object or array → `-32600`, id `null`.
//! 4. An object (unknown members are ignored, a duplicated member → `-32600`):
//!    - `jsonrpc`, if present, must be the string `"2.0"` (it may be absent);
//!    - `method` (a string) and `id` → request; `method` alone → notification;
//!    - `id` (or `"id": null`) with exactly one of `result` / `error`, and no
//!      `method` → response;
//!    - anything else → `-32600`, id `null`.
//!
//!    A request id must be an `i64` or a string; `null`, fractions, exponents and
//!    out-of-range numbers → `-32600`. `"params": null` is the same as no params.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::ErrorObject;
use crate::id::Id;

/// One classified JSON-RPC message, borrowing from the line it came from.
#[derive(Debug, Clone)]
pub enum Message<'a> {
    /// A call that expects an answer.
    Request {
        /// The id to echo in the response.
        id: Id,
        /// The method name.
        method: Cow<'a, str>,
        /// The raw params (`None` if absent or `null`).
        params: Option<&'a RawValue>,
    },
    /// A call without an answer.
    Notification {
        /// The method name.
        method: Cow<'a, str>,
        /// The raw params (`None` if absent or `null`).
        params: Option<&'a RawValue>,
    },
    /// An answer to one of our requests.
    Response {
        /// The id it answers; `None` for `"id": null` (the peer could not read a message).
        id: Option<Id>,
        /// The `result` or `error` member, raw.
        payload: Payload<'a>,
    },
}

/// The body of a response, undecoded.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// The `result` member.
    Result(&'a RawValue),
    /// The `error` member (normally an [`ErrorObject`]).
    Error(&'a RawValue),
}

/// What one line turned out to be.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// One valid message.
    Single(Message<'a>),
    /// A non-empty batch: each element valid or the error it must be answered with.
    Batch(Vec<Result<Message<'a>, ErrorObject>>),
    /// An invalid line, to be answered with this error and id `null`.
    Invalid(ErrorObject),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "de_str")]
    jsonrpc: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_raw")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "de_str")]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "de_raw")]
    params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "de_raw")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "de_raw")]
    error: Option<&'a RawValue>,
}

/// Present-aware raw value: `"x": null` is `Some("null")`, absence is `None`.
fn de_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// A string member, borrowed when it has no escapes.
fn de_str<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct StrVisitor;
    impl<'de> Visitor<'de> for StrVisitor {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    d.deserialize_str(StrVisitor).map(Some)
}

fn first_non_ws(s: &str) -> Option<u8> {
    s.bytes().find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// `-32700` if `s` is not one valid JSON value, else `-32600` with `err`'s message.
fn data_error(s: &str, err: &serde_json::Error) -> ErrorObject {
    match serde_json::from_str::<IgnoredAny>(s) {
        Ok(_) => ErrorObject::invalid_request(err),
        Err(syntax) => ErrorObject::parse_error(syntax),
    }
}

fn error_for(s: &str, err: serde_json::Error) -> ErrorObject {
    match err.classify() {
        serde_json::error::Category::Data => data_error(s, &err),
        _ => ErrorObject::parse_error(err),
    }
}

/// The common shape of a notification, read without serde: one object
/// whose members are `jsonrpc` (exactly `"2.0"`, optional), `method` (a
/// string without escapes) and `params` (optional, any value), each once,
/// and nothing else; the method and the params' text (`None` if absent or
/// `null`) are returned. Anything else, including strings with escapes,
/// gives `None`, and the caller falls back to [`classify`].
///
/// The params are located, not validated: the caller must decode them (which
/// validates them) and fall back to [`classify`] if that fails. Whenever this
/// returns `Some` and the params decode, the line is valid JSON and
/// [`classify`] would give the same notification (the property tests in
/// `tests/props.rs` check it), so the line is scanned once instead of twice.
pub fn plain_notification(line: &[u8]) -> Option<(&str, Option<&str>)> {
    let text = std::str::from_utf8(line).ok()?;
    let s = text.as_bytes();
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let (mut jsonrpc, mut method, mut params) = (false, None, None);
    loop {
        let (key, next) = plain_string(text, skip_ws(s, i))?;
        i = skip_ws(s, next);
        if s.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(s, i + 1);
        match key {
            "jsonrpc" if !jsonrpc => {
                let (version, next) = plain_string(text, i)?;
                if version != "2.0" {
                    return None;
                }
                jsonrpc = true;
                i = next;
            }
            "method" if method.is_none() => {
                let (name, next) = plain_string(text, i)?;
                method = Some(name);
                i = next;
            }
            "params" if params.is_none() => {
                let end = value_end(s, i)?;
                params = Some(&text[i..end]);
                i = end;
            }
            _ => return None,
        }
        i = skip_ws(s, i);
        match s.get(i)? {
            b',' => i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    if skip_ws(s, i + 1) != s.len() {
        return None;
    }
    Some((method?, params.filter(|p| *p != "null")))
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// A string starting at `i` with no escapes and no control characters: its
/// content and the index after its closing quote.
fn plain_string(text: &str, i: usize) -> Option<(&str, usize)> {
    let s = text.as_bytes();
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let len = memchr::memchr(b'"', &s[i + 1..])?;
    let content = &s[i + 1..i + 1 + len];
    if content.iter().any(|&b| b == b'\\' || b < 0x20) {
        return None;
    }
    Some((&text[i + 1..i + 1 + len], i + len + 2))
}

/// Where the JSON value starting at `i` ends, found by matching brackets
/// outside strings; no validation (a value that is not JSON ends anywhere,
/// or nowhere: `None`).
fn value_end(s: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match *s.get(i)? {
            b'"' => {
                i = string_end(s, i + 1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'{' | b'[' => {
                depth += 1;
                i += 1;
            }
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'}' | b']' | b',' | b' ' | b'\t' | b'\r' | b'\n' if depth == 0 => {
                return (i > start).then_some(i);
            }
            _ => i += 1,
        }
    }
}

/// The index after the closing quote of the string whose content starts at `i`.
fn string_end(s: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += memchr::memchr2(b'"', b'\\', s.get(i..)?)?;
        if s[i] == b'"' {
            return Some(i + 1);
        }
        i += 2; // an escape: skip the escaped character
    }
}

/// Classifies one line (as yielded by the framer).
pub fn classify(line: &[u8]) -> Incoming<'_> {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => return Incoming::Invalid(ErrorObject::parse_error(format!("invalid UTF-8: {e}"))),
    };
    match first_non_ws(text) {
        Some(b'{') => match classify_object(text) {
            Ok(m) => Incoming::Single(m),
            Err(e) => Incoming::Invalid(e),
        },
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) if items.is_empty() => Incoming::Invalid(ErrorObject::invalid_request("empty batch")),
            Ok(items) => Incoming::Batch(items.into_iter().map(classify_element).collect()),
            Err(e) => Incoming::Invalid(error_for(text, e)),
        },
        _ => Incoming::Invalid(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => ErrorObject::invalid_request("a message must be a JSON object or array"),
            Err(e) => ErrorObject::parse_error(e),
        }),
    }
}

fn classify_element(raw: &RawValue) -> Result<Message<'_>, ErrorObject> {
    let text = raw.get();
    if first_non_ws(text) == Some(b'{') {
        classify_object(text)
    } else {
        Err(ErrorObject::invalid_request("a batch element must be a JSON object"))
    }
}

fn classify_object(text: &str) -> Result<Message<'_>, ErrorObject> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| error_for(text, e))?;
    if let Some(v) = &env.jsonrpc
        && v != "2.0"
    {
        return Err(ErrorObject::invalid_request(format!(
            "unsupported jsonrpc version {v:?} (expected \"2.0\")"
        )));
    }
    let params = env.params.filter(|p| p.get() != "null");
    match (env.method, env.id) {
        (Some(method), Some(id)) => Ok(Message::Request { id: parse_id(id)?, method, params }),
        (Some(method), None) => Ok(Message::Notification { method, params }),
        (None, Some(id)) => {
            let payload = match (env.result, env.error) {
                (Some(r), None) => Payload::Result(r),
                (None, Some(e)) => Payload::Error(e),
                (Some(_), Some(_)) => {
                    return Err(ErrorObject::invalid_request(
                        "a response must not have both `result` and `error`",
                    ));
                }
                (None, None) => {
                    return Err(ErrorObject::invalid_request(
                        "a message with `id` needs `method`, `result` or `error`",
                    ));
                }
            };
            let id = if id.get() == "null" { None } else { Some(parse_id(id)?) };
            Ok(Message::Response { id, payload })
        }
        (None, None) => Err(ErrorObject::invalid_request("a message needs `method` or `id`")),
    }
}

fn parse_id(raw: &RawValue) -> Result<Id, ErrorObject> {
    serde_json::from_str(raw.get())
        .map_err(|e| ErrorObject::invalid_request(format!("invalid id {}: {e}", raw.get())))
}

// ---------------------------------------------------------------------------
// Encoding. Every function returns one complete line, `\n` included; the JSON is
// compact so it never contains a raw newline.

const JSONRPC: &[u8] = br#"{"jsonrpc":"2.0","#;

/// Appends `,"params":<params>` unless `params` serializes to `null`.
fn push_params<P: Serialize + ?Sized>(buf: &mut Vec<u8>, params: &P) -> serde_json::Result<()> {
    let mark = buf.len();
    buf.extend_from_slice(br#","params":"#);
    let start = buf.len();
    serde_json::to_writer(&mut *buf, params)?;
    if &buf[start..] == b"null" {
        buf.truncate(mark);
    }
    Ok(())
}

/// `{"jsonrpc":"2.0","id":<id>,"method":<method>,"params":<params>}\n`
pub(crate) fn encode_request<P: Serialize + ?Sized>(
    id: i64,
    method: &str,
    params: &P,
) -> serde_json::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(JSONRPC);
    buf.extend_from_slice(br#""id":"#);
    push_i64(&mut buf, id);
    buf.extend_from_slice(br#","method":"#);
    serde_json::to_writer(&mut buf, method)?;
    push_params(&mut buf, params)?;
    buf.extend_from_slice(b"}\n");
    Ok(buf)
}

/// `{"jsonrpc":"2.0","method":<method>,"params":<params>}\n`
pub(crate) fn encode_notification<P: Serialize + ?Sized>(
    method: &str,
    params: &P,
) -> serde_json::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(JSONRPC);
    buf.extend_from_slice(br#""method":"#);
    serde_json::to_writer(&mut buf, method)?;
    push_params(&mut buf, params)?;
    buf.extend_from_slice(b"}\n");
    Ok(buf)
}

fn push_id(buf: &mut Vec<u8>, id: Option<&Id>) {
    buf.extend_from_slice(br#""id":"#);
    match id {
        None => buf.extend_from_slice(b"null"),
        Some(Id::Integer(n)) => push_i64(buf, *n),
        // Serializing a string into a Vec cannot fail.
        Some(Id::String(s)) => serde_json::to_writer(&mut *buf, s).expect("string serializes"),
    }
}

/// `{"jsonrpc":"2.0","id":<id>,"result":<result>}\n`
pub(crate) fn encode_result<R: Serialize + ?Sized>(id: &Id, result: &R) -> serde_json::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(JSONRPC);
    push_id(&mut buf, Some(id));
    buf.extend_from_slice(br#","result":"#);
    serde_json::to_writer(&mut buf, result)?;
    buf.extend_from_slice(b"}\n");
    Ok(buf)
}

/// `{"jsonrpc":"2.0","id":<id or null>,"error":<error>}\n`
pub(crate) fn encode_error(id: Option<&Id>, error: &ErrorObject) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(JSONRPC);
    push_id(&mut buf, id);
    buf.extend_from_slice(br#","error":"#);
    // An ErrorObject (strings, an integer and a serde_json::Value) always serializes.
    serde_json::to_writer(&mut buf, error).expect("ErrorObject serializes");
    buf.extend_from_slice(b"}\n");
    buf
}

/// Joins complete response lines into one batch line `[a,b,...]\n`.
pub(crate) fn encode_batch(lines: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = lines.iter().map(Vec::len).sum();
    let mut buf = Vec::with_capacity(total + 2);
    buf.push(b'[');
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(line));
    }
    buf.extend_from_slice(b"]\n");
    buf
}

fn push_i64(buf: &mut Vec<u8>, n: i64) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;

    fn invalid_code(line: &str) -> i64 {
        match classify(line.as_bytes()) {
            Incoming::Invalid(e) => e.code,
            other => panic!("{line}: expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn classifies_by_keys() {
        match classify(br#"{"jsonrpc":"2.0","id":-7,"method":"m","params":{"a":1}}"#) {
            Incoming::Single(Message::Request { id, method, params }) => {
                assert_eq!(id, Id::Integer(-7));
                assert_eq!(method, "m");
                assert!(matches!(method, Cow::Borrowed(_)));
                assert_eq!(params.unwrap().get(), r#"{"a":1}"#);
            }
            other => panic!("{other:?}"),
        }
        match classify(br#"{"method":"n","params":null}"#) {
            Incoming::Single(Message::Notification { method, params }) => {
                assert_eq!(method, "n");
                assert!(params.is_none());
            }
            other => panic!("{other:?}"),
        }
        match classify(br#"{"id":"x","result":null}"#) {
            Incoming::Single(Message::Response { id: Some(Id::String(s)), payload: Payload::Result(r) }) => {
                assert_eq!(s, "x");
                assert_eq!(r.get(), "null");
            }
            other => panic!("{other:?}"),
        }
        match classify(br#"{"id":null,"error":{"code":1,"message":"m"}}"#) {
            Incoming::Single(Message::Response { id: None, payload: Payload::Error(_) }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_messages() {
        assert_eq!(invalid_code("{"), codes::PARSE_ERROR);
        assert_eq!(invalid_code(r#"{"method":5, x"#), codes::PARSE_ERROR);
        assert_eq!(invalid_code("{}{}"), codes::PARSE_ERROR);
        assert_eq!(invalid_code("[]"), codes::INVALID_REQUEST);
        assert_eq!(invalid_code("42"), codes::INVALID_REQUEST);
        assert_eq!(invalid_code("{}"), codes::INVALID_REQUEST);
        assert_eq!(invalid_code(r#"{"method":5}"#), codes::INVALID_REQUEST);
        assert_eq!(invalid_code(r#"{"method":"m","id":1.5}"#), codes::INVALID_REQUEST);
        assert_eq!(invalid_code(r#"{"method":"m","id":null}"#), codes::INVALID_REQUEST);
        assert_eq!(invalid_code(r#"{"id":1,"result":1,"error":{}}"#), codes::INVALID_REQUEST);
        assert_eq!(invalid_code(r#"{"id":1,"id":2,"method":"m"}"#), codes::INVALID_REQUEST);
        assert_eq!(invalid_code(r#"{"jsonrpc":"1.0","method":"m"}"#), codes::INVALID_REQUEST);
        match classify(b"\xff") {
            Incoming::Invalid(e) => assert_eq!(e.code, codes::PARSE_ERROR),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches() {
        match classify(br#"[{"method":"n"},1,[],{"id":1,"method":"m"}]"#) {
            Incoming::Batch(items) => {
                assert_eq!(items.len(), 4);
                assert!(matches!(items[0], Ok(Message::Notification { .. })));
                assert_eq!(items[1].as_ref().unwrap_err().code, codes::INVALID_REQUEST);
                assert_eq!(items[2].as_ref().unwrap_err().code, codes::INVALID_REQUEST);
                assert!(matches!(items[3], Ok(Message::Request { .. })));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(invalid_code(r#"[{"method":"n"},"#), codes::PARSE_ERROR);
    }

    #[test]
    fn encodings_are_compact_single_lines() {
        let line = encode_request(3, "a\nb", &serde_json::json!({"x": "1\n2"})).unwrap();
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"a\\nb\",\"params\":{\"x\":\"1\\n2\"}}\n"
        );
        let line = encode_notification("n", &()).unwrap();
        assert_eq!(line, b"{\"jsonrpc\":\"2.0\",\"method\":\"n\"}\n");
        let line = encode_result(&Id::from("i"), &5).unwrap();
        assert_eq!(line, b"{\"jsonrpc\":\"2.0\",\"id\":\"i\",\"result\":5}\n");
        let line = encode_error(None, &ErrorObject::new(-1, "m"));
        assert_eq!(line, b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-1,\"message\":\"m\"}}\n");
        let batch = encode_batch(&[b"{\"a\":1}\n".to_vec(), b"{\"b\":2}\n".to_vec()]);
        assert_eq!(batch, b"[{\"a\":1},{\"b\":2}]\n");
    }
}
