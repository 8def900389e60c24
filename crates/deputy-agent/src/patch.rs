//! The `apply_patch` tool: Codex's patch format, parsed, checked against the
//! session's writable roots, turned into [`FileChange`]s for the approval
//! request, and applied all-or-nothing.
//!
//! ```text
//! *** Begin Patch
//! *** Add File: hello.txt
//! +hi
//! *** Update File: src/a.rs
//! *** Move to: src/b.rs
//! @@ fn main
//! -a
//! +b
//! *** End of File
//! *** Delete File: old.txt
//! *** End Patch
//! ```
//!
//! - `*** Add File: P` is followed by the new file's lines, each prefixed `+`
//!   (none for an empty file). `P` must not exist (Codex semantics: an add
//!   over an existing file is an invalid patch, refused without asking, so an
//!   approval shown as "add" never replaces anything).
//! - `*** Delete File: P` removes a regular file.
//! - `*** Update File: P`, optionally `*** Move to: Q`, then chunks. A chunk
//!   starts with `@@` (optionally `@@ TEXT`: the chunk is searched after the
//!   first line equal to `TEXT`; the first chunk may omit `@@`) and holds lines
//!   prefixed ` ` (context), `-` (removed) or `+` (added); an empty line counts
//!   as an empty context line. `*** End of File` anchors the chunk at the end.
//!   Chunks are located in order, each after the previous one: first exactly,
//!   then ignoring trailing whitespace, then ignoring surrounding whitespace.
//!   A chunk with no context and no removed line appends at the end of the
//!   file (after the `@@ TEXT` line if it has one). A `*** Move to: Q` target
//!   must not exist either.
//! - A path appears at most once per patch (as a source or a move target),
//!   and no written path lies under another written path.
//! - Every new file's directory must be creatable: its nearest existing
//!   ancestor must be a directory.
//!
//! **Paths.** Relative paths resolve against the session's cwd and are
//! normalised lexically (`a/../b` is `b`). A path is inside when it is under
//! one of the writable roots (cwd, `writable_roots`, roots granted during the
//! session); otherwise it is *outside*: the patch lists it (symlinks resolved)
//! in [`PreparedPatch::outside`], and it is written only after an approval of
//! that very patch. [`PreparedPatch::grant_root`] is the one directory holding
//! every outside path, when there is one (the smallest grant: never an
//! ancestor shared by two directories). A path that is inside lexically but
//! resolves through a symlink to somewhere outside is refused outright (never
//! offered as a grant).
//!
//! **All or nothing.** Every new content is computed in memory first; then each
//! is written to a temporary file beside its target; then the temporaries are
//! renamed over their targets and deletions happen. If staging fails nothing
//! was touched (temporaries and created directories are removed); if a rename
//! or deletion fails the files already changed are restored from memory.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use deputy_protocol::FileChange;

/// One parsed patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The file operations, in patch order.
    pub hunks: Vec<Hunk>,
}

/// One file operation of a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hunk {
    /// `*** Add File`: a new file.
    Add {
        /// The path as written in the patch.
        path: String,
        /// The whole new content.
        content: String,
    },
    /// `*** Delete File`: the file is removed.
    Delete {
        /// The path as written in the patch.
        path: String,
    },
    /// `*** Update File`: the file is edited, and moved if `move_to` is set.
    Update {
        /// The path as written in the patch.
        path: String,
        /// The `*** Move to` path, if any.
        move_to: Option<String>,
        /// The edits, in file order.
        chunks: Vec<Chunk>,
    },
}

impl Hunk {
    fn path(&self) -> &str {
        match self {
            Hunk::Add { path, .. } | Hunk::Delete { path } | Hunk::Update { path, .. } => path,
        }
    }
}

/// One `@@` chunk of an update.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    /// The text after `@@ `, a line to find before the chunk.
    pub context: Option<String>,
    /// The chunk's lines, in order.
    pub lines: Vec<ChunkLine>,
    /// `*** End of File` followed the chunk.
    pub eof: bool,
}

/// One line of a chunk, without its one-character prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkLine {
    /// Prefixed by a space: a line that stays (it locates the chunk).
    Context(String),
    /// Prefixed by `-`: a line removed.
    Remove(String),
    /// Prefixed by `+`: a line added.
    Add(String),
}

impl Chunk {
    fn old_lines(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| match l {
                ChunkLine::Context(s) | ChunkLine::Remove(s) => Some(s.as_str()),
                ChunkLine::Add(_) => None,
            })
            .collect()
    }
}

const BEGIN: &str = "*** Begin Patch";
const END: &str = "*** End Patch";
const ADD: &str = "*** Add File: ";
const DELETE: &str = "*** Delete File: ";
const UPDATE: &str = "*** Update File: ";
const MOVE: &str = "*** Move to: ";
const EOF_MARK: &str = "*** End of File";

/// A patch that does not parse: the message names the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid patch: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

fn is_hunk_header(line: &str) -> bool {
    let t = line.trim();
    t.starts_with(ADD.trim_end())
        || t.starts_with(DELETE.trim_end())
        || t.starts_with(UPDATE.trim_end())
        || t == END
}

fn header_value<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let t = line.trim();
    t.strip_prefix(marker.trim_end()).map(str::trim)
}

/// Parses a patch. Marker lines may carry surrounding whitespace; `\r\n` line
/// ends are accepted.
pub fn parse(text: &str) -> Result<Patch, ParseError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() && lines[i].trim().is_empty() {
        i += 1;
    }
    if i >= lines.len() || lines[i].trim() != BEGIN {
        return Err(ParseError(format!("the first line must be `{BEGIN}`")));
    }
    i += 1;
    let mut hunks = Vec::new();
    loop {
        let Some(&line) = lines.get(i) else {
            return Err(ParseError(format!("the last line must be `{END}`")));
        };
        let lineno = i + 1;
        if line.trim() == END {
            if lines[i + 1..].iter().any(|l| !l.trim().is_empty()) {
                return Err(ParseError(format!("line {}: text after `{END}`", lineno + 1)));
            }
            break;
        }
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        if let Some(path) = header_value(line, ADD) {
            let path = nonempty_path(path, lineno)?;
            i += 1;
            let mut content = String::new();
            while let Some(&l) = lines.get(i) {
                if is_hunk_header(l) {
                    break;
                }
                match l.strip_prefix('+') {
                    Some(rest) => {
                        content.push_str(rest);
                        content.push('\n');
                    }
                    None => {
                        return Err(ParseError(format!(
                            "line {}: lines of an added file must start with `+`, got {l:?}",
                            i + 1
                        )));
                    }
                }
                i += 1;
            }
            hunks.push(Hunk::Add { path, content });
        } else if let Some(path) = header_value(line, DELETE) {
            hunks.push(Hunk::Delete { path: nonempty_path(path, lineno)? });
            i += 1;
        } else if let Some(path) = header_value(line, UPDATE) {
            let path = nonempty_path(path, lineno)?;
            i += 1;
            let mut move_to = None;
            if let Some(to) = lines.get(i).and_then(|l| header_value(l, MOVE)) {
                move_to = Some(nonempty_path(to, i + 1)?);
                i += 1;
            }
            let mut chunks: Vec<Chunk> = Vec::new();
            while let Some(&l) = lines.get(i) {
                if is_hunk_header(l) {
                    break;
                }
                let t = l.trim();
                if t == "@@" || l.starts_with("@@ ") {
                    let ctx = l.strip_prefix("@@ ").map(str::to_owned).filter(|c| !c.trim().is_empty());
                    chunks.push(Chunk { context: ctx, ..Chunk::default() });
                } else if t == EOF_MARK {
                    match chunks.last_mut() {
                        Some(c) if !c.lines.is_empty() => c.eof = true,
                        _ => {
                            return Err(ParseError(format!("line {}: `{EOF_MARK}` without a chunk", i + 1)));
                        }
                    }
                    // The next change line starts a new chunk.
                    chunks.push(Chunk::default());
                } else {
                    let cl = if l.is_empty() {
                        ChunkLine::Context(String::new())
                    } else if let Some(r) = l.strip_prefix(' ') {
                        ChunkLine::Context(r.to_owned())
                    } else if let Some(r) = l.strip_prefix('-') {
                        ChunkLine::Remove(r.to_owned())
                    } else if let Some(r) = l.strip_prefix('+') {
                        ChunkLine::Add(r.to_owned())
                    } else {
                        return Err(ParseError(format!(
                            "line {}: expected a line starting with ` `, `-`, `+` or `@@` in the update of {path}, got {l:?}",
                            i + 1
                        )));
                    };
                    if chunks.is_empty() {
                        chunks.push(Chunk::default());
                    }
                    chunks.last_mut().expect("a chunk").lines.push(cl);
                }
                i += 1;
            }
            // Drop empty chunks (e.g. after `*** End of File`), but keep an
            // `@@ ctx` chunk with lines only.
            chunks.retain(|c| !c.lines.is_empty());
            if chunks.is_empty() && move_to.is_none() {
                return Err(ParseError(format!("line {lineno}: the update of {path} has no changes")));
            }
            hunks.push(Hunk::Update { path, move_to, chunks });
        } else {
            return Err(ParseError(format!(
                "line {lineno}: expected `{}`, `{}`, `{}` or `{END}`, got {line:?}",
                ADD.trim_end(),
                DELETE.trim_end(),
                UPDATE.trim_end()
            )));
        }
    }
    if hunks.is_empty() {
        return Err(ParseError("the patch changes no file".into()));
    }
    Ok(Patch { hunks })
}

fn nonempty_path(p: &str, lineno: usize) -> Result<String, ParseError> {
    if p.is_empty() { Err(ParseError(format!("line {lineno}: empty path"))) } else { Ok(p.to_owned()) }
}

// ---------------------------------------------------------------------------
// Paths.

/// Lexical normalisation: removes `.`, resolves `..` against what precedes it.
/// `base` must be absolute; the result is absolute.
pub fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// Where the session's patches may write.
#[derive(Debug, Clone, Default)]
pub struct WritableRoots {
    /// Absolute, lexically normalised.
    roots: Vec<PathBuf>,
}

/// How a path relates to the writable roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathCheck {
    /// Under a writable root, also with its symlinks resolved.
    Inside,
    /// Outside every root (may be approved); `real` has symlinks resolved.
    Outside {
        /// The path, absolute, with its directories' symlinks resolved.
        real: PathBuf,
    },
    /// Inside lexically, but a symlink leads outside (never granted).
    SymlinkEscape {
        /// The path with its symlinks resolved (outside every root), or the
        /// path of a dangling symlink on the way.
        real: PathBuf,
    },
}

impl WritableRoots {
    /// The roots, each made absolute and normalised, duplicates dropped.
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut r = WritableRoots::default();
        for root in roots {
            r.add(root);
        }
        r
    }

    /// Adds a root (normalised; no-op if already there).
    pub fn add(&mut self, root: PathBuf) {
        let root = resolve_path(Path::new("/"), &root.to_string_lossy());
        if !self.roots.contains(&root) {
            self.roots.push(root);
        }
    }

    /// The roots, absolute and normalised, in the order added.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    fn lexically_inside(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }

    /// Checks an absolute, normalised path.
    pub fn check(&self, path: &Path) -> PathCheck {
        if !self.lexically_inside(path) {
            // Where the write lands: the directories' symlinks are followed,
            // the last component's is not (a rename or unlink replaces or
            // removes the link itself).
            let real = match (path.parent(), path.file_name()) {
                (Some(dir), Some(name)) => real_path(dir).unwrap_or_else(|dangling| dangling).join(name),
                _ => path.to_path_buf(),
            };
            return PathCheck::Outside { real };
        }
        match real_path(path) {
            Ok(real) => {
                let canon_roots: Vec<PathBuf> =
                    self.roots.iter().map(|r| fs::canonicalize(r).unwrap_or_else(|_| r.clone())).collect();
                if canon_roots.iter().any(|r| real.starts_with(r)) {
                    PathCheck::Inside
                } else {
                    PathCheck::SymlinkEscape { real }
                }
            }
            Err(real) => PathCheck::SymlinkEscape { real },
        }
    }
}

/// The path with every existing ancestor's symlinks resolved. `Err` carries the
/// path of a dangling symlink.
fn real_path(path: &Path) -> Result<PathBuf, PathBuf> {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match fs::symlink_metadata(&existing) {
            Ok(_) => match fs::canonicalize(&existing) {
                Ok(mut real) => {
                    for part in rest.iter().rev() {
                        real.push(part);
                    }
                    return Ok(real);
                }
                Err(_) => return Err(existing),
            },
            Err(_) => {
                let Some(name) = existing.file_name().map(ToOwned::to_owned) else {
                    return Ok(path.to_path_buf());
                };
                rest.push(name);
                if !existing.pop() {
                    return Ok(path.to_path_buf());
                }
            }
        }
    }
}

/// The directory that holds every path, when they all share one parent; a
/// common ancestor further up would grant more than the patch writes.
fn single_dir(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut dirs =
        paths.iter().map(|p| p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/")));
    let first = dirs.next()?;
    dirs.all(|d| d == first).then_some(first)
}

// ---------------------------------------------------------------------------
// Preparing: what the patch would do.

/// A concrete file operation, absolute path and new content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Write the file whole (creating it or replacing its content).
    Write {
        /// Where, absolute.
        path: PathBuf,
        /// The new content.
        content: String,
    },
    /// Remove the file.
    Delete {
        /// Which, absolute.
        path: PathBuf,
    },
}

/// A patch checked and computed against the file system, ready to be approved
/// and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPatch {
    /// The changes by path as written in the patch (normalised), for the
    /// approval request and `patch_apply_begin`.
    pub changes: BTreeMap<String, FileChange>,
    /// What to do, in order.
    pub ops: Vec<FileOp>,
    /// Every absolute path touched (sources and move targets).
    pub files: Vec<PathBuf>,
    /// The paths written outside the writable roots (symlinks resolved,
    /// sorted): what `outside_workspace` shows.
    pub outside: Vec<PathBuf>,
    /// The one directory holding every outside path, when there is one:
    /// what `approved_for_session` may grant.
    pub grant_root: Option<PathBuf>,
    /// `A path`/`M path`/`D path` lines, for the tool's output.
    pub summary: String,
}

/// Why a patch cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError(pub String);

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatchError {}

impl From<ParseError> for PatchError {
    fn from(e: ParseError) -> Self {
        PatchError(e.to_string())
    }
}

fn display_path(p: &str) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        resolve_path(Path::new("/"), p).to_string_lossy().into_owned()
    } else {
        // Normalise `./a//b` to `a/b`; keep leading `..` (it is an escape).
        let mut out: Vec<String> = Vec::new();
        for c in path.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    if out.last().is_some_and(|l| l != "..") {
                        out.pop();
                    } else {
                        out.push("..".into());
                    }
                }
                Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        out.join("/")
    }
}

/// Computes what `patch` does to the files under `cwd`, and checks its paths
/// against `roots`. Fails (before anything is asked or written) when the patch
/// does not apply to the files as they are, a path appears twice, or a path
/// escapes through a symlink.
pub fn prepare(patch: &Patch, cwd: &Path, roots: &WritableRoots) -> Result<PreparedPatch, PatchError> {
    let mut changes = BTreeMap::new();
    let mut ops = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut seen = HashSet::new();
    let mut outside = Vec::new();
    let mut summary = String::new();

    let mut touch = |shown: &str, abs: &PathBuf| -> Result<(), PatchError> {
        if !seen.insert(abs.clone()) {
            return Err(PatchError(format!("{shown} appears more than once in the patch")));
        }
        match roots.check(abs) {
            PathCheck::Inside => {}
            PathCheck::Outside { real } => outside.push(real),
            PathCheck::SymlinkEscape { real } => {
                return Err(PatchError(format!(
                    "refused: {shown} resolves through a symlink to {}, outside the writable roots",
                    real.display()
                )));
            }
        }
        files.push(abs.clone());
        Ok(())
    };

    for hunk in &patch.hunks {
        let shown = display_path(hunk.path());
        let abs = resolve_path(cwd, hunk.path());
        touch(&shown, &abs)?;
        match hunk {
            Hunk::Add { content, .. } => {
                if fs::symlink_metadata(&abs).is_ok() {
                    return Err(PatchError(format!(
                        "cannot add {shown}: it already exists (use `*** Update File` to change it)"
                    )));
                }
                check_creatable(&abs, &shown)?;
                changes.insert(shown.clone(), FileChange::add(content.clone()));
                ops.push(FileOp::Write { path: abs, content: content.clone() });
                let _ = writeln!(summary, "A {shown}");
            }
            Hunk::Delete { .. } => {
                let content = read_regular(&abs, &shown, "delete")?;
                changes.insert(shown.clone(), FileChange::delete(content));
                ops.push(FileOp::Delete { path: abs });
                let _ = writeln!(summary, "D {shown}");
            }
            Hunk::Update { move_to, chunks, .. } => {
                let original = read_regular(&abs, &shown, "update")?;
                let (new_content, diff) = apply_chunks(&original, chunks)
                    .map_err(|e| PatchError(format!("cannot update {shown}: {e}")))?;
                let move_path = match move_to {
                    Some(to) => {
                        let to_shown = display_path(to);
                        let to_abs = resolve_path(cwd, to);
                        if to_abs != abs {
                            touch(&to_shown, &to_abs)?;
                            if fs::symlink_metadata(&to_abs).is_ok() {
                                return Err(PatchError(format!(
                                    "cannot move {shown} to {to_shown}: it already exists"
                                )));
                            }
                            check_creatable(&to_abs, &to_shown)?;
                            ops.push(FileOp::Write { path: to_abs, content: new_content });
                            ops.push(FileOp::Delete { path: abs.clone() });
                            let _ = writeln!(summary, "M {shown} -> {to_shown}");
                            Some(PathBuf::from(to_shown))
                        } else {
                            ops.push(FileOp::Write { path: abs.clone(), content: new_content });
                            let _ = writeln!(summary, "M {shown}");
                            None
                        }
                    }
                    None => {
                        ops.push(FileOp::Write { path: abs.clone(), content: new_content });
                        let _ = writeln!(summary, "M {shown}");
                        None
                    }
                };
                changes.insert(shown.clone(), FileChange::update(diff, move_path));
            }
        }
    }
    // A file written under another file the same patch writes cannot apply.
    let written: HashSet<&Path> = ops
        .iter()
        .filter_map(|op| match op {
            FileOp::Write { path, .. } => Some(path.as_path()),
            FileOp::Delete { .. } => None,
        })
        .collect();
    for path in &written {
        if let Some(parent) = path.ancestors().skip(1).find(|a| written.contains(a)) {
            return Err(PatchError(format!(
                "cannot write {} and {} in one patch: one is inside the other",
                parent.display(),
                path.display()
            )));
        }
    }
    outside.sort();
    outside.dedup();
    let grant_root = single_dir(&outside);
    Ok(PreparedPatch { changes, ops, files, outside, grant_root, summary })
}

/// Fails unless the directories of a new file at `abs` can be created: the
/// nearest existing ancestor must be a directory (following symlinks).
fn check_creatable(abs: &Path, shown: &str) -> Result<(), PatchError> {
    for dir in abs.ancestors().skip(1) {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(PatchError(format!(
                    "cannot create {shown}: {} is not a directory",
                    dir.display()
                )));
            }
            Err(_) => continue,
        }
    }
    Ok(())
}

fn read_regular(abs: &Path, shown: &str, what: &str) -> Result<String, PatchError> {
    match fs::symlink_metadata(abs) {
        Ok(m) if m.is_file() || m.file_type().is_symlink() => {}
        Ok(_) => return Err(PatchError(format!("cannot {what} {shown}: not a regular file"))),
        Err(e) => return Err(PatchError(format!("cannot {what} {shown}: {}", io_msg(&e)))),
    }
    fs::read_to_string(abs).map_err(|e| PatchError(format!("cannot {what} {shown}: {}", io_msg(&e))))
}

fn io_msg(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::InvalidData => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

/// Finds `pattern` in `lines` at or after `start`: exactly, then ignoring
/// trailing whitespace, then ignoring surrounding whitespace. With `eof`, a
/// match at the very end is tried first.
fn seek(lines: &[&str], pattern: &[&str], start: usize, eof: bool) -> Option<usize> {
    if pattern.is_empty() {
        return Some(start.min(lines.len()));
    }
    if pattern.len() > lines.len() {
        return None;
    }
    let last = lines.len() - pattern.len();
    type Eq = fn(&str, &str) -> bool;
    let passes: [Eq; 3] = [|a, b| a == b, |a, b| a.trim_end() == b.trim_end(), |a, b| a.trim() == b.trim()];
    for eq in passes {
        if eof && last >= start && lines[last..].iter().zip(pattern).all(|(a, b)| eq(a, b)) {
            return Some(last);
        }
        for i in start..=last {
            if lines[i..i + pattern.len()].iter().zip(pattern).all(|(a, b)| eq(a, b)) {
                return Some(i);
            }
        }
    }
    None
}

/// Applies an update's chunks to `original`; returns the new content and a
/// unified diff of the change.
fn apply_chunks(original: &str, chunks: &[Chunk]) -> Result<(String, String), String> {
    let mut lines: Vec<&str> = original.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    // (start in original, old count, chunk)
    let mut located: Vec<(usize, usize, &Chunk)> = Vec::new();
    let mut cursor = 0;
    for chunk in chunks {
        if let Some(ctx) = &chunk.context {
            match seek(&lines, &[ctx.as_str()], cursor, false) {
                Some(i) => cursor = i + 1,
                None => return Err(format!("context {ctx:?} not found")),
            }
        }
        let old = chunk.old_lines();
        if old.is_empty() {
            let at = if chunk.context.is_some() { cursor } else { lines.len() };
            located.push((at, 0, chunk));
            cursor = at;
            continue;
        }
        let found = seek(&lines, &old, cursor, chunk.eof).or_else(|| {
            // A trailing empty context line often stands for the file's final newline.
            if old.last() == Some(&"") {
                seek(&lines, &old[..old.len() - 1], cursor, chunk.eof)
            } else {
                None
            }
        });
        match found {
            Some(i) => {
                let n = old.len().min(lines.len() - i);
                located.push((i, n, chunk));
                cursor = i + n;
            }
            None => {
                let preview: Vec<&str> = old.iter().take(3).copied().collect();
                return Err(format!("could not find the lines {preview:?} (after line {cursor})"));
            }
        }
    }
    // New content.
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut diff = String::new();
    let mut pos = 0;
    let mut offset: isize = 0;
    for (start, count, chunk) in &located {
        out.extend(lines[pos..*start].iter().map(|s| (*s).to_owned()));
        let mut orig_i = *start;
        let mut body = String::new();
        let mut new_count = 0;
        for l in &chunk.lines {
            match l {
                ChunkLine::Context(_) if orig_i < start + count => {
                    let actual = lines[orig_i];
                    out.push(actual.to_owned());
                    let _ = writeln!(body, " {actual}");
                    orig_i += 1;
                    new_count += 1;
                }
                ChunkLine::Remove(_) if orig_i < start + count => {
                    let _ = writeln!(body, "-{}", lines[orig_i]);
                    orig_i += 1;
                }
                ChunkLine::Add(s) => {
                    out.push(s.clone());
                    let _ = writeln!(body, "+{s}");
                    new_count += 1;
                }
                // A trailing empty context line matched against the end of the file.
                ChunkLine::Context(_) | ChunkLine::Remove(_) => {}
            }
        }
        let old_start = if *count == 0 { *start } else { start + 1 };
        let new_start_raw = *start as isize + offset;
        let new_start = if new_count == 0 { new_start_raw } else { new_start_raw + 1 };
        let _ = writeln!(diff, "@@ -{old_start},{count} +{new_start},{new_count} @@");
        diff.push_str(&body);
        offset += new_count as isize - *count as isize;
        pos = start + count;
    }
    out.extend(lines[pos..].iter().map(|s| (*s).to_owned()));
    let mut content = out.join("\n");
    if !content.is_empty() {
        content.push('\n');
    }
    Ok((content, diff))
}

// ---------------------------------------------------------------------------
// Applying.

/// Applies prepared operations all-or-nothing. Returns an error message on
/// failure, after undoing whatever was done.
pub fn apply(prepared: &PreparedPatch) -> Result<(), PatchError> {
    let mut created_dirs: Vec<PathBuf> = Vec::new();
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new(); // (temp, target)
    let cleanup = |staged: &[(PathBuf, PathBuf)], dirs: &[PathBuf]| {
        for (tmp, _) in staged {
            let _ = fs::remove_file(tmp);
        }
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    };
    // 1. Stage every write next to its target.
    for op in &prepared.ops {
        if let FileOp::Write { path, content } = op {
            let result = (|| -> io::Result<PathBuf> {
                let parent = path.parent().ok_or_else(|| io::Error::other("no parent directory"))?;
                create_dirs(parent, &mut created_dirs)?;
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let tmp = parent.join(format!(".{name}.deputy-{:08x}.tmp", crate::util::random_u64() as u32));
                let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                io::Write::write_all(&mut f, content.as_bytes())
                    .and_then(|()| {
                        // Keep the permissions of a file being replaced.
                        if let Ok(meta) = fs::metadata(path) {
                            f.set_permissions(meta.permissions())?;
                        }
                        Ok(())
                    })
                    .inspect_err(|_| {
                        let _ = fs::remove_file(&tmp);
                    })?;
                Ok(tmp)
            })();
            match result {
                Ok(tmp) => staged.push((tmp, path.clone())),
                Err(e) => {
                    cleanup(&staged, &created_dirs);
                    return Err(PatchError(format!("cannot write {}: {e}", path.display())));
                }
            }
        }
    }
    // 2. Commit, remembering how to undo.
    enum Undo {
        Restore(PathBuf, Vec<u8>),
        Remove(PathBuf),
    }
    let mut undo: Vec<Undo> = Vec::new();
    let mut staged_iter = staged.iter();
    let mut failure = None;
    for op in &prepared.ops {
        let step = match op {
            FileOp::Write { path, .. } => {
                let (tmp, _) = staged_iter.next().expect("one staged file per write");
                let before = fs::read(path).ok();
                fs::rename(tmp, path).map(|()| {
                    undo.push(match before {
                        Some(b) => Undo::Restore(path.clone(), b),
                        None => Undo::Remove(path.clone()),
                    })
                })
            }
            FileOp::Delete { path } => {
                let before = fs::read(path);
                before.and_then(|b| fs::remove_file(path).map(|()| undo.push(Undo::Restore(path.clone(), b))))
            }
        };
        if let Err(e) = step {
            let which = match op {
                FileOp::Write { path, .. } | FileOp::Delete { path } => path.display().to_string(),
            };
            failure = Some(format!("cannot change {which}: {e}"));
            break;
        }
    }
    let Some(failure) = failure else { return Ok(()) };
    for u in undo.into_iter().rev() {
        match u {
            Undo::Restore(p, b) => {
                let _ = fs::write(&p, b);
            }
            Undo::Remove(p) => {
                let _ = fs::remove_file(&p);
            }
        }
    }
    let remaining: Vec<(PathBuf, PathBuf)> = staged_iter.cloned().collect();
    cleanup(&remaining, &created_dirs);
    Err(PatchError(format!("{failure}; no file was changed")))
}

fn create_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent, created)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            created.push(dir.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> WritableRoots {
        WritableRoots::new([dir.to_path_buf()])
    }

    #[test]
    fn parses_every_hunk_kind() {
        let p = parse(
            "*** Begin Patch\n*** Add File: a.txt\n+one\n+two\n*** Update File: b.txt\n*** Move to: c.txt\n@@ fn x\n ctx\n-old\n+new\n*** End of File\n*** Delete File: d.txt\n*** End Patch\n",
        )
        .unwrap();
        assert_eq!(p.hunks.len(), 3);
        assert_eq!(p.hunks[0], Hunk::Add { path: "a.txt".into(), content: "one\ntwo\n".into() });
        let Hunk::Update { path, move_to, chunks } = &p.hunks[1] else { panic!() };
        assert_eq!(path, "b.txt");
        assert_eq!(move_to.as_deref(), Some("c.txt"));
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].context.as_deref(), Some("fn x"));
        assert!(chunks[0].eof);
        assert_eq!(p.hunks[2], Hunk::Delete { path: "d.txt".into() });
    }

    #[test]
    fn parse_errors_name_the_line() {
        assert!(parse("hello").unwrap_err().0.contains("first line"));
        assert!(parse("*** Begin Patch\n*** Add File: a\n+x\n").unwrap_err().0.contains("last line"));
        let e = parse("*** Begin Patch\n*** Frobnicate: a\n*** End Patch").unwrap_err();
        assert!(e.0.contains("line 2"), "{e}");
        let e = parse("*** Begin Patch\n*** Add File: a\nno plus\n*** End Patch").unwrap_err();
        assert!(e.0.contains("line 3"), "{e}");
        let e = parse("*** Begin Patch\n*** Update File: a\n*** End Patch").unwrap_err();
        assert!(e.0.contains("no changes"), "{e}");
        assert!(parse("*** Begin Patch\n*** End Patch").unwrap_err().0.contains("no file"));
    }

    #[test]
    fn update_chunks_and_diff() {
        let orig = "a\nb\nc\nd\ne\n";
        let p = parse("*** Begin Patch\n*** Update File: f\n@@\n b\n-c\n+C\n+C2\n d\n*** End Patch").unwrap();
        let Hunk::Update { chunks, .. } = &p.hunks[0] else { panic!() };
        let (new, diff) = apply_chunks(orig, chunks).unwrap();
        assert_eq!(new, "a\nb\nC\nC2\nd\ne\n");
        assert_eq!(diff, "@@ -2,3 +2,4 @@\n b\n-c\n+C\n+C2\n d\n");
    }

    #[test]
    fn fuzzy_context_and_eof_anchor() {
        let orig = "x  \ny\nx\n";
        let p =
            parse("*** Begin Patch\n*** Update File: f\n@@\n-x\n+z\n*** End of File\n*** End Patch").unwrap();
        let Hunk::Update { chunks, .. } = &p.hunks[0] else { panic!() };
        let (new, _) = apply_chunks(orig, chunks).unwrap();
        assert_eq!(new, "x  \ny\nz\n");
        let p = parse("*** Begin Patch\n*** Update File: f\n@@\n-x\n+z\n*** End Patch").unwrap();
        let Hunk::Update { chunks, .. } = &p.hunks[0] else { panic!() };
        let (new, _) = apply_chunks(orig, chunks).unwrap();
        assert_eq!(new, "x  \ny\nz\n", "an exact match wins over an earlier fuzzy one");
        let (new, diff) = apply_chunks("x  \ny\n", chunks).unwrap();
        assert_eq!(new, "z\ny\n", "trailing whitespace ignored on the second pass");
        assert_eq!(diff, "@@ -1,1 +1,1 @@\n-x  \n+z\n");
        let p = parse("*** Begin Patch\n*** Update File: f\n@@\n-nope\n+z\n*** End Patch").unwrap();
        let Hunk::Update { chunks, .. } = &p.hunks[0] else { panic!() };
        assert!(apply_chunks(orig, chunks).unwrap_err().contains("could not find"));
    }

    #[test]
    fn pure_addition_appends() {
        let p = parse("*** Begin Patch\n*** Update File: f\n@@\n+tail\n*** End Patch").unwrap();
        let Hunk::Update { chunks, .. } = &p.hunks[0] else { panic!() };
        assert_eq!(apply_chunks("a\n", chunks).unwrap().0, "a\ntail\n");
    }

    #[test]
    fn prepare_and_apply_add_update_delete_move() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("u.txt"), "1\n2\n3\n").unwrap();
        fs::write(d.join("del.txt"), "bye\n").unwrap();
        fs::write(d.join("mv.txt"), "m\n").unwrap();
        let p = parse(
            "*** Begin Patch\n*** Add File: new/dir/a.txt\n+hi\n*** Update File: u.txt\n@@\n-2\n+two\n*** Delete File: del.txt\n*** Update File: mv.txt\n*** Move to: moved/m.txt\n@@\n-m\n+M\n*** End Patch",
        )
        .unwrap();
        let prep = prepare(&p, d, &roots(d)).unwrap();
        assert_eq!(prep.grant_root, None);
        assert_eq!(prep.changes.len(), 4);
        assert_eq!(prep.changes["del.txt"], FileChange::delete("bye\n"));
        assert!(
            matches!(&prep.changes["mv.txt"], FileChange::Update { move_path: Some(p), .. } if p == Path::new("moved/m.txt"))
        );
        apply(&prep).unwrap();
        assert_eq!(fs::read_to_string(d.join("new/dir/a.txt")).unwrap(), "hi\n");
        assert_eq!(fs::read_to_string(d.join("u.txt")).unwrap(), "1\ntwo\n3\n");
        assert!(!d.join("del.txt").exists());
        assert!(!d.join("mv.txt").exists());
        assert_eq!(fs::read_to_string(d.join("moved/m.txt")).unwrap(), "M\n");
        // No temporaries left behind.
        let leftovers: Vec<_> = fs::read_dir(d)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn failure_leaves_everything_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("keep.txt"), "k\n").unwrap();
        // Missing file: prepare fails, nothing written.
        let p =
            parse("*** Begin Patch\n*** Add File: a.txt\n+x\n*** Delete File: missing.txt\n*** End Patch")
                .unwrap();
        let e = prepare(&p, d, &roots(d)).unwrap_err();
        assert!(e.0.contains("missing.txt"), "{e}");
        assert!(!d.join("a.txt").exists());
        // A write that fails at staging (the parent became a file after the
        // patch was computed): nothing changes.
        let p = parse("*** Begin Patch\n*** Update File: keep.txt\n@@\n-k\n+K\n*** Add File: keep.txt.d/x\n+x\n*** End Patch")
            .unwrap();
        let prep = prepare(&p, d, &roots(d)).unwrap();
        fs::write(d.join("keep.txt.d"), "file, not dir").unwrap();
        assert!(apply(&prep).is_err());
        assert_eq!(fs::read_to_string(d.join("keep.txt")).unwrap(), "k\n");
    }

    #[test]
    fn escapes_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let out = dir.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&out).unwrap();
        std::os::unix::fs::symlink(&out, root.join("link")).unwrap();
        let r = roots(&root);
        let p = parse("*** Begin Patch\n*** Add File: ../outside/x.txt\n+x\n*** End Patch").unwrap();
        let prep = prepare(&p, &root, &r).unwrap();
        assert_eq!(prep.grant_root.as_deref(), Some(out.as_path()));
        assert!(prep.changes.contains_key("../outside/x.txt"));
        let abs = format!("*** Begin Patch\n*** Add File: {}/y.txt\n+y\n*** End Patch", out.display());
        let prep = prepare(&parse(&abs).unwrap(), &root, &r).unwrap();
        assert_eq!(prep.grant_root.as_deref(), Some(out.as_path()));
        let p = parse("*** Begin Patch\n*** Add File: link/evil.txt\n+x\n*** End Patch").unwrap();
        let e = prepare(&p, &root, &r).unwrap_err();
        assert!(e.0.contains("symlink"), "{e}");
        // Granting the root makes the path inside.
        let mut r2 = r.clone();
        r2.add(out.clone());
        let p = parse("*** Begin Patch\n*** Add File: ../outside/x.txt\n+x\n*** End Patch").unwrap();
        assert_eq!(prepare(&p, &root, &r2).unwrap().grant_root, None);
    }

    #[test]
    fn inapplicable_patches_fail_before_asking() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("exists.txt"), "old\n").unwrap();
        fs::write(d.join("file"), "f\n").unwrap();
        fs::write(d.join("src.txt"), "s\n").unwrap();
        let r = roots(d);
        let refused = |text: &str| prepare(&parse(text).unwrap(), d, &r).unwrap_err().0;
        let e = refused("*** Begin Patch\n*** Add File: exists.txt\n+new\n*** End Patch");
        assert!(e.contains("already exists"), "{e}");
        let e = refused("*** Begin Patch\n*** Add File: file/x/y\n+new\n*** End Patch");
        assert!(e.contains("not a directory"), "{e}");
        let e = refused(
            "*** Begin Patch\n*** Update File: src.txt\n*** Move to: exists.txt\n@@\n-s\n+S\n*** End Patch",
        );
        assert!(e.contains("already exists"), "{e}");
        let e = refused("*** Begin Patch\n*** Add File: a\n+1\n*** Add File: a/b\n+2\n*** End Patch");
        assert!(e.contains("inside the other"), "{e}");
        assert_eq!(fs::read_to_string(d.join("exists.txt")).unwrap(), "old\n");
    }

    #[test]
    fn outside_paths_are_listed_and_the_grant_is_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        fs::create_dir_all(base.join("a")).unwrap();
        fs::create_dir_all(base.join("b")).unwrap();
        fs::create_dir_all(&root).unwrap();
        let r = roots(&root);
        let p = parse("*** Begin Patch\n*** Add File: ../a/1\n+1\n*** Add File: ../a/2\n+2\n*** End Patch")
            .unwrap();
        let prep = prepare(&p, &root, &r).unwrap();
        assert_eq!(prep.outside, [base.join("a/1"), base.join("a/2")]);
        assert_eq!(prep.grant_root.as_deref(), Some(base.join("a").as_path()));
        let p = parse("*** Begin Patch\n*** Add File: ../a/1\n+1\n*** Add File: ../b/2\n+2\n*** End Patch")
            .unwrap();
        let prep = prepare(&p, &root, &r).unwrap();
        assert_eq!(prep.outside.len(), 2);
        assert_eq!(prep.grant_root, None, "never the common parent of two directories");
        let p = parse("*** Begin Patch\n*** Add File: inside.txt\n+1\n*** End Patch").unwrap();
        let prep = prepare(&p, &root, &r).unwrap();
        assert!(prep.outside.is_empty() && prep.grant_root.is_none());
    }

    #[test]
    fn duplicate_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = parse("*** Begin Patch\n*** Add File: a\n+1\n*** Add File: ./a\n+2\n*** End Patch").unwrap();
        assert!(prepare(&p, dir.path(), &roots(dir.path())).unwrap_err().0.contains("more than once"));
    }
}
