//! What a valid line on an agent's stdout is (PROTOCOL.md §1): UTF-8, one
//! JSON value, a JSON-RPC 2.0 message (or a batch answer: an array of
//! them). Used by the driver to mark every line it reads, and by
//! `deputy check` for its stdout-purity check.

use serde_json::Value;

/// Parses one stdout line (without its `\n`; a trailing `\r` is tolerated,
/// as readers must) into a JSON-RPC message, or says why it is not one.
pub fn parse_message_line(line: &[u8]) -> Result<Value, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8 ({e})"))?;
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    check_envelope(&value)?;
    Ok(value)
}

/// Checks the JSON-RPC 2.0 envelope of a message: a request, a
/// notification, a response, or a non-empty array of them (the answer to a
/// batch). Params and results are not looked at (that is the schema's job).
pub fn check_envelope(value: &Value) -> Result<(), String> {
    match value {
        Value::Array(items) if items.is_empty() => Err("an empty array is not a JSON-RPC message".into()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if item.is_array() {
                    return Err(format!("batch element {i} is an array"));
                }
                check_envelope(item).map_err(|e| format!("batch element {i}: {e}"))?;
            }
            Ok(())
        }
        Value::Object(map) => {
            if map.get("jsonrpc") != Some(&Value::String("2.0".into())) {
                return Err("`jsonrpc` is not \"2.0\"".into());
            }
            let id_ok = |id: &Value, null_ok: bool| match id {
                Value::String(_) => true,
                Value::Number(n) => n.is_i64() || n.is_u64(),
                Value::Null => null_ok,
                _ => false,
            };
            if let Some(method) = map.get("method") {
                if !method.is_string() {
                    return Err("`method` is not a string".into());
                }
                if map.contains_key("result") || map.contains_key("error") {
                    return Err("a message with `method` also has `result` or `error`".into());
                }
                if let Some(id) = map.get("id")
                    && !id_ok(id, false)
                {
                    return Err(format!("request id {id} is not an integer or a string"));
                }
                if let Some(params) = map.get("params")
                    && !(params.is_object() || params.is_array())
                {
                    return Err("`params` is not an object or an array".into());
                }
                return Ok(());
            }
            let Some(id) = map.get("id") else {
                return Err("neither `method` nor `id`: not a request, notification or response".into());
            };
            if !id_ok(id, true) {
                return Err(format!("response id {id} is not an integer, a string or null"));
            }
            match (map.get("result"), map.get("error")) {
                (Some(_), None) => Ok(()),
                (None, Some(error)) => check_error_object(error),
                (Some(_), Some(_)) => Err("a response with both `result` and `error`".into()),
                (None, None) => Err("a response with neither `result` nor `error`".into()),
            }
        }
        other => Err(format!("a JSON {} is not a JSON-RPC message", json_kind(other))),
    }
}

fn check_error_object(error: &Value) -> Result<(), String> {
    let Value::Object(e) = error else { return Err("`error` is not an object".into()) };
    if !e.get("code").is_some_and(|c| c.is_i64()) {
        return Err("`error.code` is not an integer".into());
    }
    if !e.get("message").is_some_and(Value::is_string) {
        return Err("`error.message` is not a string".into());
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Shows a line for a person: at most `max` bytes, every terminal control
/// visible ([`visible`]) and invalid UTF-8 as `\xNN`, with a note when cut.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len() > max;
    let shown = &bytes[..bytes.len().min(max)];
    let mut s = String::with_capacity(shown.len());
    for chunk in shown.utf8_chunks() {
        push_visible(&mut s, chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut {
        s.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    s
}

/// Untrusted text (from the agent under test) on one line and safe for a
/// terminal: newlines, tabs, C0 and C1 controls, DEL and bidi controls
/// are shown escaped (`\n`, `\u{1b}`, `\u{202e}`), so an agent cannot steer
/// the terminal that shows a report about it.
pub fn visible(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    push_visible(&mut s, text);
    s
}

fn push_visible(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_four_kinds_and_batch_answers() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"event","params":{"id":"","msg":{"type":"shutdown_complete"}}}"#,
            r#"{"jsonrpc":"2.0","id":"a","result":null}"#,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":-32601,"message":"x"}}]"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r",
        ] {
            parse_message_line(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn names_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"starting up...", "not JSON"),
            (b"\xff\xfe{}", "not UTF-8"),
            (b"42", "a JSON number"),
            (b"[]", "empty array"),
            (br#"{"id":1,"result":1}"#, "`jsonrpc`"),
            (br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#, "request id"),
            (br#"{"jsonrpc":"2.0","id":1}"#, "neither `result` nor `error`"),
            (br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#, "both"),
            (br#"{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}"#, "error.code"),
            (br#"{"jsonrpc":"2.0","method":"event","params":3}"#, "params"),
            (br#"{"jsonrpc":"2.0","foo":1}"#, "neither `method` nor `id`"),
        ];
        for (line, want) in cases {
            let e = parse_message_line(line).unwrap_err();
            assert!(e.contains(want), "{}: {e}", excerpt(line, 80));
        }
    }

    #[test]
    fn excerpts_are_escaped_and_cut() {
        assert_eq!(excerpt(b"a\x1b[2Jb\xff\"\xc3\xbc\n", 80), "a\\u{1b}[2Jb\\xff\"\u{fc}\\n");
        assert_eq!(excerpt(b"abcdef", 3), "abc… (6 bytes)");
        assert_eq!(visible("a\u{202e}b\u{9b}c\r\nd"), "a\\u{202e}b\\u{9b}c\\r\\nd");
    }
}
