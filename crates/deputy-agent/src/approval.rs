//! When to ask the host before running a tool, and what the session already
//! granted.
//!
//! # Read-only commands (`ask_unless_read_only`)
//!
//! Under `ask_unless_read_only` an argv runs without asking when its program
//! (the first element, compared by file name, so `/bin/ls` counts as `ls`) is
//! one of:
//!
//! `ls`, `cat`, `head`, `tail`, `wc`, `pwd`, `echo`, `true`, `false`, `grep`,
//! `egrep`, `fgrep`, `rg` (without `--pre`, `--pre-glob`, `--hostname-bin`, `-z`
//! or `--search-zip`), `find` (without `-exec`, `-execdir`, `-ok`, `-okdir`,
//! `-delete`, `-fls`, `-fprint`, `-fprint0` or `-fprintf`), `stat`, `file`,
//! `du`, `df`, `tree`, `nl`, `basename`, `dirname`, `realpath`, `readlink`,
//! `which`, `whoami`, `id`, `uname`, `cut`, `diff`, `cmp`, `md5sum`,
//! `sha1sum`, `sha256sum`,
//!
//! and `git` directly followed by `status`, `diff`, `log`, `show`,
//! `rev-parse`, `ls-files` or `blame` (no option before the subcommand, and no
//! `--output`/`--ext-diff` argument).
//!
//! Everything else asks, including shells (`sh -c …`), `sed`, `sort` (`-o`
//! writes), `env` (runs a program) and `date` (`-s` sets the clock). Patches
//! always ask under `ask_unless_read_only`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

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

const GIT_READ_ONLY: &[&str] = &["status", "diff", "log", "show", "rev-parse", "ls-files", "blame"];

/// Whether `argv` is a known read-only command (see the module docs).
pub fn is_read_only(argv: &[String]) -> bool {
    let Some(program) = argv.first() else { return false };
    let name = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or("");
    let args = &argv[1..];
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
        "git" => {
            args.first().is_some_and(|sub| GIT_READ_ONLY.contains(&sub.as_str()))
                && !args.iter().any(|a| a.starts_with("--output") || a.starts_with("--ext-diff"))
        }
        other => READ_ONLY.contains(&other),
    }
}

/// The approval policy plus what the session has granted so far.
#[derive(Debug, Default)]
pub struct Approvals {
    pub policy: ApprovalPolicy,
    /// Argvs answered `approved_for_session`.
    exec_grants: HashSet<Vec<String>>,
    /// Files (absolute) covered by a patch answered `approved_for_session`.
    patch_grants: HashSet<PathBuf>,
}

impl Approvals {
    pub fn new(policy: ApprovalPolicy) -> Self {
        Approvals { policy, ..Approvals::default() }
    }

    /// Whether running `argv` needs the host's approval.
    pub fn exec_needs_approval(&self, argv: &[String]) -> bool {
        match self.policy {
            ApprovalPolicy::NeverAsk => false,
            ApprovalPolicy::AskUnlessReadOnly if is_read_only(argv) => false,
            _ => !self.exec_grants.contains(argv),
        }
    }

    /// Whether a patch touching `files` (absolute paths) needs approval.
    pub fn patch_needs_approval(&self, files: &[PathBuf]) -> bool {
        match self.policy {
            ApprovalPolicy::NeverAsk => false,
            _ => !files.iter().all(|f| self.patch_grants.contains(f)),
        }
    }

    pub fn grant_exec(&mut self, argv: Vec<String>) {
        self.exec_grants.insert(argv);
    }

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
        for ok in [
            "ls -la",
            "/bin/cat x",
            "git status",
            "git diff HEAD",
            "rg foo",
            "find . -name x",
            "pwd",
            "wc -l f",
        ] {
            assert!(is_read_only(&v(ok)), "{ok}");
        }
        for no in [
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
            assert!(!is_read_only(&v(no)), "{no}");
        }
    }

    #[test]
    fn policies_and_grants() {
        let mut a = Approvals::new(ApprovalPolicy::AskAlways);
        assert!(a.exec_needs_approval(&v("ls")));
        a.grant_exec(v("touch x"));
        assert!(!a.exec_needs_approval(&v("touch x")));
        assert!(a.exec_needs_approval(&v("touch y")));
        let files = vec![PathBuf::from("/w/a"), PathBuf::from("/w/b")];
        assert!(a.patch_needs_approval(&files));
        a.grant_patch(&files);
        assert!(!a.patch_needs_approval(&files[..1]));
        assert!(a.patch_needs_approval(&[PathBuf::from("/w/c")]));

        let a = Approvals::new(ApprovalPolicy::AskUnlessReadOnly);
        assert!(!a.exec_needs_approval(&v("ls")));
        assert!(a.exec_needs_approval(&v("rm x")));
        assert!(a.patch_needs_approval(&files));

        let a = Approvals::new(ApprovalPolicy::NeverAsk);
        assert!(!a.exec_needs_approval(&v("rm x")));
        assert!(!a.patch_needs_approval(&files));
    }
}
