//! Agent settings, the Deputy home, and logging.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use deputy_rpc::PeerConfig;

use crate::model::openai::OpenAiSettings;

/// How `deputy agent` is set up (the CLI's flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Deputy home: rollouts go to `<home>/sessions/…`.
    pub home: PathBuf,
    /// The brain used when `session/start` names none (`shell` by default).
    pub default_model: String,
    /// The scenario file used by the `script` brain when `session/start`
    /// names none.
    pub default_scenario: Option<PathBuf>,
    /// Transport settings.
    pub peer: PeerConfig,
    /// Defaults of the `openai:MODEL` brain (`base_url` and `api_key_env`
    /// are used when `session/start` names none).
    pub openai: OpenAiSettings,
    /// The most model calls one turn may make (default
    /// [`DEFAULT_MAX_MODEL_CALLS`]); the call that would exceed it is not
    /// made: an `error` event, then `task_complete`.
    pub max_model_calls: u32,
    /// The protocol served (default: Deputy's own).
    pub protocol: Protocol,
}

/// Which protocol the agent speaks on stdio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Deputy's own (PROTOCOL.md).
    #[default]
    Native,
    /// The Agent Client Protocol v1, for editors (PROTOCOL.md, "ACP").
    Acp,
}

/// The default cap on model calls per turn.
pub const DEFAULT_MAX_MODEL_CALLS: u32 = 32;

impl AgentConfig {
    /// Defaults with this home: the `shell` brain, no scenario.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        AgentConfig {
            home: home.into(),
            default_model: "shell".to_owned(),
            default_scenario: None,
            peer: PeerConfig::default(),
            openai: OpenAiSettings::default(),
            max_model_calls: DEFAULT_MAX_MODEL_CALLS,
            protocol: Protocol::Native,
        }
    }
}

/// `$DEPUTY_HOME`, else `$HOME/.deputy`.
pub fn default_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("DEPUTY_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".deputy"))
}

/// Makes sure `<home>/sessions` exists and is writable. Cheap: no scanning.
pub fn prepare_home(home: &Path) -> Result<(), String> {
    let sessions = crate::rollout::sessions_dir(home);
    std::fs::create_dir_all(&sessions).map_err(|e| format!("cannot create {}: {e}", sessions.display()))?;
    let c = std::ffi::CString::new(sessions.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("bad path {}", sessions.display()))?;
    // SAFETY: a NUL-terminated path and a plain syscall.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(format!("{} is not writable: {}", sessions.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The format of the logs on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber: **stderr only** (stdout carries
/// the protocol), filtered by `RUST_LOG` (default `warn`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
