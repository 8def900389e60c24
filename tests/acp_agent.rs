//! `deputy agent --protocol acp` driven by a client written with the
//! official ACP TypeScript SDK (`tests/fixtures/acp/client.mjs`), and every
//! line the agent wrote validated against the SDK's official v1 JSON
//! Schema.
//!
//! Needs `node` and `npm`. The SDK is installed once into a cache outside
//! the checkout: `$DEPUTY_TEST_CACHE/npm/…`, else
//! `~/.cache/deputy-tests/npm/…`, keyed by the pinned versions; later runs
//! reuse it without touching the network. Without node or npm the tests
//! fail saying so — unless `DEPUTY_SKIP_NODE_TESTS=1`, which skips them
//! (and says that too).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::npm;
use common::*;
use serde_json::{Value, json};

/// The official SDK, pinned (`npm view @agentclientprotocol/sdk version`).
const SDK_VERSION: &str = "2.4.0";
/// Its peer dependency, pinned.
const ZOD_VERSION: &str = "4.6.7";

fn skip() -> bool {
    if npm::env_is_1("DEPUTY_SKIP_NODE_TESTS") {
        eprintln!("SKIPPED: DEPUTY_SKIP_NODE_TESTS=1, so the ACP SDK tests did not run");
        return true;
    }
    false
}

fn cache_dir() -> PathBuf {
    npm::install_dir(&format!("acp-sdk-{SDK_VERSION}-zod-{ZOD_VERSION}"))
}

/// The SDK's install folder (`node_modules` inside), installed if missing.
fn sdk() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        npm::tool_version("node")
            .unwrap_or_else(|e| panic!("{e}, or set DEPUTY_SKIP_NODE_TESTS=1 to skip them"));
        npm::install(
            &format!("acp-sdk-{SDK_VERSION}-zod-{ZOD_VERSION}"),
            &[&format!("@agentclientprotocol/sdk@{SDK_VERSION}"), &format!("zod@{ZOD_VERSION}")],
            "node_modules/@agentclientprotocol/sdk/package.json",
            "DEPUTY_SKIP_NODE_TESTS",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

struct Run {
    out: Value,
    /// Every line the agent wrote.
    lines: Vec<Value>,
}

fn run(scenario: &str, home: &Path, work: &Path, extra: &[(&str, &str)]) -> Run {
    let sdk = sdk();
    let record = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("tests/fixtures/acp/client.mjs"))
        .arg(scenario)
        .env("ACP_SDK", sdk.join("node_modules/@agentclientprotocol/sdk/dist/v1/stable/acp.js"))
        .env("DEPUTY_BIN", deputy_bin())
        .env("DEPUTY_HOME", home)
        .env("WORK", work)
        .env("RECORD", record.path())
        .current_dir(work);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "the SDK client failed in `{scenario}`:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out: Value = serde_json::from_slice(&out.stdout).expect("the client prints one JSON object");
    let lines: Vec<Value> = std::fs::read_to_string(record.path())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("the agent wrote a line that is not JSON ({e}): {l}"))
        })
        .collect();
    validate(&lines);
    assert_eq!(out["exitCode"], 0, "the agent exits 0 at end of input: {out}");
    Run { out, lines }
}

/// The official v1 schema's definitions.
fn defs() -> &'static Value {
    static DEFS: OnceLock<Value> = OnceLock::new();
    DEFS.get_or_init(|| {
        let path = sdk().join("node_modules/@agentclientprotocol/sdk/schema/v1/schema.json");
        let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        schema["$defs"].clone()
    })
}

fn check(def: &str, v: &Value) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/$defs/{def}"),
        "$defs": defs(),
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> =
        validator.iter_errors(v).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "not a valid ACP v1 {def}: {errors:?}\n{v}");
}

/// No field at the root of `v` that the schema's `def` does not declare
/// (extensions belong in `_meta`).
fn no_custom_fields(def: &str, v: &Value, also: &[&str]) {
    let props = defs()[def]["properties"].as_object().unwrap_or_else(|| panic!("{def} has properties"));
    for key in v.as_object().unwrap().keys() {
        assert!(
            props.contains_key(key) || also.contains(&key.as_str()),
            "`{key}` is not a field of ACP's {def}: {v}"
        );
    }
}

/// Every line parses under the official v1 schema, unchanged.
fn validate(lines: &[Value]) {
    for line in lines {
        assert_eq!(line["jsonrpc"], "2.0", "{line}");
        let method = line.get("method").and_then(Value::as_str);
        match (method, line.get("id")) {
            (Some("session/update"), None) => {
                check("SessionNotification", &line["params"]);
                no_custom_fields("SessionNotification", &line["params"], &[]);
                let update = &line["params"]["update"];
                let def = match update["sessionUpdate"].as_str().unwrap() {
                    "user_message_chunk" | "agent_message_chunk" | "agent_thought_chunk" => "ContentChunk",
                    "tool_call" => "ToolCall",
                    "tool_call_update" => "ToolCallUpdate",
                    "usage_update" => "UsageUpdate",
                    other => panic!("an update Deputy does not send: {other}"),
                };
                no_custom_fields(def, update, &["sessionUpdate"]);
            }
            (Some("$/cancel_request"), None) => check("CancelRequestNotification", &line["params"]),
            (Some("session/request_permission"), Some(_)) => {
                check("RequestPermissionRequest", &line["params"]);
                no_custom_fields("RequestPermissionRequest", &line["params"], &[]);
                no_custom_fields("ToolCallUpdate", &line["params"]["toolCall"], &[]);
            }
            (Some(other), _) => panic!("the agent sent a message it should not: {other}: {line}"),
            (None, _) => {
                check("AgentResponse", line);
                let result = &line["result"];
                if result.get("protocolVersion").is_some() {
                    check("InitializeResponse", result);
                    no_custom_fields("InitializeResponse", result, &[]);
                } else if result.get("stopReason").is_some() {
                    check("PromptResponse", result);
                    no_custom_fields("PromptResponse", result, &[]);
                } else if result.get("sessionId").is_some() {
                    check("NewSessionResponse", result);
                    no_custom_fields("NewSessionResponse", result, &[]);
                }
            }
        }
    }
}

fn updates(out: &Value) -> Vec<Value> {
    out["updates"].as_array().unwrap().iter().map(|u| u["update"].clone()).collect()
}

fn of_kind(out: &Value, kind: &str) -> Vec<Value> {
    updates(out).into_iter().filter(|u| u["sessionUpdate"] == kind).collect()
}

struct Dirs {
    home: tempfile::TempDir,
    work: tempfile::TempDir,
}

fn dirs() -> Dirs {
    Dirs { home: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() }
}

#[test]
fn handshake_negotiates_v1_and_advertises_load_and_close() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("handshake", d.home.path(), d.work.path(), &[]);
    let init = &r.out["initialize"];
    assert_eq!(init["protocolVersion"], 1);
    assert_eq!(init["agentCapabilities"]["loadSession"], true);
    assert_eq!(init["agentCapabilities"]["sessionCapabilities"]["close"], json!({}));
    assert_eq!(init["agentInfo"]["name"], "deputy");
    assert_eq!(r.lines.len(), 1, "nothing but the answer: {:?}", r.lines);
}

#[test]
fn echo_streams_the_answer_and_ends_the_turn() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("echo", d.home.path(), d.work.path(), &[]);
    assert_eq!(r.out["response"], json!({"stopReason": "end_turn"}));
    let text: String = of_kind(&r.out, "agent_message_chunk")
        .iter()
        .map(|u| u["content"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "hello from the editor");
    // The answer is the last line: no update of the turn comes after it.
    assert!(r.lines.last().unwrap()["result"]["stopReason"].is_string(), "{:?}", r.lines.last());
}

#[test]
fn an_approved_command_runs_and_its_output_is_in_the_tool_call() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("approve", d.home.path(), d.work.path(), &[]);
    assert_eq!(r.out["response"]["stopReason"], "end_turn");
    let perms = r.out["permissions"].as_array().unwrap();
    assert_eq!(perms.len(), 1);
    let asked = &perms[0]["params"]["toolCall"];
    assert_eq!(asked["kind"], "execute");
    assert_eq!(asked["title"], "echo approved-output");
    assert_eq!(asked["rawInput"]["command"], json!(["echo", "approved-output"]));
    let kinds: Vec<Value> =
        perms[0]["params"]["options"].as_array().unwrap().iter().map(|o| o["kind"].clone()).collect();
    assert_eq!(kinds, ["allow_once", "allow_always", "reject_once", "reject_always"]);
    // The tool call is announced before the permission request that names it.
    let id = asked["toolCallId"].as_str().unwrap();
    let announce =
        r.lines.iter().position(|l| l["params"]["update"]["sessionUpdate"] == "tool_call").unwrap();
    let ask = r.lines.iter().position(|l| l["method"] == "session/request_permission").unwrap();
    assert!(announce < ask, "tool_call at line {announce}, request_permission at {ask}");
    assert_eq!(r.lines[announce]["params"]["update"]["toolCallId"], id);
    let statuses: Vec<Value> =
        updates(&r.out).into_iter().filter(|u| u["toolCallId"] == id).map(|u| u["status"].clone()).collect();
    assert_eq!(statuses, ["pending", "in_progress", "completed"]);
    let done = updates(&r.out).into_iter().find(|u| u["status"] == "completed").unwrap();
    assert_eq!(done["content"][0]["content"]["text"], "approved-output\n");
    assert_eq!(done["rawOutput"]["exit_code"], 0);
}

#[test]
fn a_rejected_command_never_runs_and_ends_failed() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("reject", d.home.path(), d.work.path(), &[]);
    assert_eq!(r.out["response"]["stopReason"], "end_turn");
    assert!(!d.work.path().join("sentinel").exists(), "the rejected command ran");
    let statuses: Vec<Value> = updates(&r.out).into_iter().map(|u| u["status"].clone()).collect();
    assert_eq!(statuses, ["pending", "failed"]);
}

#[test]
fn an_approved_patch_writes_the_file_and_shows_a_diff() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("patch", d.home.path(), d.work.path(), &[]);
    assert_eq!(r.out["response"]["stopReason"], "end_turn");
    assert_eq!(std::fs::read_to_string(d.work.path().join("hello.txt")).unwrap(), "hello from a patch\n");
    let asked = &r.out["permissions"][0]["params"]["toolCall"];
    assert_eq!(asked["kind"], "edit");
    let path = d.work.path().canonicalize().unwrap().join("hello.txt");
    assert_eq!(asked["content"], json!([{"type": "diff", "path": path, "newText": "hello from a patch\n"}]));
    assert_eq!(asked["locations"], json!([{"path": path}]));
    let last = updates(&r.out).pop().unwrap();
    assert_eq!(last["status"], "completed");
}

#[test]
fn cancel_during_a_command_kills_it_and_answers_cancelled_in_under_a_second() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("cancel-sleep", d.home.path(), d.work.path(), &[]);
    assert_eq!(r.out["response"], json!({"stopReason": "cancelled"}));
    let ms = r.out["cancelMs"].as_u64().unwrap();
    assert!(ms < 1000, "cancelled after {ms} ms");
    let pid = r.out["sleepPid"].as_u64().unwrap() as u32;
    assert_eq!(r.out["sleepAliveAtAnswer"], false, "`sleep 30` (pid {pid}) outlived the cancel");
    assert!(!alive(pid));
    let last = updates(&r.out).pop().unwrap();
    assert_eq!(last["status"], "failed");
    assert_eq!(last["rawOutput"]["interrupted"], true);
}

#[test]
fn cancel_while_a_permission_is_pending_withdraws_it_and_nothing_runs() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("cancel-permission", d.home.path(), d.work.path(), &[]);
    assert_eq!(r.out["response"], json!({"stopReason": "cancelled"}));
    assert!(r.out["cancelMs"].as_u64().unwrap() < 1000, "{}", r.out["cancelMs"]);
    // The agent withdrew the request in ACP's spelling, and the SDK saw it.
    assert_eq!(r.out["permissions"][0]["withdrawn"], true);
    let ask = r.lines.iter().find(|l| l["method"] == "session/request_permission").unwrap();
    assert!(
        r.lines.iter().any(|l| l["method"] == "$/cancel_request" && l["params"]["requestId"] == ask["id"]),
        "no $/cancel_request for {}",
        ask["id"]
    );
    assert!(!d.work.path().join("sentinel").exists());
    let statuses: Vec<Value> = updates(&r.out).into_iter().map(|u| u["status"].clone()).collect();
    assert_eq!(statuses, ["pending", "failed"]);
}

#[test]
fn session_load_in_a_new_process_replays_the_conversation_then_goes_on() {
    if skip() {
        return;
    }
    let d = dirs();
    let first = run("first-of-two", d.home.path(), d.work.path(), &[]);
    let sid = first.out["sessionId"].as_str().unwrap().to_owned();
    let r = run("load", d.home.path(), d.work.path(), &[("SESSION_ID", &sid)]);
    assert_eq!(r.out["loadResponse"], json!({}));
    let replayed = r.out["replayed"].as_u64().unwrap() as usize;
    let all = updates(&r.out);
    let kinds: Vec<&str> = all[..replayed].iter().map(|u| u["sessionUpdate"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user_message_chunk", "agent_message_chunk", "tool_call"]);
    assert_eq!(all[0]["content"]["text"], "remember me\n$ echo replayed-output");
    assert_eq!(all[2]["status"], "completed");
    assert!(all[2]["content"][0]["content"]["text"].as_str().unwrap().contains("replayed-output"));
    // The replay is all before the answer to session/load.
    let answer = r.lines.iter().position(|l| l["result"] == json!({})).unwrap();
    let updates_before = r.lines[..answer].iter().filter(|l| l["method"] == "session/update").count();
    assert_eq!(updates_before, replayed);
    assert_eq!(r.out["response"]["stopReason"], "end_turn");
    assert_eq!(all.last().unwrap()["content"]["text"], "and now this");
}

#[test]
fn unknown_methods_sessions_and_content_kinds_are_errors() {
    if skip() {
        return;
    }
    let d = dirs();
    let r = run("unknown", d.home.path(), d.work.path(), &[]);
    let e = &r.out["errors"];
    assert_eq!(e["no/such_method"], -32601);
    assert_eq!(e["_deputy/nothing"], -32601);
    assert_eq!(e["unknownSession"], -32002);
    assert_eq!(e["image"]["code"], -32602);
    assert!(e["image"]["message"].as_str().unwrap().contains("`image`"), "{e}");
}

/// The install is reused from the cache outside the checkout, and the
/// schema checks above can fail: they reject what ACP v1 does not allow.
#[test]
fn the_sdk_is_cached_outside_the_checkout_and_the_schema_checks_bite() {
    if skip() {
        return;
    }
    let dir = sdk();
    assert!(dir.starts_with(cache_dir()));
    assert!(!dir.starts_with(repo_root()), "the npm cache must live outside the checkout");
    let bad_enum = std::panic::catch_unwind(|| check("PromptResponse", &json!({"stopReason": "rejected"})));
    assert!(bad_enum.is_err(), "an invalid stop reason passed the schema");
    let custom = std::panic::catch_unwind(|| {
        no_custom_fields("ToolCall", &json!({"toolCallId": "c", "title": "t", "deputyExtra": 1}), &[])
    });
    assert!(custom.is_err(), "a custom root field passed");
}
