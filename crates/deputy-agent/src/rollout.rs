//! Rollouts: every session persisted as JSON lines.
//!
//! A rollout lives at
//! `$DEPUTY_HOME/sessions/YYYY/MM/DD/rollout-YYYY-MM-DDTHH-MM-SS-<session id>.jsonl`
//! (UTC). Each line is a [`RolloutLine`]; the first is the session's
//! [`SessionMeta`]. Each item is written with one `write` call as soon as it
//! happens (so a killed agent loses nothing the kernel got), and the file is
//! `fsync`ed at the end of every turn and at shutdown.
//!
//! Loading is forgiving at the end: a last line without its newline that does
//! not parse (the writer was killed mid-line) is dropped, and when such a
//! rollout is resumed the torn bytes are cut off before appending. Other lines
//! that do not parse are skipped with a warning.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use deputy_protocol::{RolloutItem, RolloutLine, SessionMeta, TokenUsageInfo};
use serde::Serialize;

use crate::util::{UtcTime, now_rfc3339};

/// Appends items to a rollout file.
#[derive(Debug)]
pub struct RolloutWriter {
    file: File,
    path: PathBuf,
}

#[derive(Serialize)]
struct LineRef<'a> {
    timestamp: &'a str,
    #[serde(flatten)]
    item: &'a RolloutItem,
}

/// The sessions folder under a Deputy home.
pub fn sessions_dir(home: &Path) -> PathBuf {
    home.join("sessions")
}

impl RolloutWriter {
    /// Creates a new rollout for `session_id` under `home`.
    pub fn create(home: &Path, session_id: &str) -> io::Result<RolloutWriter> {
        let now = UtcTime::now();
        let dir = sessions_dir(home)
            .join(format!("{:04}", now.year))
            .join(format!("{:02}", now.month))
            .join(format!("{:02}", now.day));
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("rollout-{}-{session_id}.jsonl", now.file_stamp()));
        let file = OpenOptions::new().append(true).create_new(true).mode(0o600).open(&path)?;
        Ok(RolloutWriter { file, path })
    }

    /// Opens an existing rollout to append to it, first cutting it to
    /// `valid_len` bytes (dropping a torn last line) and ending it with a
    /// newline if it lacks one.
    pub fn append_to(loaded: &LoadedRollout) -> io::Result<RolloutWriter> {
        let path = loaded.path.clone().ok_or_else(|| io::Error::other("no rollout path"))?;
        let mut file = OpenOptions::new().append(true).open(&path)?;
        if file.metadata()?.len() != loaded.valid_len {
            file.set_len(loaded.valid_len)?;
        }
        if loaded.needs_newline {
            file.write_all(b"\n")?;
        }
        Ok(RolloutWriter { file, path })
    }

    /// The rollout file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one item as one line (one `write` call).
    pub fn write(&mut self, item: &RolloutItem) -> io::Result<()> {
        let ts = now_rfc3339();
        let mut line = serde_json::to_vec(&LineRef { timestamp: &ts, item }).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }

    /// A handle to `fsync` from another thread.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// `fsync`s the file now (blocking).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A rollout read back.
#[derive(Debug, Clone, Default)]
pub struct LoadedRollout {
    /// The file it was read from; `None` for inline items.
    pub path: Option<PathBuf>,
    /// Its `session_meta` item (the first one); `None` if it has none.
    pub meta: Option<SessionMeta>,
    /// Every item but the session meta, in order.
    pub items: Vec<RolloutItem>,
    /// Bytes of the file that hold complete lines.
    pub valid_len: u64,
    /// The last kept line has no newline (it is complete JSON, though).
    pub needs_newline: bool,
    /// A torn last line was dropped.
    pub dropped_torn_line: bool,
    /// Lines other than the last that did not parse and were skipped.
    pub skipped_lines: usize,
}

impl LoadedRollout {
    /// The last token usage recorded.
    pub fn last_token_usage(&self) -> Option<TokenUsageInfo> {
        last_token_usage(&self.items)
    }

    /// From inline items (a fork from `{"items": …}`).
    pub fn from_items(items: Vec<RolloutItem>) -> LoadedRollout {
        let mut meta = None;
        let mut rest = Vec::with_capacity(items.len());
        for item in items {
            match item {
                RolloutItem::SessionMeta(m) if meta.is_none() => meta = Some(m),
                RolloutItem::SessionMeta(_) => {}
                other => rest.push(other),
            }
        }
        LoadedRollout { meta, items: rest, ..LoadedRollout::default() }
    }
}

/// The last `token_count` item's usage.
pub fn last_token_usage(items: &[RolloutItem]) -> Option<TokenUsageInfo> {
    items.iter().rev().find_map(|i| match i {
        RolloutItem::TokenCount { info } => Some(*info),
        _ => None,
    })
}

/// Reads a rollout file.
pub fn load(path: &Path) -> io::Result<LoadedRollout> {
    let bytes = fs::read(path)?;
    let mut out = LoadedRollout { path: Some(path.to_path_buf()), ..LoadedRollout::default() };
    let mut start = 0usize;
    while start < bytes.len() {
        let (end, terminated) = match memchr_newline(&bytes[start..]) {
            Some(i) => (start + i, true),
            None => (bytes.len(), false),
        };
        let raw = &bytes[start..end];
        let next = if terminated { end + 1 } else { end };
        let text = std::str::from_utf8(raw).ok().map(|s| s.trim_end_matches('\r'));
        match text.filter(|t| !t.trim().is_empty()) {
            None if text.is_some() => {
                // Empty line.
                out.valid_len = next as u64;
            }
            t => match t.map(serde_json::from_str::<RolloutLine>) {
                Some(Ok(line)) => {
                    match line.item {
                        RolloutItem::SessionMeta(m) if out.meta.is_none() => out.meta = Some(m),
                        RolloutItem::SessionMeta(_) => {}
                        item => out.items.push(item),
                    }
                    out.valid_len = next as u64;
                    out.needs_newline = !terminated;
                }
                _ if !terminated => {
                    tracing::warn!(path = %path.display(), bytes = raw.len(), "dropping a torn last line of the rollout");
                    out.dropped_torn_line = true;
                }
                Some(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a rollout line that does not parse");
                    out.skipped_lines += 1;
                    out.valid_len = next as u64;
                }
                None => {
                    tracing::warn!(path = %path.display(), "skipping a rollout line that is not UTF-8");
                    out.skipped_lines += 1;
                    out.valid_len = next as u64;
                }
            },
        }
        start = next;
    }
    Ok(out)
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Every rollout file under `home`, newest first: the folders are dated
/// (`YYYY/MM/DD`) and the file names start with the creation time, so
/// reverse path order is age order.
pub fn list(home: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for year in sorted_desc(&sessions_dir(home))? {
        for month in sorted_desc(&year)? {
            for day in sorted_desc(&month)? {
                files.extend(sorted_desc(&day)?.into_iter().filter(|file| {
                    file.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("rollout-") && n.ends_with(".jsonl"))
                }));
            }
        }
    }
    Ok(files)
}

/// Finds the rollout of `session_id` under `home` (the newest, if several).
pub fn find_by_id(home: &Path, session_id: &str) -> io::Result<Option<PathBuf>> {
    if session_id.is_empty() || session_id.contains(['/', '\\']) || session_id.contains("..") {
        return Ok(None);
    }
    let suffix = format!("-{session_id}.jsonl");
    Ok(list(home)?.into_iter().find(|file| file.to_string_lossy().ends_with(&suffix)))
}

fn sorted_desc(dir: &Path) -> io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    v.reverse();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_protocol::{ApprovalPolicy, InputItem, SessionSource, TokenUsage};

    fn meta(id: &str) -> RolloutItem {
        RolloutItem::SessionMeta(SessionMeta {
            session_id: id.into(),
            created_at: now_rfc3339(),
            cwd: "/tmp".into(),
            source: SessionSource::Exec,
            model: "shell".into(),
            approval_policy: ApprovalPolicy::AskAlways,
            forked_from: None,
            agent_version: "0".into(),
        })
    }

    fn usage(n: u64) -> RolloutItem {
        let u = TokenUsage { input_tokens: n, total_tokens: n, ..TokenUsage::default() };
        RolloutItem::TokenCount {
            info: TokenUsageInfo { total_token_usage: u, last_token_usage: u, model_context_window: None },
        }
    }

    #[test]
    fn write_load_find_and_resume_a_torn_file() {
        let home = tempfile::tempdir().unwrap();
        let mut w = RolloutWriter::create(home.path(), "abc-123").unwrap();
        w.write(&meta("abc-123")).unwrap();
        w.write(&RolloutItem::UserInput {
            turn_id: "t1".into(),
            items: vec![InputItem::Text { text: "hi".into() }],
        })
        .unwrap();
        w.write(&usage(7)).unwrap();
        w.sync().unwrap();
        let path = w.path().to_path_buf();
        assert!(path.to_string_lossy().contains("/sessions/"));
        assert_eq!(find_by_id(home.path(), "abc-123").unwrap().as_deref(), Some(path.as_path()));
        assert_eq!(find_by_id(home.path(), "nope").unwrap(), None);
        assert_eq!(find_by_id(home.path(), "../x").unwrap(), None);

        let text = fs::read_to_string(&path).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["timestamp"].is_string() && v["type"].is_string(), "{line}");
        }

        // Tear the file: a half-written line at the end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"type\":\"token_co").unwrap();
        let loaded = load(&path).unwrap();
        assert!(loaded.dropped_torn_line);
        assert_eq!(loaded.meta.as_ref().unwrap().session_id, "abc-123");
        assert_eq!(loaded.items.len(), 2);
        assert_eq!(loaded.last_token_usage().unwrap().total_token_usage.input_tokens, 7);

        // Appending cuts the torn bytes first.
        let mut w = RolloutWriter::append_to(&loaded).unwrap();
        w.write(&usage(9)).unwrap();
        let again = load(&path).unwrap();
        assert!(!again.dropped_torn_line);
        assert_eq!(again.items.len(), 3);
        assert_eq!(again.last_token_usage().unwrap().total_token_usage.input_tokens, 9);
    }

    #[test]
    fn complete_last_line_without_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let line = serde_json::to_string(&RolloutLine { timestamp: now_rfc3339(), item: meta("m") }).unwrap();
        fs::write(
            &path,
            format!(
                "{line}\n{}",
                serde_json::to_string(&RolloutLine { timestamp: now_rfc3339(), item: usage(3) }).unwrap()
            ),
        )
        .unwrap();
        let loaded = load(&path).unwrap();
        assert!(loaded.needs_newline && !loaded.dropped_torn_line);
        assert_eq!(loaded.items.len(), 1);
        let mut w = RolloutWriter::append_to(&loaded).unwrap();
        w.write(&usage(4)).unwrap();
        assert_eq!(load(&path).unwrap().items.len(), 2);
    }
}
