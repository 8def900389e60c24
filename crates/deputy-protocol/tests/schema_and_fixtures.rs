//! Every message type round-trips through serde, every fixture validates
//! against the generated JSON Schema, every invalid fixture is rejected by
//! both the schema and the Rust decoder, and the checked-in `schema/` folder
//! matches what the code generates.

use std::path::{Path, PathBuf};

use deputy_protocol::schema::{self, ROOT_TYPES};
use deputy_protocol::*;
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Decodes `value` as the type named `name` and encodes it again.
fn roundtrip(name: &str, value: &Value) -> Result<Value, String> {
    fn via<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let text = serde_json::to_string(&typed).map_err(|e| e.to_string())?;
        assert!(!text.contains('\n'), "compact JSON never holds a newline");
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
    match name {
        "InitializeParams" => via::<InitializeParams>(value),
        "InitializeResult" => via::<InitializeResult>(value),
        "SessionStartParams" => via::<SessionStartParams>(value),
        "SessionStartResult" => via::<SessionStartResult>(value),
        "Submission" => via::<Submission>(value),
        "SubmitResult" => via::<SubmitResult>(value),
        "Event" => via::<Event>(value),
        "ExecApprovalParams" => via::<ExecApprovalParams>(value),
        "PatchApprovalParams" => via::<PatchApprovalParams>(value),
        "ApprovalResult" => via::<ApprovalResult>(value),
        "CancelRequestParams" => via::<CancelRequestParams>(value),
        "RolloutLine" => via::<RolloutLine>(value),
        other => panic!("no decoder for {other}"),
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo_root().join(format!("schema/json/{name}.json")))
        .unwrap_or_else(|e| panic!("schema/json/{name}.json: {e}"));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

fn load(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Strips `null` members, which decoders treat as absent and encoders omit.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn checked_in_schema_is_up_to_date() {
    let stale = schema::stale_files(&repo_root().join("schema")).unwrap();
    assert!(stale.is_empty(), "schema/ is stale; run `cargo run -- schema --out schema`: {stale:?}");
}

#[test]
fn every_root_type_has_fixtures_that_validate_and_roundtrip() {
    for name in ROOT_TYPES {
        let fixtures = load(&fixtures_dir().join(format!("{name}.json")));
        assert!(!fixtures.is_empty(), "{name} has no fixtures");
        let validator = validator(name);
        for (i, fixture) in fixtures.iter().enumerate() {
            let errors: Vec<String> = validator.iter_errors(fixture).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name}[{i}] does not match its schema: {errors:?}");
            let again =
                roundtrip(name, fixture).unwrap_or_else(|e| panic!("{name}[{i}] does not decode: {e}"));
            let errors: Vec<String> = validator.iter_errors(&again).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name}[{i}] re-encoded does not match its schema: {errors:?}");
            // Encoding may add defaulted fields, but must keep every field given.
            let given = without_nulls(fixture);
            for (key, value) in given.as_object().unwrap() {
                assert_eq!(
                    again.get(key).map(without_nulls).as_ref(),
                    Some(value),
                    "{name}[{i}].{key} changed"
                );
            }
            // And a second trip is the identity.
            assert_eq!(roundtrip(name, &again).unwrap(), again, "{name}[{i}] is not stable");
        }
    }
}

#[test]
fn invalid_fixtures_are_rejected_by_schema_and_decoder() {
    let cases = load(&fixtures_dir().join("invalid/invalid.json"));
    assert!(cases.len() >= 15);
    for case in cases {
        let [name, value, why] = case.as_array().unwrap().as_slice() else { panic!("bad case {case}") };
        let name = name.as_str().unwrap();
        assert!(!validator(name).is_valid(value), "schema accepts {why}: {value}");
        assert!(roundtrip(name, value).is_err(), "decoder accepts {why}: {value}");
    }
}

#[test]
fn every_method_in_the_catalogue_has_schema_files() {
    let root = repo_root().join("schema/json");
    for info in schema::METHODS {
        assert!(root.join(format!("{}.json", info.params)).exists(), "{} params", info.method);
        if let Some(result) = info.result {
            assert!(root.join(format!("{result}.json")).exists(), "{} result", info.method);
        }
    }
}

#[test]
fn unknown_op_names_the_variant_in_the_decoder_error() {
    let err =
        serde_json::from_value::<Submission>(serde_json::json!({"op": {"type": "compact"}})).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("compact") && text.contains("user_input"), "{text}");
}

#[test]
fn unknown_event_types_decode_as_unknown_for_forward_compatibility() {
    let event: Event =
        serde_json::from_value(serde_json::json!({"id": "1", "msg": {"type": "future_thing", "x": 1}}))
            .unwrap();
    assert_eq!(event.msg, EventMsg::Unknown);
    assert!(
        !schema::generate()
            .iter()
            .any(|f| f.contents.contains("\"unknown\"") && f.path.ends_with("Event.json"))
    );
}

#[test]
fn event_kind_matches_the_wire_tag() {
    for fixture in load(&fixtures_dir().join("Event.json")) {
        let event: Event = serde_json::from_value(fixture.clone()).unwrap();
        assert_eq!(event.msg.kind(), fixture["msg"]["type"].as_str().unwrap());
    }
    for fixture in load(&fixtures_dir().join("Submission.json")) {
        let sub: Submission = serde_json::from_value(fixture.clone()).unwrap();
        assert_eq!(sub.op.kind(), fixture["op"]["type"].as_str().unwrap());
    }
}

#[test]
fn every_event_type_has_a_fixture() {
    let seen: std::collections::BTreeSet<String> = load(&fixtures_dir().join("Event.json"))
        .iter()
        .map(|f| f["msg"]["type"].as_str().unwrap().to_owned())
        .collect();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("schema/json/Event.json")).unwrap())
            .unwrap();
    let variants = schema["$defs"]["EventMsg"]["oneOf"].as_array().unwrap();
    for variant in variants {
        let tag = variant["properties"]["type"]["const"].as_str().unwrap();
        assert!(seen.contains(tag), "no fixture for event {tag}");
    }
}

#[test]
fn error_codes_are_distinct() {
    let mut codes: Vec<i64> = error_codes::ALL.iter().map(|(_, c)| *c).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), error_codes::ALL.len());
}

#[test]
fn approval_key_prefers_approval_id() {
    let mut p: ExecApprovalParams = serde_json::from_value(
        serde_json::json!({"call_id": "c", "turn_id": "t", "command": ["ls"], "cwd": "/"}),
    )
    .unwrap();
    assert_eq!(p.approval_key(), "c");
    p.approval_id = Some("a".into());
    assert_eq!(p.approval_key(), "a");
}

/// Every piece of prose in the generated files: the descriptions of the JSON
/// Schemas and the `/** … */` comments of the TypeScript.
fn generated_prose() -> Vec<(String, String)> {
    fn descriptions(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match v {
                        Value::String(text) if key == "description" => out.push(text.clone()),
                        _ => descriptions(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| descriptions(v, out)),
            _ => {}
        }
    }
    let mut prose = Vec::new();
    for file in schema::generate() {
        if file.path.ends_with(".json") {
            let mut found = Vec::new();
            descriptions(&serde_json::from_str(&file.contents).unwrap(), &mut found);
            prose.extend(found.into_iter().map(|text| (file.path.clone(), text)));
        } else {
            let mut rest = file.contents.as_str();
            while let Some(start) = rest.find("/**") {
                let end = start + rest[start..].find("*/").expect("a comment ends");
                prose.push((file.path.clone(), rest[start..end].to_owned()));
                rest = &rest[end..];
            }
        }
    }
    prose
}

#[test]
fn generated_docs_have_no_rustdoc_link_syntax() {
    let prose = generated_prose();
    assert!(prose.len() > 50, "the generated files have their docs: {}", prose.len());
    // A name rustdoc would take for a link target: `Name`, `a::B`.
    let rust_path = |text: &str| {
        text.split("::").all(|part| {
            !part.is_empty()
                && part.chars().next().unwrap().is_ascii_alphabetic()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) && text.chars().any(|c| c.is_ascii_uppercase() || c == ':')
    };
    for (path, text) in prose {
        for bad in ["[`", "](crate::", "](self::", "](super::", "](Self::", "crate::"] {
            assert!(!text.contains(bad), "{path}: rustdoc syntax `{bad}` in {text:?}");
        }
        let mut rest = text.as_str();
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find(']') else { break };
            let inner = &rest[open + 1..open + close];
            assert!(!rust_path(inner), "{path}: an intra-doc link [{inner}] in {text:?}");
            let after = &rest[open + close + 1..];
            if let Some(target) = after.strip_prefix('(') {
                assert!(
                    target.starts_with("http://") || target.starts_with("https://"),
                    "{path}: a link to a Rust item in {text:?}"
                );
            }
            rest = after;
        }
    }
}

#[test]
fn doc_links_are_rewritten_as_plain_text() {
    use schema::plain_doc_links as plain;
    assert_eq!(plain("see [`crate::PROTOCOL_VERSION`]."), "see `PROTOCOL_VERSION`.");
    assert_eq!(
        plain("in [`crate::Event::id`] and [`Self::approval_key`]"),
        "in `Event::id` and `approval_key`"
    );
    assert_eq!(plain("a [link](crate::x) and [`code`](Self::y)"), "a link and `code`");
    assert_eq!(
        plain("[the spec](https://www.jsonrpc.org/specification)"),
        "[the spec](https://www.jsonrpc.org/specification)"
    );
    assert_eq!(plain("bare [EventMsg] and [schema::generate]"), "bare `EventMsg` and `schema::generate`");
    // Not links: JSON, TypeScript index signatures, plain brackets.
    for kept in ["{\"supported\": [1]}", "[key in string]", "a [sic] b", "unclosed [`x", "[] and [ ]"] {
        assert_eq!(plain(kept), kept);
    }
}

#[test]
fn typescript_lists_every_event_type_error_code_and_method() {
    let ts = schema::generate().into_iter().find(|f| f.path.ends_with(".ts")).unwrap().contents;
    for kind in schema::known_event_types() {
        assert!(ts.contains(&format!("\"type\": \"{kind}\"")), "{kind} has no TypeScript variant");
    }
    let list = "KNOWN_EVENT_TYPES: readonly KnownEventType[] = [\"session_configured\", ";
    assert!(ts.contains(list), "the event types are listed");
    for (name, code) in error_codes::ALL {
        assert!(ts.contains(&format!("  {name}: {code},\n")), "{name}");
    }
    for info in schema::METHODS {
        assert!(ts.contains(&format!("\"{}\": {{ params: {}", info.method, info.params)), "{}", info.method);
    }
    assert!(ts.contains(&format!("export const PROTOCOL_VERSION = {PROTOCOL_VERSION};")));
    assert!(ts.contains("export type EventMsg = KnownEventMsg | UnknownEventMsg;"));
}
