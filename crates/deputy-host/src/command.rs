//! What to run as the agent.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The agent program to spawn: program, arguments, environment and working
/// directory. Any program that speaks the Deputy protocol on stdio works;
/// [`AgentCommand::deputy_agent`] is the `deputy agent` of this installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    program: OsString,
    args: Vec<OsString>,
    /// `Some(v)`: set; `None`: remove.
    env: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    cwd: Option<PathBuf>,
    /// Run under this `deputy` binary's reaper (`deputy __reap PROGRAM …`).
    reaper: Option<PathBuf>,
}

impl AgentCommand {
    /// Runs `program` (looked up in `PATH` if it has no slash).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        AgentCommand {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            reaper: None,
        }
    }

    /// `deputy agent`, with the `deputy` binary of this installation: `$DEPUTY_BIN`
    /// if set; else a `deputy` next to the running executable (or one directory
    /// up, which is where it is for test binaries in `target/*/deps`); else
    /// `deputy` from `PATH`.
    pub fn deputy_agent() -> Self {
        let mut cmd = AgentCommand::new(find_deputy_binary());
        cmd.arg("agent");
        cmd
    }

    /// Appends an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the agent.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes an environment variable from what the agent inherits.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the agent with an empty environment (plus what [`env`](Self::env) sets).
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The agent's working directory (default: the host's).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Runs the program under `deputy`'s reaper (`deputy __reap PROGRAM
    /// ARGS…`, the `deputy` binary found as for [`deputy_agent`](Self::deputy_agent)):
    /// a child subreaper that stays the program's parent, so a process its
    /// tools leave behind — even one that double-forked into a session of its
    /// own — stays in the tree the host kills, and is killed when the
    /// program exits. For third-party agents (`deputy agent` is a subreaper
    /// itself). Linux; the program's stdio, environment and exit status pass
    /// through unchanged; if it cannot be started the reaper exits 127 with
    /// a line on stderr (an [`HostError::AgentExited`](crate::HostError::AgentExited),
    /// not a spawn error).
    pub fn reaped(&mut self) -> &mut Self {
        self.reaper = Some(find_deputy_binary());
        self
    }

    /// Like [`reaped`](Self::reaped), with the `deputy` binary named.
    pub fn reaped_by(&mut self, deputy: impl AsRef<Path>) -> &mut Self {
        self.reaper = Some(deputy.as_ref().to_owned());
        self
    }

    /// The program.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments.
    pub fn get_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// What the spawner starts: the program (the reaper, if any, with the
    /// program as its first argument), argv, the whole environment and the
    /// directory.
    pub(crate) fn launch(&self) -> crate::spawn::Launch {
        let (program, mut argv) = match &self.reaper {
            Some(deputy) => {
                let deputy = deputy.as_os_str().to_owned();
                (deputy.clone(), vec![deputy, "__reap".into(), self.program.clone()])
            }
            None => (self.program.clone(), vec![self.program.clone()]),
        };
        argv.extend(self.args.iter().cloned());
        crate::spawn::Launch {
            program,
            argv,
            env: crate::spawn::child_env(self.env_clear, &self.env),
            cwd: self.cwd.clone(),
        }
    }
}

fn find_deputy_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("DEPUTY_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let name = format!("deputy{}", std::env::consts::EXE_SUFFIX);
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for dir in [Some(dir), dir.parent()].into_iter().flatten() {
            let candidate = dir.join(&name);
            // `deputy exec` itself is the right program: it runs its own `agent`.
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    PathBuf::from(name)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_collects_everything() {
        let mut cmd = AgentCommand::new("agent-bin");
        cmd.arg("a").args(["b", "c"]).env("X", "1").env_remove("Y").current_dir("/tmp");
        assert_eq!(cmd.get_program(), "agent-bin");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/tmp")));
        let launch = cmd.launch();
        assert_eq!(launch.program, "agent-bin");
        assert_eq!(launch.argv, ["agent-bin", "a", "b", "c"]);
        assert!(launch.env.contains(&(OsString::from("X"), OsString::from("1"))));
        assert!(!launch.env.iter().any(|(k, _)| k == "Y"));
        assert_eq!(launch.cwd.as_deref(), Some(Path::new("/tmp")));
        let mut reaped = AgentCommand::new("agent-bin");
        reaped.arg("a").reaped_by("/opt/deputy").env_clear().env("Z", "2");
        let launch = reaped.launch();
        assert_eq!(launch.program, "/opt/deputy");
        assert_eq!(launch.argv, ["/opt/deputy", "__reap", "agent-bin", "a"]);
        assert_eq!(launch.env, [(OsString::from("Z"), OsString::from("2"))]);
    }

    #[test]
    fn deputy_agent_runs_the_agent_subcommand() {
        let cmd = AgentCommand::deputy_agent();
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["agent"]);
        let program = Path::new(cmd.get_program());
        assert!(program.file_name().unwrap().to_string_lossy().starts_with("deputy"));
    }
}
