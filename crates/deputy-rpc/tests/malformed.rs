//! Table-driven: malformed (and merely unusual) inputs and the exact answer each gets.

mod common;

use common::raw_peer;
use deputy_rpc::{ErrorObject, PeerConfig, Router};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug)]
enum Expect {
    /// No answer at all.
    Silence,
    /// One error response: (code, id).
    Error(i64, Value),
    /// One batch answer: (code, id) per element.
    Batch(Vec<(i64, Value)>),
}

use Expect::{Batch, Error, Silence};

const PARSE: i64 = -32700;
const INVALID: i64 = -32600;
const NOT_FOUND: i64 = -32601;
const PARAMS: i64 = -32602;

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

fn router() -> Router {
    let mut r = Router::new();
    r.request("add", |p: Add, _ctx| async move { Ok::<_, ErrorObject>(p.a + p.b) })
        .request("echo", |v: Value, _ctx| async move { Ok(v) })
        .notification("n", |_: Value| async {});
    r
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let null = Value::Null;
    let mut cases: Vec<(&'static str, Vec<u8>, Expect)> = vec![
        // --- not JSON: -32700, id null
        ("unterminated object", b"{".to_vec(), Error(PARSE, null.clone())),
        (
            "truncated request",
            br#"{"jsonrpc":"2.0","method":"add","params":[1,2]"#.to_vec(),
            Error(PARSE, null.clone()),
        ),
        ("bare words", b"not json".to_vec(), Error(PARSE, null.clone())),
        ("two values on one line", br#"{"a":1}{"b":2}"#.to_vec(), Error(PARSE, null.clone())),
        ("value then garbage", br#"{"id":1,"method":"echo"}garbage"#.to_vec(), Error(PARSE, null.clone())),
        ("trailing comma", br#"{"method":"add",}"#.to_vec(), Error(PARSE, null.clone())),
        ("single quotes", b"{'id':1}".to_vec(), Error(PARSE, null.clone())),
        ("NaN", b"NaN".to_vec(), Error(PARSE, null.clone())),
        ("invalid UTF-8", b"\xff\xfe".to_vec(), Error(PARSE, null.clone())),
        (
            "invalid UTF-8 inside a string",
            b"{\"id\":1,\"method\":\"echo\",\"params\":\"\xc3\x28\"}".to_vec(),
            Error(PARSE, null.clone()),
        ),
        ("type error before a syntax error", br#"{"id":1,"method":5,"#.to_vec(), Error(PARSE, null.clone())),
        ("truncated batch", br#"[{"method":"n"},"#.to_vec(), Error(PARSE, null.clone())),
        ("unclosed array as id", br#"{"id":[1,"method":"echo"}"#.to_vec(), Error(PARSE, null.clone())),
        // --- JSON, but not a message: -32600, id null
        ("number", b"42".to_vec(), Error(INVALID, null.clone())),
        ("string", br#""hello""#.to_vec(), Error(INVALID, null.clone())),
        ("null", b"null".to_vec(), Error(INVALID, null.clone())),
        ("boolean", b"true".to_vec(), Error(INVALID, null.clone())),
        ("empty batch", b"[]".to_vec(), Error(INVALID, null.clone())),
        ("empty object", b"{}".to_vec(), Error(INVALID, null.clone())),
        ("only jsonrpc", br#"{"jsonrpc":"2.0"}"#.to_vec(), Error(INVALID, null.clone())),
        (
            "wrong jsonrpc version",
            br#"{"jsonrpc":"1.0","id":1,"method":"echo"}"#.to_vec(),
            Error(INVALID, null.clone()),
        ),
        (
            "numeric jsonrpc version",
            br#"{"jsonrpc":2.0,"id":1,"method":"echo"}"#.to_vec(),
            Error(INVALID, null.clone()),
        ),
        ("numeric method", br#"{"id":1,"method":5}"#.to_vec(), Error(INVALID, null.clone())),
        ("null method", br#"{"id":1,"method":null}"#.to_vec(), Error(INVALID, null.clone())),
        ("fractional id", br#"{"id":1.5,"method":"echo"}"#.to_vec(), Error(INVALID, null.clone())),
        ("exponent id", br#"{"id":1e3,"method":"echo"}"#.to_vec(), Error(INVALID, null.clone())),
        (
            "id above i64",
            br#"{"id":9223372036854775808,"method":"echo"}"#.to_vec(),
            Error(INVALID, null.clone()),
        ),
        (
            "id below i64",
            br#"{"id":-9223372036854775809,"method":"echo"}"#.to_vec(),
            Error(INVALID, null.clone()),
        ),
        ("null request id", br#"{"id":null,"method":"echo"}"#.to_vec(), Error(INVALID, null.clone())),
        ("array id", br#"{"id":[1],"method":"echo"}"#.to_vec(), Error(INVALID, null.clone())),
        ("object id", br#"{"id":{},"method":"echo"}"#.to_vec(), Error(INVALID, null.clone())),
        ("boolean id", br#"{"id":true,"method":"echo"}"#.to_vec(), Error(INVALID, null.clone())),
        ("duplicate id", br#"{"id":1,"method":"echo","id":2}"#.to_vec(), Error(INVALID, null.clone())),
        (
            "duplicate method",
            br#"{"id":1,"method":"echo","method":"add"}"#.to_vec(),
            Error(INVALID, null.clone()),
        ),
        (
            "result and error",
            br#"{"id":1,"result":1,"error":{"code":1,"message":"x"}}"#.to_vec(),
            Error(INVALID, null.clone()),
        ),
        ("id alone", br#"{"id":1}"#.to_vec(), Error(INVALID, null.clone())),
        ("result without id", br#"{"result":1}"#.to_vec(), Error(INVALID, null.clone())),
        ("error without id", br#"{"error":{"code":1,"message":"x"}}"#.to_vec(), Error(INVALID, null.clone())),
        ("params alone", br#"{"params":[1]}"#.to_vec(), Error(INVALID, null.clone())),
        ("response with fractional id", br#"{"id":2.5,"result":1}"#.to_vec(), Error(INVALID, null.clone())),
        // --- batches: one answer array, one entry per element that needs one
        ("batch of one number", b"[1]".to_vec(), Batch(vec![(INVALID, null.clone())])),
        (
            "batch of three numbers",
            b"[1,2,3]".to_vec(),
            Batch(vec![(INVALID, null.clone()), (INVALID, null.clone()), (INVALID, null.clone())]),
        ),
        ("batch with an id-only object", br#"[{"id":1}]"#.to_vec(), Batch(vec![(INVALID, null.clone())])),
        ("nested batch", b"[[]]".to_vec(), Batch(vec![(INVALID, null.clone())])),
        (
            "batch mixing errors and a notification",
            br#"[{"method":"n"},{"id":3,"method":"nope"},"x",{"id":"p","method":"add"}]"#.to_vec(),
            Batch(vec![(NOT_FOUND, json!(3)), (INVALID, null.clone()), (PARAMS, json!("p"))]),
        ),
        (
            "batch of responses and notifications",
            br#"[{"id":999,"result":1},{"method":"n"},{"method":"unknown"}]"#.to_vec(),
            Silence,
        ),
        // --- well-formed requests the router refuses: the id is echoed exactly
        (
            "unknown method",
            br#"{"jsonrpc":"2.0","id":7,"method":"nope"}"#.to_vec(),
            Error(NOT_FOUND, json!(7)),
        ),
        (
            "unknown method, string id",
            br#"{"id":"s-1","method":"nope"}"#.to_vec(),
            Error(NOT_FOUND, json!("s-1")),
        ),
        (
            "unknown method, non-ASCII",
            br#"{"id":-2,"method":"\u00e9t\u00e9"}"#.to_vec(),
            Error(NOT_FOUND, json!(-2)),
        ),
        (
            "missing param field",
            br#"{"id":-3,"method":"add","params":{"a":1}}"#.to_vec(),
            Error(PARAMS, json!(-3)),
        ),
        (
            "params of the wrong type",
            br#"{"id":8,"method":"add","params":"x"}"#.to_vec(),
            Error(PARAMS, json!(8)),
        ),
        ("absent params", br#"{"id":9,"method":"add"}"#.to_vec(), Error(PARAMS, json!(9))),
        ("null params", br#"{"id":10,"method":"add","params":null}"#.to_vec(), Error(PARAMS, json!(10))),
        (
            "largest id",
            br#"{"id":9223372036854775807,"method":"nope"}"#.to_vec(),
            Error(NOT_FOUND, json!(9223372036854775807i64)),
        ),
        (
            "smallest id",
            br#"{"id":-9223372036854775808,"method":"nope"}"#.to_vec(),
            Error(NOT_FOUND, json!(-9223372036854775808i64)),
        ),
        (
            "escaped string id",
            br#"{"id":"a\"b\n","method":"nope"}"#.to_vec(),
            Error(NOT_FOUND, json!("a\"b\n")),
        ),
        // --- never answered
        ("response to an unknown id", br#"{"jsonrpc":"2.0","id":999,"result":1}"#.to_vec(), Silence),
        ("response with a string id", br#"{"id":"x","result":1}"#.to_vec(), Silence),
        (
            "error response with id null",
            br#"{"id":null,"error":{"code":-32700,"message":"x"}}"#.to_vec(),
            Silence,
        ),
        ("malformed error object for an unknown id", br#"{"id":5,"error":"boom"}"#.to_vec(), Silence),
        ("unknown notification", br#"{"jsonrpc":"2.0","method":"unknown/thing"}"#.to_vec(), Silence),
        (
            "notification with undecodable params",
            br#"{"method":"$/cancelRequest","params":"bad"}"#.to_vec(),
            Silence,
        ),
        (
            "cancel for an unknown request",
            br#"{"method":"$/cancelRequest","params":{"id":12345}}"#.to_vec(),
            Silence,
        ),
        ("whitespace-only line", b"  \t ".to_vec(), Silence),
        ("lone carriage return", b"\r".to_vec(), Silence),
        ("BOM only", b"\xEF\xBB\xBF".to_vec(), Silence),
    ];
    // --- oversized line (the limit is 1024 in this test): -32600, id null
    let long = format!(r#"{{"id":11,"method":"echo","params":"{}"}}"#, "x".repeat(2000));
    cases.push(("oversized line", long.into_bytes(), Error(INVALID, null.clone())));
    cases
}

fn code_and_id(v: &Value) -> (i64, Value) {
    assert_eq!(v["jsonrpc"], "2.0", "{v}");
    assert!(v.get("result").is_none(), "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    (v["error"]["code"].as_i64().unwrap(), v["id"].clone())
}

#[tokio::test]
async fn malformed_inputs_get_the_exact_error() {
    let config = PeerConfig { max_line_bytes: 1024, ..PeerConfig::default() };
    let (_peer, _conn, mut raw) = raw_peer(router(), config);
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (name, input, expect) in &cases {
        let mut bytes = input.clone();
        bytes.extend_from_slice(b"\n{\"id\":\"sentinel\",\"method\":\"echo\",\"params\":0}\n");
        raw.send(&bytes).await;
        // Everything before the sentinel's answer is this case's answer.
        let mut answers = Vec::new();
        loop {
            let v = raw.json().await;
            if v["id"] == "sentinel" {
                assert_eq!(v["result"], 0);
                break;
            }
            answers.push(v);
        }
        let ok = match expect {
            Silence => answers.is_empty(),
            Error(code, id) => {
                answers.len() == 1
                    && !answers[0].is_array()
                    && code_and_id(&answers[0]) == (*code, id.clone())
            }
            Batch(expected) => {
                answers.len() == 1
                    && answers[0]
                        .as_array()
                        .is_some_and(|items| items.iter().map(code_and_id).collect::<Vec<_>>() == *expected)
            }
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {answers:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
