//! [`ScriptedAgent`]: a fake agent that plays a script, for testing hosts.
//!
//! The agent is Deputy's own engine (`deputy-agent`) with its `script`
//! brain (PROTOCOL.md, appendix A), linked into the **test executable
//! itself**: [`ScriptedAgent::command`] runs the current executable again
//! with a marker argument, and a constructor of this crate (an ELF
//! `.init_array` entry, which runs before `main` and before the test
//! harness could print anything) sees the marker, serves the protocol on
//! stdio and exits. No `deputy` binary needs to be installed or built: bin
//! targets of a dependency are not built for its users, and a hidden
//! subcommand of `deputy` would need the binary, so the kit brings the
//! engine along instead. See the crate docs for the why and the limits.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deputy_agent::model::script::{Scenario, Step};
use serde::{Deserialize, Serialize};

/// The argument that makes a test executable serve the scripted agent.
pub const ENTRY_ARG: &str = "__deputy_testkit_agent";

/// A scripted fake agent: build its turns step by step, then run it as the
/// agent of the host under test ([`agent_command`](Self::agent_command) for
/// `deputy-host`, [`command`](Self::command) for `std`/assert_cmd,
/// [`command_line`](Self::command_line) for a host that takes a command
/// line).
///
/// Each turn plays when a `user_input` arrives: the first input plays the
/// first turn, and so on ([`next_turn`](Self::next_turn) starts the next
/// one). The steps behave exactly as in `deputy agent --model script`
/// (PROTOCOL.md, appendix A): `exec` and `patch` ask for approval under the
/// session's policy and really run or apply; `wait_for_interrupt` holds the
/// turn until the host interrupts it. The host may still name another model
/// in `session/start`; the script is only the default.
///
/// ```
/// use std::sync::Arc;
/// use deputy_host::{ApproveAll, CancellationToken, ConversationConfig, OneShot};
/// use deputy_protocol::{EventMsg, InputItem, SessionStartParams};
/// use deputy_testkit::ScriptedAgent;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let agent = ScriptedAgent::new().message("hi").exec(["true"]).message("bye");
/// let dir = tempfile::tempdir()?;
/// let mut turn = OneShot::run(
///     agent.agent_command(),
///     ConversationConfig::new(SessionStartParams::new(dir.path().canonicalize()?)),
///     Arc::new(ApproveAll),
///     vec![InputItem::Text { text: "go".into() }],
///     CancellationToken::new(),
/// )
/// .await?;
/// let mut ran = Vec::new();
/// while let Some(event) = turn.next_event().await {
///     if let EventMsg::ExecCommandBegin { command, .. } = event.msg {
///         ran.push(command);
///     }
/// }
/// assert_eq!(ran, [["true"]]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedAgent {
    turns: Vec<Vec<Step>>,
    home: Option<PathBuf>,
}

impl Default for ScriptedAgent {
    fn default() -> Self {
        ScriptedAgent::new()
    }
}

/// What the parent hands the child on its command line.
#[derive(Serialize, Deserialize)]
struct EntryConfig {
    /// The scenario file's text.
    scenario: String,
    /// The Deputy home (`None`: a private temporary one).
    home: Option<PathBuf>,
}

impl ScriptedAgent {
    /// A script with one empty turn.
    pub fn new() -> Self {
        ScriptedAgent { turns: vec![Vec::new()], home: None }
    }

    fn step(mut self, step: Step) -> Self {
        self.turns.last_mut().expect("there is always a turn").push(step);
        self
    }

    /// Streams `text` (as `agent_message_delta`s), then one `agent_message`.
    pub fn message(self, text: impl Into<String>) -> Self {
        self.step(Step::Message { text: text.into(), chunk_chars: None })
    }

    /// Like [`message`](Self::message), in deltas of `chunk_chars` characters.
    pub fn message_in_chunks(self, text: impl Into<String>, chunk_chars: usize) -> Self {
        self.step(Step::Message { text: text.into(), chunk_chars: Some(chunk_chars) })
    }

    /// One `agent_reasoning`.
    pub fn reasoning(self, text: impl Into<String>) -> Self {
        self.step(Step::Reasoning { text: text.into() })
    }

    /// Runs a command (an argv, no shell), after `approval/exec` if the
    /// session's policy asks.
    pub fn exec<I, S>(self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.step(Step::Exec { command: argv.into_iter().map(Into::into).collect(), reason: None })
    }

    /// Like [`exec`](Self::exec), with a `reason` in the approval request.
    pub fn exec_with_reason<I, S>(self, argv: I, reason: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.step(Step::Exec {
            command: argv.into_iter().map(Into::into).collect(),
            reason: Some(reason.into()),
        })
    }

    /// Applies a patch (`*** Begin Patch` … `*** End Patch`, PROTOCOL.md §5),
    /// after `approval/patch` if the policy asks.
    pub fn patch(self, patch: impl Into<String>) -> Self {
        self.step(Step::Patch { patch: patch.into() })
    }

    /// Waits (an interrupt ends the wait at once).
    pub fn sleep(self, duration: Duration) -> Self {
        self.step(Step::Sleep { ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX) })
    }

    /// One `token_count` event.
    pub fn token_count(self, input_tokens: u64, output_tokens: u64) -> Self {
        self.step(Step::TokenCount { input_tokens, output_tokens })
    }

    /// `n` small `agent_message_delta`s as fast as the host takes them.
    pub fn flood(self, n: u64) -> Self {
        self.step(Step::Flood { n, delta: None })
    }

    /// Holds the turn until the host interrupts it (or shuts the agent down).
    pub fn wait_for_interrupt(self) -> Self {
        self.step(Step::WaitForInterrupt)
    }

    /// `n` sequential `approval/exec` round trips for `["true"]`; nothing runs.
    pub fn ask_approval_only(self, n: u64) -> Self {
        self.step(Step::AskApprovalOnly { n, in_flight: None })
    }

    /// Exits with `code` at once, like a crash (no `turn_aborted`, no
    /// `shutdown_complete`).
    pub fn exit(self, code: i32) -> Self {
        self.step(Step::Exit { code, stderr: None })
    }

    /// Like [`exit`](Self::exit), writing `stderr` first.
    pub fn exit_with_stderr(self, code: i32, stderr: impl Into<String>) -> Self {
        self.step(Step::Exit { code, stderr: Some(stderr.into()) })
    }

    /// Stops answering anything, ignores SIGTERM and starts a grandchild that
    /// holds its stdout: only a tree kill ends it (for testing a host's
    /// cancel ladder).
    pub fn hang(self) -> Self {
        self.step(Step::Hang)
    }

    /// Starts the next turn: the steps after this play on the next
    /// `user_input`.
    pub fn next_turn(mut self) -> Self {
        self.turns.push(Vec::new());
        self
    }

    /// Keeps the agent's sessions (rollouts) under this Deputy home instead
    /// of a private temporary one that is removed when the agent exits.
    pub fn home(mut self, dir: impl Into<PathBuf>) -> Self {
        self.home = Some(dir.into());
        self
    }

    /// The script as a scenario of the `script` brain.
    pub fn scenario(&self) -> Scenario {
        Scenario { turns: self.turns.clone() }
    }

    /// The scenario file's text (for `deputy agent --model script
    /// --scenario FILE`, if you would rather run the installed binary).
    pub fn scenario_jsonl(&self) -> String {
        self.scenario().to_jsonl()
    }

    /// The fake agent's argv: this executable, the marker, the script.
    ///
    /// # Panics
    ///
    /// Where the kit's entry point cannot run: not Linux, or (in theory) a
    /// linker that dropped it; the message says so.
    pub fn argv(&self) -> Vec<OsString> {
        assert_entry_linked();
        let exe = std::env::current_exe().expect("the path of the current executable");
        let config = EntryConfig { scenario: self.scenario_jsonl(), home: self.home.clone() };
        let config = serde_json::to_string(&config).expect("the config serializes");
        vec![exe.into_os_string(), ENTRY_ARG.into(), config.into()]
    }

    /// The fake agent as a `std` command (wrap it with
    /// `assert_cmd::Command::from_std` for assert_cmd).
    pub fn command(&self) -> std::process::Command {
        let argv = self.argv();
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    /// The fake agent as a `deputy-host` agent command.
    pub fn agent_command(&self) -> deputy_host::AgentCommand {
        let argv = self.argv();
        let mut cmd = deputy_host::AgentCommand::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    /// The fake agent as one shell-quoted command line, for a host that
    /// takes one (e.g. `deputy exec --agent LINE`).
    pub fn command_line(&self) -> String {
        let words: Vec<String> = self.argv().iter().map(|w| w.to_string_lossy().into_owned()).collect();
        shlex::try_join(words.iter().map(String::as_str)).expect("no NUL byte in the command line")
    }
}

/// Set by the constructor in every process that links it.
static ENTRY_RAN: AtomicBool = AtomicBool::new(false);

fn assert_entry_linked() {
    #[cfg(target_os = "linux")]
    {
        // Referencing the constructor keeps it (and its `.init_array`
        // entry) in every executable that builds a scripted agent.
        std::hint::black_box(&ENTRY_HOOK);
    }
    assert!(
        ENTRY_RAN.load(Ordering::SeqCst),
        "deputy-testkit: the scripted agent's entry point did not run in this executable \
         (it needs Linux, where it runs from `.init_array`); run `deputy agent --model script \
         --scenario FILE` with ScriptedAgent::scenario_jsonl() instead"
    );
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static ENTRY_HOOK: extern "C" fn() = entry_hook;

/// Runs before `main` in every executable that links this crate: with the
/// marker as its first argument the process is the scripted agent, and
/// never returns to `main` (so the test harness never starts).
extern "C" fn entry_hook() {
    ENTRY_RAN.store(true, Ordering::SeqCst);
    // Read the arguments from /proc: not every libc passes them to
    // constructors (musl does not).
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else { return };
    let mut args = cmdline.split(|b| *b == 0);
    let _exe = args.next();
    if args.next() != Some(ENTRY_ARG.as_bytes()) {
        return;
    }
    let config = args.next().unwrap_or_default().to_vec();
    let code = std::panic::catch_unwind(|| serve(&config)).unwrap_or(101);
    std::process::exit(code);
}

/// The scratch directories' names: this, the agent's pid, `-`, a time.
const SCRATCH_PREFIX: &str = "deputy-testkit-agent-";

/// Removes the scratch directories of scripted agents that are gone: an
/// agent killed by its host (the end of every cancel ladder) cannot clean up
/// after itself, and one that exits may race its own writer threads. Only
/// directories whose process no longer exists are touched.
fn sweep_dead_scratch(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: signal 0 only checks that the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Where the private home and the scenario live, removed at exit.
static SCRATCH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The scripted agent's `main`.
fn serve(config: &[u8]) -> i32 {
    // What Rust's own `main` would have done: a closed pipe is an error to
    // handle, not a signal that kills.
    // SAFETY: setting a signal disposition has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let config: EntryConfig = match serde_json::from_slice(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("deputy-testkit scripted agent: bad configuration argument: {e}");
            return 2;
        }
    };
    let tmp = std::env::temp_dir();
    sweep_dead_scratch(&tmp);
    let scratch = tmp.join(format!(
        "{SCRATCH_PREFIX}{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    ));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("deputy-testkit scripted agent: cannot create {}: {e}", scratch.display());
        return 1;
    }
    let _ = SCRATCH.set(scratch.clone());
    // SAFETY: registers a plain function; it runs at `exit`, also when a
    // scripted `exit` step ends the process.
    unsafe { libc::atexit(remove_scratch) };
    let scenario = scratch.join("scenario.jsonl");
    if let Err(e) = std::fs::write(&scenario, &config.scenario) {
        eprintln!("deputy-testkit scripted agent: cannot write {}: {e}", scenario.display());
        return 1;
    }
    let home = config.home.unwrap_or_else(|| scratch.join("home"));
    deputy_agent::init_logging(deputy_agent::LogFormat::Text);
    if let Err(e) = deputy_agent::prepare_home(&home) {
        eprintln!("deputy-testkit scripted agent: unusable home {}: {e}", home.display());
        return 1;
    }
    let mut agent = deputy_agent::AgentConfig::new(home);
    agent.default_model = "script".into();
    agent.default_scenario = Some(scenario);
    deputy_agent::run_stdio(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_become_the_scenario_format() {
        let agent = ScriptedAgent::new()
            .message("hi")
            .exec(["ls", "-l"])
            .sleep(Duration::from_millis(5))
            .next_turn()
            .wait_for_interrupt();
        assert_eq!(
            agent.scenario_jsonl(),
            concat!(
                r#"{"steps":[{"type":"message","text":"hi"},{"type":"exec","command":["ls","-l"]},{"type":"sleep","ms":5}]}"#,
                "\n",
                r#"{"steps":[{"type":"wait_for_interrupt"}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn the_command_line_splits_back_into_the_argv() {
        let agent = ScriptedAgent::new().message("it's \"quoted\" $HOME");
        let words = shlex::split(&agent.command_line()).unwrap();
        let argv: Vec<String> = agent.argv().iter().map(|w| w.to_string_lossy().into_owned()).collect();
        assert_eq!(words, argv);
        assert_eq!(argv[1], ENTRY_ARG);
    }
}
