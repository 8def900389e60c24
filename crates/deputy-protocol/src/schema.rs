//! Generation of the published schema: JSON Schema (draft 2020-12) for every
//! message, and TypeScript declarations for every type.
//!
//! `deputy schema --out DIR` writes [`generate`]'s files; `deputy schema
//! --check` and this crate's tests compare them with the checked-in `schema/`
//! folder, so a change to a type that is not regenerated fails CI.

use schemars::JsonSchema;
use ts_rs::TS;

use crate::*;

/// Who sends a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The host sends it; the agent answers.
    HostToAgent,
    /// The agent sends it; the host answers.
    AgentToHost,
    /// Either side may send it.
    Either,
}

/// One method of the protocol and the types of its params and result.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// The method's name on the wire (e.g. `session/start`).
    pub method: &'static str,
    /// Who sends it.
    pub direction: Direction,
    /// Name of the params type (a file `json/<name>.json` in the schema folder).
    pub params: &'static str,
    /// Name of the result type; `None` for notifications.
    pub result: Option<&'static str>,
}

/// Every method of protocol version 1.
pub const METHODS: &[MethodInfo] = &[
    MethodInfo {
        method: methods::INITIALIZE,
        direction: Direction::HostToAgent,
        params: "InitializeParams",
        result: Some("InitializeResult"),
    },
    MethodInfo {
        method: methods::SESSION_START,
        direction: Direction::HostToAgent,
        params: "SessionStartParams",
        result: Some("SessionStartResult"),
    },
    MethodInfo {
        method: methods::SUBMIT,
        direction: Direction::HostToAgent,
        params: "Submission",
        result: Some("SubmitResult"),
    },
    MethodInfo { method: methods::EVENT, direction: Direction::AgentToHost, params: "Event", result: None },
    MethodInfo {
        method: methods::APPROVAL_EXEC,
        direction: Direction::AgentToHost,
        params: "ExecApprovalParams",
        result: Some("ApprovalResult"),
    },
    MethodInfo {
        method: methods::APPROVAL_PATCH,
        direction: Direction::AgentToHost,
        params: "PatchApprovalParams",
        result: Some("ApprovalResult"),
    },
    MethodInfo {
        method: methods::CANCEL_REQUEST,
        direction: Direction::Either,
        params: "CancelRequestParams",
        result: None,
    },
];

/// One generated file, with its path relative to the schema folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Where it goes, relative to the schema folder (e.g. `json/Event.json`).
    pub path: String,
    /// The file's text.
    pub contents: String,
}

fn json_schema<T: JsonSchema>(name: &str) -> GeneratedFile {
    let schema = schemars::schema_for!(T);
    let pretty = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    // Descriptions are one line each in pretty JSON; rewriting them in the
    // text keeps the schema's key order (a `Value` round trip would sort it).
    let mut contents = String::with_capacity(pretty.len() + 1);
    for line in pretty.lines() {
        if line.trim_start().starts_with("\"description\": \"") {
            contents.push_str(&plain_doc_links(line));
        } else {
            contents.push_str(line);
        }
        contents.push('\n');
    }
    GeneratedFile { path: format!("json/{name}.json"), contents }
}

/// Turns rustdoc's links into plain text for readers of other languages:
/// ``[`crate::Event::id`]`` becomes `` `Event::id` `` (the `crate::`,
/// `self::`, `super::` and `Self::` prefixes dropped), `[text](path)`
/// becomes `text` unless `path` is a web address, and a bare intra-doc
/// link `[Name]` becomes `` `Name` ``. Everything else is kept as it is.
pub fn plain_doc_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = &after[..close];
        let tail = &after[close + 1..];
        // `[text](target)`: a markdown link.
        if let Some(target_len) = tail.strip_prefix('(').and_then(|t| t.find(')'))
            && !inner.contains('[')
        {
            let target = &tail[1..1 + target_len];
            if target.starts_with("http://") || target.starts_with("https://") {
                out.push_str(&rest[open..open + 1 + close + 1 + target_len + 2]);
            } else {
                out.push_str(&link_text(inner));
            }
            rest = &tail[target_len + 2..];
            continue;
        }
        if inner.len() > 2
            && inner.starts_with('`')
            && inner.ends_with('`')
            && !inner[1..inner.len() - 1].contains('`')
            || is_rust_path(inner)
        {
            out.push_str(&link_text(inner));
        } else {
            out.push('[');
            out.push_str(inner);
            out.push(']');
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The text a link shows: its code span without the path prefixes that only
/// mean something in Rust.
fn link_text(inner: &str) -> String {
    let code = inner.strip_prefix('`').and_then(|i| i.strip_suffix('`'));
    let Some(code) = code.or_else(|| is_rust_path(inner).then_some(inner)) else {
        return inner.to_owned();
    };
    let mut code = code;
    for prefix in ["crate::", "self::", "super::", "Self::"] {
        while let Some(stripped) = code.strip_prefix(prefix) {
            code = stripped;
        }
    }
    format!("`{code}`")
}

/// `Name`, `a::b::Name`: what rustdoc takes for an intra-doc link target.
fn is_rust_path(text: &str) -> bool {
    !text.is_empty()
        && text.split("::").all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        && text.chars().any(|c| c.is_ascii_uppercase() || c == ':')
}

macro_rules! json_schemas {
    ($($ty:ident),* $(,)?) => {
        vec![$(json_schema::<$ty>(stringify!($ty))),*]
    };
}

macro_rules! ts_decls {
    ($cfg:expr; $($ty:ty),* $(,)?) => {
        vec![$(<$ty as TS>::decl($cfg)),*]
    };
}

/// The names of the root types that get a JSON Schema file of their own:
/// every method's params and result, and a rollout line.
pub const ROOT_TYPES: &[&str] = &[
    "InitializeParams",
    "InitializeResult",
    "SessionStartParams",
    "SessionStartResult",
    "Submission",
    "SubmitResult",
    "Event",
    "ExecApprovalParams",
    "PatchApprovalParams",
    "ApprovalResult",
    "CancelRequestParams",
    "RolloutLine",
];

/// Every file of the schema folder, as the code defines it now.
pub fn generate() -> Vec<GeneratedFile> {
    let mut files = json_schemas![
        InitializeParams,
        InitializeResult,
        SessionStartParams,
        SessionStartResult,
        Submission,
        SubmitResult,
        Event,
        ExecApprovalParams,
        PatchApprovalParams,
        ApprovalResult,
        CancelRequestParams,
        RolloutLine,
    ];
    debug_assert_eq!(files.len(), ROOT_TYPES.len());
    files.push(typescript());
    files
}

fn typescript() -> GeneratedFile {
    // JavaScript numbers hold every integer this protocol sends exactly
    // (token counts and durations stay far below 2^53), so u64/i64 map to
    // `number` rather than ts-rs's default `bigint`, which JSON.parse never
    // produces.
    let cfg = ts_rs::Config::new().with_large_int("number");
    let decls = ts_decls![&cfg;
        serde_json::Value, RequestId,
        PeerInfo, ClientCapabilities, InitializeParams, AgentCapabilities, InitializeResult,
        SessionSource, SubAgentSource, ApprovalPolicy, ModelSelection, ExecSettings, OnBusy,
        SandboxMode, SandboxSupport,
        SessionStartParams, SessionStartResult,
        Submission, SubmitResult, Op, InputItem,
        Event, EventMsg, TokenUsage, TokenUsageInfo, TurnAbortReason, ExecOutputStream,
        ExecApprovalParams, PatchApprovalParams, FileChange, ReviewDecision, ApprovalResult,
        CancelRequestParams,
        InitialHistory, HistorySource, SessionMeta, ApprovalKind, RolloutItem, RolloutLine,
    ];
    let mut contents = String::from(
        "// Generated from the deputy-protocol crate by `deputy schema`; do not edit.\n\
         // Protocol version 1. See PROTOCOL.md for the semantics.\n",
    );
    for decl in decls {
        // The wire's event union is open (below); ts-rs's closed one is its known part.
        let decl = match decl.strip_prefix("type EventMsg = ") {
            Some(union) => format!("type KnownEventMsg = {union}"),
            None => decl,
        };
        contents.push('\n');
        contents.push_str("export ");
        contents.push_str(&plain_comment_links(&decl));
        contents.push('\n');
    }
    contents.push_str(&typescript_extras());
    GeneratedFile { path: "typescript/deputy-protocol.ts".into(), contents }
}

/// [`plain_doc_links`] inside the `/** … */` comments of TypeScript code.
fn plain_comment_links(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(start) = rest.find("/**") {
        let end = rest[start..].find("*/").map_or(rest.len(), |e| start + e + 2);
        out.push_str(&rest[..start]);
        out.push_str(&plain_doc_links(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The `type` of every event variant, in declaration order, as the JSON
/// Schema of [`Event`] lists them (`Unknown` is not on the wire).
pub fn known_event_types() -> Vec<String> {
    let schema = serde_json::to_value(schemars::schema_for!(Event)).expect("a schema always serializes");
    schema["$defs"]["EventMsg"]["oneOf"]
        .as_array()
        .expect("EventMsg is a tagged union")
        .iter()
        .map(|variant| variant["properties"]["type"]["const"].as_str().expect("a tag").to_owned())
        .collect()
}

/// `session/start` -> `SESSION_START`, `$/cancelRequest` -> `CANCEL_REQUEST`.
fn constant_name(method: &str) -> String {
    let mut name = String::new();
    for c in method.trim_start_matches("$/").chars() {
        match c {
            '/' => name.push('_'),
            c if c.is_ascii_uppercase() => {
                name.push('_');
                name.push(c);
            }
            c => name.push(c.to_ascii_uppercase()),
        }
    }
    name
}

/// What the types alone do not say: the version, the error codes, the
/// method names and their params/results per direction, the JSON-RPC
/// envelopes, and the open event union.
fn typescript_extras() -> String {
    use std::fmt::Write as _;
    let mut ts = String::new();
    let _ = write!(
        ts,
        "
/**
 * The protocol version this file describes; sent in `initialize`.
 */
export const PROTOCOL_VERSION = {PROTOCOL_VERSION};

/**
 * The JSON-RPC error codes used on a Deputy connection; PROTOCOL.md §4 says
 * when each is sent.
 */
export const ErrorCodes = {{
"
    );
    for (name, code) in crate::error_codes::ALL {
        let _ = writeln!(ts, "  {name}: {code},");
    }
    ts.push_str(
        "} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * Every method name of the protocol.
 */
export const Methods = {
",
    );
    for info in METHODS {
        let _ = writeln!(ts, "  {}: {:?},", constant_name(info.method), info.method);
    }
    ts.push_str("} as const;\n");

    let section = |ts: &mut String, name: &str, doc: &str, requests: bool, dirs: &[Direction]| {
        let _ = write!(ts, "\n/**\n * {doc}\n */\nexport type {name} = {{\n");
        for info in METHODS.iter().filter(|i| dirs.contains(&i.direction) && i.result.is_some() == requests) {
            match info.result {
                Some(result) => {
                    let _ =
                        writeln!(ts, "  {:?}: {{ params: {}, result: {result} }},", info.method, info.params);
                }
                None => {
                    let _ = writeln!(ts, "  {:?}: {{ params: {} }},", info.method, info.params);
                }
            }
        }
        ts.push_str("};\n");
    };
    use Direction::*;
    section(
        &mut ts,
        "HostRequests",
        "Requests a host sends to an agent: params and result by method.",
        true,
        &[HostToAgent, Either],
    );
    section(
        &mut ts,
        "HostNotifications",
        "Notifications a host sends to an agent: params by method.",
        false,
        &[HostToAgent, Either],
    );
    section(
        &mut ts,
        "AgentRequests",
        "Requests an agent sends to its host: params and result by method.",
        true,
        &[AgentToHost, Either],
    );
    section(
        &mut ts,
        "AgentNotifications",
        "Notifications an agent sends to its host: params by method.",
        false,
        &[AgentToHost, Either],
    );

    let known: Vec<String> = known_event_types().iter().map(|kind| format!("{kind:?}")).collect();
    let _ = write!(
        ts,
        r#"
export type HostRequestMethod = keyof HostRequests;
export type AgentRequestMethod = keyof AgentRequests;

/**
 * A JSON-RPC 2.0 request: answered by a response with the same `id`.
 */
export type JsonRpcRequest<M extends string = string, P = JsonValue> = {{ jsonrpc: "2.0", id: RequestId, method: M, params?: P }};

/**
 * A JSON-RPC 2.0 notification: never answered.
 */
export type JsonRpcNotification<M extends string = string, P = JsonValue> = {{ jsonrpc: "2.0", method: M, params?: P }};

/**
 * The `error` member of a failed response.
 */
export type JsonRpcErrorObject = {{ code: number, message: string, data?: JsonValue }};

/**
 * A successful response.
 */
export type JsonRpcSuccess<R = JsonValue> = {{ jsonrpc: "2.0", id: RequestId, result: R }};

/**
 * A failed response; `id` is `null` when the request could not be read.
 */
export type JsonRpcFailure = {{ jsonrpc: "2.0", id: RequestId | null, error: JsonRpcErrorObject }};

export type JsonRpcResponse<R = JsonValue> = JsonRpcSuccess<R> | JsonRpcFailure;

export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResponse;

/**
 * Every request a host may send, typed by method.
 */
export type HostRequest = {{ [M in keyof HostRequests]: JsonRpcRequest<M, HostRequests[M]["params"]> }}[keyof HostRequests];

/**
 * Every request an agent may send, typed by method.
 */
export type AgentRequest = {{ [M in keyof AgentRequests]: JsonRpcRequest<M, AgentRequests[M]["params"]> }}[keyof AgentRequests];

/**
 * Every notification an agent may send, typed by method.
 */
export type AgentNotification = {{ [M in keyof AgentNotifications]: JsonRpcNotification<M, AgentNotifications[M]["params"]> }}[keyof AgentNotifications];

/**
 * Every notification a host may send, typed by method.
 */
export type HostNotification = {{ [M in keyof HostNotifications]: JsonRpcNotification<M, HostNotifications[M]["params"]> }}[keyof HostNotifications];

declare const unknownEventType: unique symbol;

/**
 * The `type` of an event this file does not describe. At run time it is a
 * string (none of the known ones); the type checker sees an opaque mark
 * instead, so that `switch (msg.type)` and `msg.type === "…"` narrow to
 * the known events. `eventType(msg)` gives the string.
 */
export type UnknownEventType = {{ readonly [unknownEventType]: "an event type this version does not know" }};

/**
 * An event of a type this file does not describe (a newer agent's). Hosts
 * must ignore event types they do not know (PROTOCOL.md §3); Rust decodes
 * them as `EventMsg::Unknown`.
 */
export type UnknownEventMsg = {{ type: UnknownEventType, [field: string]: unknown }};

/**
 * What happened, tagged by `type`: one of the known events, or one of a
 * type this version does not know.
 */
export type EventMsg = KnownEventMsg | UnknownEventMsg;

export type KnownEventType = KnownEventMsg["type"];

/**
 * The `type` of every known event.
 */
export const KNOWN_EVENT_TYPES: readonly KnownEventType[] = [{known}];

/**
 * Whether `msg` is one of the events this file describes.
 */
export function isKnownEventMsg(msg: EventMsg): msg is KnownEventMsg {{
  return (KNOWN_EVENT_TYPES as readonly string[]).includes(eventType(msg));
}}

/**
 * The `type` of any event, known or not, as the string it is on the wire.
 */
export function eventType(msg: EventMsg | {{ type: string }}): string {{
  return msg.type as unknown as string;
}}
"#,
        known = known.join(", ")
    );
    ts
}

/// Compares generated files with a schema folder's contents; returns the
/// relative paths that differ, are missing, or are not generated (extra).
pub fn stale_files(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let generated = generate();
    let mut stale = Vec::new();
    for file in &generated {
        match std::fs::read_to_string(dir.join(&file.path)) {
            Ok(on_disk) if on_disk == file.contents => {}
            Ok(_) => stale.push(format!("{} (differs)", file.path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stale.push(format!("{} (missing)", file.path))
            }
            Err(e) => return Err(e),
        }
    }
    for sub in ["json", "typescript"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for entry in entries {
            let rel = format!("{sub}/{}", entry?.file_name().to_string_lossy());
            if !generated.iter().any(|f| f.path == rel) {
                stale.push(format!("{rel} (not generated; remove it)"));
            }
        }
    }
    Ok(stale)
}

/// Writes every generated file under `dir`, creating folders as needed.
pub fn write_all(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut written = Vec::new();
    for file in generate() {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.contents)?;
        written.push(file.path);
    }
    Ok(written)
}
