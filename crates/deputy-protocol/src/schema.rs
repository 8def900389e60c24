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
    HostToAgent,
    AgentToHost,
    Either,
}

/// One method of the protocol and the types of its params and result.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    pub method: &'static str,
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
    pub path: String,
    pub contents: String,
}

fn json_schema<T: JsonSchema>(name: &str) -> GeneratedFile {
    let schema = schemars::schema_for!(T);
    let mut contents = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    contents.push('\n');
    GeneratedFile { path: format!("json/{name}.json"), contents }
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
        contents.push('\n');
        contents.push_str("export ");
        contents.push_str(&decl);
        contents.push('\n');
    }
    GeneratedFile { path: "typescript/deputy-protocol.ts".into(), contents }
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
