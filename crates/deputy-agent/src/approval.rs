//! When to ask the host before running a tool, and what the session already
//! granted.
//!
//! # Read-only commands (`ask_unless_read_only`)
//!
//! Under `ask_unless_read_only` an argv runs without asking when its program
//! (the first element) is a **bare name** (no `/`: `./cat` and `/bin/cat` are
//! paths and always ask) that the agent's `PATH` resolves to a file outside
//! the workspace (cwd and writable roots, symlinks resolved) through absolute
//! `PATH` entries only (an empty or relative entry before the match means the
//! resolution depends on the cwd: it asks), and the name is one of:
//!
//! `ls`, `cat`, `head`, `tail`, `wc`, `pwd`, `echo`, `true`, `false`, `grep`,
//! `egrep`, `fgrep`, `rg` (without `--pre`, `--pre-glob`, `--hostname-bin`, `-z`
//! or `--search-zip`), `find` (without `-exec`, `-execdir`, `-ok`, `-okdir`,
//! `-delete`, `-fls`, `-fprint`, `-fprint0` or `-fprintf`), `stat`, `file`,
//! `du`, `df`, `tree`, `nl`, `basename`, `dirname`, `realpath`, `readlink`,
//! `which`, `whoami`, `id`, `uname`, `cut`, `diff`, `cmp`, `md5sum`,
//! `sha1sum`, `sha256sum`.
//!
//! Why a path never counts: the workspace is writable by the agent, so a file
//! named `cat` in it is whatever the model made it. Why `git` is not on the
//! list at all: every git command reads the repository's `.git/config`, which
//! lives in the workspace and can name programs git then runs (`core.fsmonitor`
//! from `git status`, `core.pager`, `diff.external` and textconv drivers from
//! `git diff`/`log`/`show`/`blame`, hooks via `core.hooksPath`), so no git
//! subcommand is read-only in a workspace the model can write.
//!
//! Everything else asks, including shells (`sh -c …`), `git`, `sed`, `sort`
//! (`-o` writes), `env` (runs a program) and `date` (`-s` sets the clock).
//! Patches always ask under `ask_unless_read_only`.

use std::collections::HashSet;
use std::path::PathBuf;

use deputy_protocol::ApprovalPolicy;

const READ_ONLY: &[&str] = &[
    "ls",
    "cat",
    "head",
    "tail",
    "wc",
    "pwd",
    "echo",
    "true",
    "false",
    "grep",
    "egrep",
    "fgrep",
    "stat",
    "file",
    "du",
    "df",
    "tree",
    "nl",
    "basename",
    "dirname",
    "realpath",
    "readlink",
    "which",
    "whoami",
    "id",
    "uname",
    "cut",
    "diff",
    "cmp",
    "md5sum",
    "sha1sum",
    "sha256sum",
];

/// Whether `argv` is a known read-only command (see the module docs), given
/// the workspace's roots (absolute).
pub fn is_read_only(argv: &[String], workspace: &[PathBuf]) -> bool {
    let Some(name) = argv.first() else { return false };
    if name.is_empty() || name.contains('/') || !is_listed(name, &argv[1..]) {
        return false;
    }
    match resolve_in_path(name, std::env::var_os("PATH").as_deref()) {
        Some(program) => {
            let roots: Vec<PathBuf> =
                workspace.iter().map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone())).collect();
            !roots.iter().any(|r| program.starts_with(r))
        }
        None => false,
    }
}

/// Where `PATH` finds `name` (canonical), as `execvp` would; `None` when it
/// does not, or when an empty or relative entry comes first (its meaning
/// depends on the cwd, which the model controls).
fn resolve_in_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    for dir in std::env::split_paths(path?) {
        if !dir.is_absolute() {
            return None;
        }
        let candidate = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return std::fs::canonicalize(&candidate).ok();
        }
    }
    None
}

/// Whether the name and its arguments are on the read-only list.
fn is_listed(name: &str, args: &[String]) -> bool {
    match name {
        "rg" => !args.iter().any(|a| {
            matches!(a.as_str(), "-z" | "--search-zip" | "--pre" | "--pre-glob" | "--hostname-bin")
                || a.starts_with("--pre=")
                || a.starts_with("--pre-glob=")
                || a.starts_with("--hostname-bin=")
        }),
        "find" => !args.iter().any(|a| {
            matches!(
                a.as_str(),
                "-exec"
                    | "-execdir"
                    | "-ok"
                    | "-okdir"
                    | "-delete"
                    | "-fls"
                    | "-fprint"
                    | "-fprint0"
                    | "-fprintf"
            )
        }),
        other => READ_ONLY.contains(&other),
    }
}

/// The approval policy plus what the session has granted so far.
#[derive(Debug, Default)]
pub struct Approvals {
    /// When the session asks the host before running a tool.
    pub policy: ApprovalPolicy,
    /// Whether the session's commands run in an enforced sandbox (what
    /// `ask_to_escalate` relies on; without it that policy asks as
    /// `ask_always` does).
    pub sandboxed: bool,
    /// Argvs answered `approved_for_session`.
    exec_grants: HashSet<Vec<String>>,
    /// Files (absolute) covered by a patch answered `approved_for_session`.
    patch_grants: HashSet<PathBuf>,
}

impl Approvals {
    /// Under `policy`, unsandboxed, with nothing granted yet.
    pub fn new(policy: ApprovalPolicy) -> Self {
        Approvals { policy, ..Approvals::default() }
    }

    /// With the session's sandbox enforced or not.
    pub fn sandboxed(mut self, sandboxed: bool) -> Self {
        self.sandboxed = sandboxed;
        self
    }

    /// Whether a sandboxed command that failed on a denial is offered to
    /// re-run outside the sandbox (`ask_to_escalate` with an enforced sandbox).
    pub fn escalates(&self) -> bool {
        self.policy == ApprovalPolicy::AskToEscalate && self.sandboxed
    }

    /// Whether running `argv` needs the host's approval; `workspace` is the
    /// session's writable roots (a program inside them is never read-only).
    pub fn exec_needs_approval(&self, argv: &[String], workspace: &[PathBuf]) -> bool {
        match self.policy {
            ApprovalPolicy::NeverAsk => false,
            ApprovalPolicy::AskUnlessReadOnly if is_read_only(argv, workspace) => false,
            // The sandbox is the boundary: a denial is asked about after.
            ApprovalPolicy::AskToEscalate if self.sandboxed => false,
            _ => !self.exec_grants.contains(argv),
        }
    }

    /// Whether a patch touching `files` (absolute paths, inside the
    /// workspace: a patch writing outside is asked every time by the turn)
    /// needs approval.
    pub fn patch_needs_approval(&self, files: &[PathBuf]) -> bool {
        match self.policy {
            ApprovalPolicy::NeverAsk => false,
            ApprovalPolicy::AskToEscalate if self.sandboxed => false,
            _ => !files.iter().all(|f| self.patch_grants.contains(f)),
        }
    }

    /// Remembers an `approved_for_session` answer for this exact argv.
    pub fn grant_exec(&mut self, argv: Vec<String>) {
        self.exec_grants.insert(argv);
    }

    /// Remembers an `approved_for_session` answer for these files (absolute paths).
    pub fn grant_patch(&mut self, files: &[PathBuf]) {
        self.patch_grants.extend(files.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn read_only_list() {
        let ws = [PathBuf::from("/nonexistent-workspace")];
        for ok in ["ls -la", "cat x", "find . -name x", "pwd", "wc -l f"] {
            assert!(is_read_only(&v(ok), &ws), "{ok}");
        }
        for no in [
            "/bin/cat x",
            "./cat x",
            "tools/cat x",
            "git status",
            "git diff HEAD",
            "git -c core.fsmonitor=evil status",
            "rm -rf x",
            "git commit -m x",
            "git -c core.pager=evil log",
            "git diff --output=/tmp/x",
            "rg --pre evil foo",
            "find . -delete",
            "find . -exec rm {} ;",
            "sh -c ls",
            "sed -i s/a/b/ f",
            "env rm x",
            "",
        ] {
            assert!(!is_read_only(&v(no), &ws), "{no}");
        }
        // rg is listed but may not be installed; its option rules still apply.
        assert!(!is_listed("rg", &v("--pre evil foo")));
        assert!(is_listed("rg", &v("foo")));
    }

    #[test]
    fn path_resolution_is_absolute_only_and_outside_the_workspace() {
        use std::ffi::OsStr;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let cat = bin.join("cat");
        std::fs::write(&cat, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&cat, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let found = resolve_in_path("cat", Some(OsStr::new(&path))).unwrap();
        assert_eq!(found, cat.canonicalize().unwrap());
        // A relative entry first: the answer depends on the cwd, so none.
        assert_eq!(resolve_in_path("cat", Some(OsStr::new("tools:/usr/bin:/bin"))), None);
        assert_eq!(resolve_in_path("cat", Some(OsStr::new(":/usr/bin:/bin"))), None);
        assert_eq!(resolve_in_path("no-such-program-here", Some(OsStr::new("/usr/bin:/bin"))), None);
    }

    #[test]
    fn policies_and_grants() {
        let ws = [PathBuf::from("/nonexistent-workspace")];
        let mut a = Approvals::new(ApprovalPolicy::AskAlways);
        assert!(a.exec_needs_approval(&v("ls"), &ws));
        a.grant_exec(v("touch x"));
        assert!(!a.exec_needs_approval(&v("touch x"), &ws));
        assert!(a.exec_needs_approval(&v("touch y"), &ws));
        let files = vec![PathBuf::from("/w/a"), PathBuf::from("/w/b")];
        assert!(a.patch_needs_approval(&files));
        a.grant_patch(&files);
        assert!(!a.patch_needs_approval(&files[..1]));
        assert!(a.patch_needs_approval(&[PathBuf::from("/w/c")]));

        let a = Approvals::new(ApprovalPolicy::AskUnlessReadOnly);
        assert!(!a.exec_needs_approval(&v("ls"), &ws));
        assert!(a.exec_needs_approval(&v("rm x"), &ws));
        assert!(a.patch_needs_approval(&files));

        let a = Approvals::new(ApprovalPolicy::NeverAsk);
        assert!(!a.exec_needs_approval(&v("rm x"), &ws));
        assert!(!a.patch_needs_approval(&files));

        let a = Approvals::new(ApprovalPolicy::AskToEscalate).sandboxed(true);
        assert!(!a.exec_needs_approval(&v("rm x"), &ws) && !a.patch_needs_approval(&files) && a.escalates());
        // Without an enforced sandbox it is ask_always.
        let a = Approvals::new(ApprovalPolicy::AskToEscalate);
        assert!(a.exec_needs_approval(&v("ls"), &ws) && a.patch_needs_approval(&files) && !a.escalates());
    }
}
