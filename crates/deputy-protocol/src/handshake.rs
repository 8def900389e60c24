//! `initialize` and `session/start`.
//!
//! Params fields with a serde default are also optional in the generated
//! TypeScript (`#[ts(optional, as = "Option<…>")]`), so a client may omit them.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ts_rs::TS;

use crate::InitialHistory;

/// Who is on the other end, for logs and rollouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct PeerInfo {
    /// A short program name, e.g. `"deputy"` or `"my-editor-extension"`.
    pub name: String,
    /// The program's version, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub version: Option<String>,
}

/// What the host (client) can do. Agents ignore what they do not know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
pub struct ClientCapabilities {
    /// The longest line, in bytes, this host reads; the agent never writes a
    /// longer one (an event or request over it is not sent; see PROTOCOL.md
    /// §1 "Flow control and limits"). Absent: no limit announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub max_line_bytes: Option<u64>,
    /// Free-form, non-standard capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub experimental: Option<Value>,
}

/// Params of `initialize`, the first request a host sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
pub struct InitializeParams {
    /// The protocol version the host speaks; [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The host program's name and version.
    pub client_info: PeerInfo,
    /// What the host can do; absent: nothing announced.
    #[serde(default)]
    #[ts(optional, as = "Option<ClientCapabilities>")]
    pub capabilities: ClientCapabilities,
    /// Extension point: anything, ignored by peers that do not know it.
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    #[ts(rename = "_meta", optional)]
    pub meta: Option<Value>,
}

/// What the agent can do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct AgentCapabilities {
    /// The `Op` types this agent accepts in `submit` (e.g. `user_input`,
    /// `interrupt`, `shutdown`).
    #[serde(default)]
    pub ops: Vec<String>,
    /// The models (brains) this agent can run, by name (e.g. `shell`, `script`).
    #[serde(default)]
    pub models: Vec<String>,
    /// The `InitialHistory` types this agent supports (`new`, `resumed`, `forked`).
    #[serde(default)]
    pub initial_history: Vec<String>,
    /// The longest line, in bytes, this agent reads; longer lines are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub max_line_bytes: Option<u64>,
    /// What command sandboxing this agent can enforce on this kernel
    /// (absent: an agent that does not sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub sandbox: Option<SandboxSupport>,
}

/// The sandbox this agent can enforce here, as probed at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct SandboxSupport {
    /// The kernel's Landlock ABI version (0: no Landlock). The file-system
    /// rules need 3 or more; 4 adds TCP bind/connect rules; 6 adds scoping
    /// of abstract unix sockets and signals.
    #[serde(default)]
    pub landlock_abi: u32,
    /// Whether seccomp filters are available (the network rule needs them).
    #[serde(default)]
    pub seccomp: bool,
    /// The `sandbox` modes a session can ask for without `sandbox_best_effort`
    /// (always contains `off`).
    #[serde(default)]
    pub modes: Vec<SandboxMode>,
}

/// How the commands of a session are confined (PROTOCOL.md, "Sandbox").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Read everything; write only under `cwd`, `writable_roots` (and
    /// directories granted during the session) and the temp dir; no network
    /// unless `network` is true. The default.
    #[default]
    WorkspaceWrite,
    /// Read everything; write only the temp dir; no network unless `network`.
    ReadOnly,
    /// No sandbox: commands have the agent's full rights.
    Off,
}

/// Result of `initialize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
pub struct InitializeResult {
    /// The protocol version the agent will speak (equal to the requested one).
    pub protocol_version: u32,
    /// The agent program's name and version.
    pub agent_info: PeerInfo,
    /// What the agent can do.
    #[serde(default)]
    pub capabilities: AgentCapabilities,
    /// Extension point: anything, ignored by peers that do not know it.
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    #[ts(rename = "_meta", optional)]
    pub meta: Option<Value>,
}

/// Why the session exists: who started it. Recorded in the rollout.
///
/// On the wire: `"cli"`, `"exec"`, `"ide"`, `"mcp"`, `"unknown"`,
/// `{"subagent": "review"}`, `{"subagent": "compact"}` or
/// `{"subagent": {"other": "NAME"}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum SessionSource {
    /// A person at a command line (e.g. `deputy chat`).
    Cli,
    /// A non-interactive run (e.g. `deputy exec`, a script).
    Exec,
    /// An editor or IDE extension.
    Ide,
    /// Started through MCP (e.g. as the tool of an MCP server).
    Mcp,
    /// Another agent that delegated a task to this session.
    Subagent(SubAgentSource),
    /// Not said (the default).
    #[default]
    Unknown,
}

/// What a sub-agent session was delegated to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum SubAgentSource {
    /// Reviewing changes.
    Review,
    /// Compacting (summarising) a long history.
    Compact,
    /// Any other task, by name.
    Other(String),
}

/// When the agent asks the host before running a tool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalPolicy {
    /// Ask before every command and every patch (the default for a sub-agent).
    #[default]
    AskAlways,
    /// Ask unless the command is a known read-only one, by bare name from
    /// the system `PATH` (`ls`, `cat`, `grep`, …; never a path, never `git`);
    /// patches are always asked.
    AskUnlessReadOnly,
    /// Never ask: every tool call runs. An explicit opt-in.
    NeverAsk,
    /// Commands run in the sandbox without asking; a command that fails in
    /// a way that looks like a sandbox denial is asked about again
    /// (`approval/exec` with `unsandboxed: true`) to re-run it outside the
    /// sandbox. Patches inside the workspace apply unasked; patches outside
    /// are asked every time. With `sandbox: "off"` (or a sandbox that could
    /// not be enforced) it behaves as `ask_always`.
    AskToEscalate,
}

/// Which brain decides the turn's actions, and its settings.
///
/// Built-in names: `shell` (deterministic, no network: `$ cmd` lines run,
/// patch blocks apply, other text is echoed back) and `script` (plays
/// `scenario`). Other names are agent-specific (e.g. `openai:MODEL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct ModelSelection {
    /// The brain's name: `shell`, `script`, or an agent-specific one.
    pub name: String,
    /// Path of a scenario file, for the `script` model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub scenario: Option<PathBuf>,
    /// Base URL of an HTTP model endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the endpoint's API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub api_key_env: Option<String>,
}

impl ModelSelection {
    /// The model called `name`, with no other settings.
    pub fn named(name: impl Into<String>) -> Self {
        ModelSelection { name: name.into(), scenario: None, base_url: None, api_key_env: None }
    }
}

/// How commands run by the agent are set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct ExecSettings {
    /// Per-command timeout in milliseconds (default 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub timeout_ms: Option<u64>,
    /// Keep environment variables whose names contain KEY, SECRET, TOKEN or
    /// PASSWORD (they are removed by default).
    #[serde(default)]
    #[ts(optional, as = "Option<bool>")]
    pub keep_secret_env: bool,
}

/// What a `user_input` does when it arrives while a turn is running (and
/// that turn was not told to stop already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, TS)]
#[serde(rename_all = "snake_case")]
pub enum OnBusy {
    /// Answered with error -32014 (turn in progress); nothing changes.
    #[default]
    Reject,
    /// Accepted at once (the `submit` response comes now); the turn starts
    /// after the running one (and every input queued before it) ended.
    Queue,
    /// The running turn is aborted (`turn_aborted {reason: "replaced"}`) and
    /// this one starts after it, in order behind inputs already queued.
    Replace,
}

/// Params of `session/start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, TS)]
pub struct SessionStartParams {
    /// The session's working directory: commands run here and patches are
    /// relative to it. Must be absolute.
    pub cwd: PathBuf,
    /// Who started the session (default `unknown`).
    #[serde(default)]
    #[ts(optional, as = "Option<SessionSource>")]
    pub source: SessionSource,
    /// What the session starts from (default `{"type":"new"}`).
    #[serde(default)]
    #[ts(optional, as = "Option<InitialHistory>")]
    pub initial_history: InitialHistory,
    /// When the agent asks before running a tool (default `ask_always`).
    #[serde(default)]
    #[ts(optional, as = "Option<ApprovalPolicy>")]
    pub approval_policy: ApprovalPolicy,
    /// The brain; the agent's default (`shell` for `deputy agent`) if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub model: Option<ModelSelection>,
    /// Directories, besides `cwd`, that patches may write to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[ts(optional, as = "Option<Vec<PathBuf>>")]
    pub writable_roots: Vec<PathBuf>,
    /// How commands run: timeout and environment (defaults if absent).
    #[serde(default)]
    #[ts(optional, as = "Option<ExecSettings>")]
    pub exec: ExecSettings,
    /// What a `user_input` does while a turn runs (default `reject`). Whatever
    /// this says, a `user_input` that arrives after the running turn was told
    /// to stop (an `interrupt`) waits for that turn's `turn_aborted` and then
    /// starts: it is never rejected.
    #[serde(default)]
    #[ts(optional, as = "Option<OnBusy>")]
    pub on_busy: OnBusy,
    /// How commands are confined. Absent: `workspace_write`, best effort
    /// (on a kernel without Landlock/seccomp the session starts with a
    /// `warning` event instead of failing). Given explicitly, it is enforced
    /// or `session/start` fails with -32016, unless `sandbox_best_effort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub sandbox: Option<SandboxMode>,
    /// Allow the network to sandboxed commands (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[ts(optional, as = "Option<bool>")]
    pub network: bool,
    /// When the kernel cannot enforce the sandbox: true starts the session
    /// anyway (commands then run unsandboxed, a `warning` event says so and
    /// every `exec_command_begin` carries `unsandboxed: true`); false fails
    /// `session/start` with -32016. Default: false when `sandbox` is given,
    /// true when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub sandbox_best_effort: Option<bool>,
    /// Extension point: anything, ignored by peers that do not know it.
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    #[ts(rename = "_meta", optional)]
    pub meta: Option<Value>,
}

impl SessionStartParams {
    /// A new session in `cwd` with every other setting at its default.
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        SessionStartParams {
            cwd: cwd.into(),
            source: SessionSource::default(),
            initial_history: InitialHistory::New,
            approval_policy: ApprovalPolicy::default(),
            model: None,
            writable_roots: Vec::new(),
            exec: ExecSettings::default(),
            on_busy: OnBusy::default(),
            sandbox: None,
            network: false,
            sandbox_best_effort: None,
            meta: None,
        }
    }
}

/// Result of `session/start`. The agent also emits `session_configured`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, TS)]
pub struct SessionStartResult {
    /// The session's id: give it as `session_id` to resume the session later.
    pub session_id: String,
    /// Where the session's rollout is written, if it is persisted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub rollout_path: Option<PathBuf>,
}
