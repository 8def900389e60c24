//! Property tests of the framer and classifier (and the reader on arbitrary bytes).

mod common;

use deputy_rpc::framing::{Frame, LineFramer, READ_CHUNK};
use deputy_rpc::message::{Incoming, classify};
use deputy_rpc::{PeerConfig, Router};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Line(Vec<u8>),
    Oversized(usize),
}

fn drain(framer: &mut LineFramer, out: &mut Vec<Owned>) {
    while let Some(frame) = framer.next_frame() {
        out.push(match frame {
            Frame::Line(l) => {
                // The classifier never panics on any frame.
                let _ = classify(l);
                Owned::Line(l.to_vec())
            }
            Frame::Oversized { len } => Owned::Oversized(len),
        });
    }
}

/// Feeds `input` cut at `cuts` (via `push`), draining after each piece.
fn frames_chunked(max: usize, input: &[u8], cuts: &[usize]) -> (Vec<Owned>, Option<usize>) {
    let mut framer = LineFramer::new(max);
    let mut out = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for cut in cuts.into_iter().chain([input.len()]) {
        framer.push(&input[start..cut]);
        drain(&mut framer, &mut out);
        assert!(framer.buffer_capacity() <= framer.capacity_bound());
        start = cut;
    }
    (out, framer.finish())
}

/// Feeds `input` the way the reader does: through `read_buffer`, `chunk` bytes at most.
fn frames_read(max: usize, input: &[u8], chunk: usize) -> (Vec<Owned>, Option<usize>) {
    let mut framer = LineFramer::new(max);
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let buf = framer.read_buffer();
        let n = (buf.capacity() - buf.len()).min(chunk).min(rest.len());
        assert!(n > 0);
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        drain(&mut framer, &mut out);
        assert!(
            framer.buffer_capacity() <= framer.capacity_bound(),
            "capacity {} > bound {}",
            framer.buffer_capacity(),
            framer.capacity_bound()
        );
    }
    (out, framer.finish())
}

/// Lines built from pieces that stress the framer: JSON, CR, BOM, blanks, long runs.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":[1]}".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b" \t".to_vec()),
        Just(b"[]".to_vec()),
        (1usize..200).prop_map(|n| vec![b'x'; n]),
        proptest::collection::vec(any::<u8>(), 0..20),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_chunking_yields_the_same_frames(
        input in stream(),
        max in 0usize..120,
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        chunk in 1usize..64,
    ) {
        let whole = frames_chunked(max, &input, &[]);
        prop_assert_eq!(&frames_chunked(max, &input, &cuts), &whole);
        prop_assert_eq!(&frames_read(max, &input, chunk), &whole);
        // One byte at a time.
        let every: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(&frames_chunked(max, &input, &every), &whole);
    }

    #[test]
    fn oversized_lines_yield_one_error_and_the_next_line_without_more_input(
        max in 2usize..100,
        extra in 1usize..400,
        cr in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let len = max + extra;
        let mut input = vec![b'y'; len];
        if cr {
            // The `\r` counts in the length and does not make it acceptable.
            *input.last_mut().unwrap() = b'\r';
        }
        input.extend_from_slice(b"\n{}\n");
        let (frames, rest) = frames_chunked(max, &input, &cuts);
        let expected_error = if cr && len - 1 <= max {
            Owned::Line(vec![b'y'; len - 1])
        } else {
            Owned::Oversized(len)
        };
        prop_assert_eq!(frames, vec![expected_error, Owned::Line(b"{}".to_vec())]);
        prop_assert_eq!(rest, None);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_memory_stays_bounded(
        input in proptest::collection::vec(
            prop_oneof![4 => any::<u8>(), 1 => Just(b'\n')], 0..4096),
        max in 0usize..256,
        chunk in 1usize..1024,
    ) {
        let (frames, _) = frames_read(max, &input, chunk);
        for f in &frames {
            if let Owned::Line(l) = f {
                prop_assert!(l.len() <= max);
            }
        }
    }

    #[test]
    fn classify_never_panics_on_arbitrary_json(v in arb_json()) {
        let line = serde_json::to_vec(&v).unwrap();
        let _ = classify(&line);
        if v.is_object() || v.is_array() {
            // Valid JSON is never a parse error.
            if let Incoming::Invalid(e) = classify(&line) {
                prop_assert_eq!(e.code, -32600);
            }
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "[a-z$/]{0,8}".prop_map(Value::String),
        Just(json!("2.0")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("jsonrpc".to_owned()),
                        Just("id".to_owned()),
                        Just("method".to_owned()),
                        Just("params".to_owned()),
                        Just("result".to_owned()),
                        Just("error".to_owned()),
                        "[a-z]{1,4}".prop_map(String::from),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

#[test]
fn bound_is_one_line_plus_one_chunk() {
    let framer = LineFramer::new(1000);
    assert_eq!(framer.capacity_bound(), 1001 + READ_CHUNK);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The whole reader on arbitrary bytes: it never panics, every answer is one
    /// valid JSON line, and it still serves a request afterwards.
    #[test]
    fn the_peer_survives_arbitrary_bytes(
        input in proptest::collection::vec(prop_oneof![8 => any::<u8>(), 1 => Just(b'\n')], 0..2048),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut router = Router::new();
            router.request("ping", |(): (), _ctx| async move { Ok::<_, deputy_rpc::ErrorObject>("pong") });
            let config = PeerConfig { max_line_bytes: 300, ..PeerConfig::default() };
            let (_peer, _conn, mut raw) = common::raw_peer(router, config);
            let mut bytes = input.clone();
            bytes.extend_from_slice(b"\n{\"id\":\"sentinel\",\"method\":\"ping\"}\n");
            raw.send(&bytes).await;
            loop {
                let v = raw.json().await;
                if v["id"] == "sentinel" {
                    assert_eq!(v["result"], "pong");
                    break;
                }
                assert!(v["error"]["code"].is_i64(), "{v}");
            }
        });
    }
}

// ------------------------------------------------------------ the fast path

/// Pieces of near-notification lines: valid and invalid values, keys that
/// the fast path takes and ones it must leave to the classifier.
fn member() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "\"jsonrpc\"",
        "\"method\"",
        "\"params\"",
        "\"id\"",
        "\"result\"",
        "\"x\"",
        "\"meth\\u006fd\"",
        "method",
    ]);
    let value = prop::sample::select(vec![
        "\"2.0\"",
        "\"1.0\"",
        "\"event\"",
        "\"ev\\\"ent\"",
        "\"a\\u0000b\"",
        "null",
        "1",
        "-2.5e3",
        "true",
        "{}",
        "[]",
        "{\"id\":\"s\",\"msg\":{\"type\":\"agent_message_delta\",\"delta\":\"x\\\"}\"}}",
        "{\"a\":[1,{\"b\":\"]\"}]}",
        "{\"a\":}",
        "{\"a\":1",
        "[1,2",
        "{\"a\":1]}",
        "\"unterminated",
        "tru",
        "{\"a\":\"\\\\\"}",
        "{\"a\"  :  [ ]  }",
        "01",
        "{\"a\":1,}",
    ]);
    let ws = prop::sample::select(vec!["", " ", "\t", "\r\n ", "\u{a0}"]);
    (ws.clone(), key, ws.clone(), ws.clone(), value, ws)
        .prop_map(|(a, k, b, c, v, d)| format!("{a}{k}{b}:{c}{v}{d}"))
}

fn near_notification() -> impl Strategy<Value = Vec<u8>> {
    let members = prop::collection::vec(member(), 0..5);
    let tail = prop::sample::select(vec!["}", "}", "} ", "}}", "} x", ",}", "", "]"]);
    let head = prop::sample::select(vec!["{", "{", " {", "[{", "x{"]);
    (head, members, tail, any::<Option<(usize, u8)>>()).prop_map(|(h, m, t, flip)| {
        let mut line = format!("{h}{}{t}", m.join(",")).into_bytes();
        if let Some((at, byte)) = flip
            && !line.is_empty()
        {
            let at = at % line.len();
            line[at] = byte;
        }
        line
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Whenever the fast path takes a line and its params are JSON (what
    /// the reader's typed decode checks), the full classifier gives the
    /// same notification: same method, same params text.
    #[test]
    fn the_fast_path_agrees_with_the_classifier(line in near_notification()) {
        if let Some((method, params)) = deputy_rpc::message::plain_notification(&line) {
            let params_are_json = params.is_none_or(|p| serde_json::from_str::<serde_json::Value>(p).is_ok());
            if params_are_json {
                match classify(&line) {
                    Incoming::Single(deputy_rpc::message::Message::Notification { method: m, params: p }) => {
                        prop_assert_eq!(m.as_ref(), method);
                        prop_assert_eq!(p.map(|p| p.get()), params);
                    }
                    other => prop_assert!(false, "fast path took {:?}, the classifier says {:?}", String::from_utf8_lossy(&line), other),
                }
            }
        }
    }
}

#[test]
fn the_fast_path_takes_the_lines_deputy_writes_and_leaves_the_rest() {
    let plain =
        br#"{"jsonrpc":"2.0","method":"event","params":{"id":"s","msg":{"type":"x","delta":"a\"}b"}}}"#;
    assert_eq!(
        deputy_rpc::message::plain_notification(plain),
        Some(("event", Some(r#"{"id":"s","msg":{"type":"x","delta":"a\"}b"}}"#)))
    );
    assert_eq!(deputy_rpc::message::plain_notification(br#" { "method" : "m" } "#), Some(("m", None)));
    assert_eq!(
        deputy_rpc::message::plain_notification(br#"{"method":"m","params":null}"#),
        Some(("m", None))
    );
    for other in [
        &br#"{"jsonrpc":"2.0","id":1,"method":"m"}"#[..], // a request
        br#"{"method":"m","method":"m"}"#,                // a duplicate
        br#"{"method":"m\u0041"}"#,                       // an escape
        br#"{"jsonrpc":"1.0","method":"m"}"#,             // a bad version
        br#"{"method":"m"} {}"#,                          // two values
        br#"{"method":"m","params":{"a":1}"#,             // cut short
        b"{\"method\":\"\xff\"}",                         // not UTF-8
    ] {
        assert_eq!(
            deputy_rpc::message::plain_notification(other),
            None,
            "{}",
            String::from_utf8_lossy(other)
        );
    }
}
