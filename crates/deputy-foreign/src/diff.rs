//! Claude Code's editing tools (`Write`, `Edit`, `MultiEdit`) as Deputy
//! [`FileChange`]s, so an approval shows the change itself.
//!
//! The tools name a file and give texts (the whole new content, or
//! old/new snippets); Deputy's changes are a new file's content or a unified
//! diff. With the file's current text (read by the caller: this crate does
//! no I/O) the diff is exact, with line numbers and context; without it, an
//! edit shows the snippets as a hunk whose position is unknown, and a write
//! shows as a new file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use deputy_protocol::FileChange;
use serde_json::Value;

use crate::relative_to;

/// What one of the editing tools does to one file (decoded from its input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditChange {
    /// `Write {file_path, content}`: the file gets this whole content.
    Write {
        /// The new content.
        content: String,
    },
    /// `Edit` (one entry) or `MultiEdit` (several, applied in order).
    Edit {
        /// The replacements, in order.
        edits: Vec<Replace>,
    },
}

/// One `old_string` → `new_string` replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// The text to find (`old_string`).
    pub old: String,
    /// What replaces it (`new_string`).
    pub new: String,
    /// Replace every occurrence, not just the first.
    pub all: bool,
}

impl EditChange {
    /// Decodes a tool's input: `(file_path, change)`, or `None` if `tool` is
    /// not an editing tool or the input lacks what it needs.
    pub fn decode(tool: &str, input: &Value) -> Option<(String, EditChange)> {
        let path = input.get("file_path")?.as_str()?.to_owned();
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let replace = |v: &Value| {
            Some(Replace {
                old: text(v, "old_string")?,
                new: text(v, "new_string")?,
                all: v.get("replace_all").and_then(Value::as_bool).unwrap_or(false),
            })
        };
        let change = match tool {
            "Write" => EditChange::Write { content: text(input, "content")? },
            "Edit" => EditChange::Edit { edits: vec![replace(input)?] },
            "MultiEdit" => EditChange::Edit {
                edits: input.get("edits")?.as_array()?.iter().map(replace).collect::<Option<Vec<_>>>()?,
            },
            _ => return None,
        };
        Some((path, change))
    }
}

/// The changes an editing tool's call makes, keyed by path (relative to
/// `cwd` when inside it), or `None` if `tool` is not an editing tool or its
/// input does not decode. `current` is the file's text now, if the caller
/// read it (`None`: missing, unreadable, or not read).
pub fn edit_changes(
    tool: &str,
    input: &Value,
    cwd: &Path,
    current: Option<&str>,
) -> Option<BTreeMap<String, FileChange>> {
    let (path, change) = EditChange::decode(tool, input)?;
    let file_change = match (change, current) {
        (EditChange::Write { content }, None) => FileChange::add(content),
        (EditChange::Write { content }, Some(old)) => FileChange::update(hunks(old, &content), None),
        (EditChange::Edit { edits }, Some(old)) => {
            let mut new = old.to_owned();
            for e in &edits {
                new = if e.all { new.replace(&e.old, &e.new) } else { new.replacen(&e.old, &e.new, 1) };
            }
            FileChange::update(hunks(old, &new), None)
        }
        // Creating a file with an empty `old_string` (Claude's convention).
        (EditChange::Edit { edits }, None) if edits.len() == 1 && edits[0].old.is_empty() => {
            FileChange::add(edits[0].new.clone())
        }
        (EditChange::Edit { edits }, None) => {
            let mut text = String::from("(the file was not read: where these lines are is unknown)\n");
            // Snippets are parts of lines: no "no newline at end" markers.
            let line = |s: &str| if s.ends_with('\n') { s.to_owned() } else { format!("{s}\n") };
            for e in &edits {
                text.push_str(&hunks(&line(&e.old), &line(&e.new)));
            }
            FileChange::update(text, None)
        }
    };
    Some(BTreeMap::from([(relative_to(cwd, &path), file_change)]))
}

/// The unified diff hunks (no file header) from `old` to `new`, three lines
/// of context, like Codex's and Deputy's own `unified_diff`s.
pub(crate) fn hunks(old: &str, new: &str) -> String {
    similar::TextDiff::configure()
        // Myers is O(N·D): bound the time a huge rewrite may take (the
        // result is then a coarser, still correct diff).
        .timeout(Duration::from_millis(250))
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CWD: &str = "/w";

    fn one(tool: &str, input: Value, current: Option<&str>) -> (String, FileChange) {
        edit_changes(tool, &input, Path::new(CWD), current).unwrap().into_iter().next().unwrap()
    }

    #[test]
    fn a_write_of_a_new_file_is_an_add_and_over_an_existing_one_a_diff() {
        let input = json!({"file_path": "/w/hello.txt", "content": "hi from mock\n"});
        assert_eq!(
            one("Write", input.clone(), None),
            ("hello.txt".into(), FileChange::add("hi from mock\n"))
        );
        let (_, change) = one("Write", input, Some("old\n"));
        assert_eq!(change, FileChange::update("@@ -1 +1 @@\n-old\n+hi from mock\n", None));
    }

    #[test]
    fn an_edit_with_the_file_read_is_an_exact_hunk_with_context() {
        // The real input of Claude Code 2.1.332's Edit (tests/fixtures/claude/edit.jsonl).
        let input = json!({"file_path": "/w/notes.txt", "old_string": "old line", "new_string": "new line",
                           "replace_all": false});
        let (path, change) = one("Edit", input, Some("old line\nsecond\n"));
        assert_eq!(path, "notes.txt");
        // The same hunk Codex's apply_patch reports for the same change.
        assert_eq!(change, FileChange::update("@@ -1,2 +1,2 @@\n-old line\n+new line\n second\n", None));
    }

    #[test]
    fn replace_all_and_multi_edits_apply_in_order() {
        let input = json!({"file_path": "/w/a", "old_string": "x", "new_string": "y", "replace_all": true});
        let (_, change) = one("Edit", input, Some("x\nkeep\nx\n"));
        assert_eq!(change.text(), "@@ -1,3 +1,3 @@\n-x\n+y\n keep\n-x\n+y\n");
        let input = json!({"file_path": "/w/a", "edits": [
            {"old_string": "a", "new_string": "b"}, {"old_string": "b", "new_string": "c"}]});
        let (_, change) = one("MultiEdit", input, Some("a\n"));
        assert_eq!(change.text(), "@@ -1 +1 @@\n-a\n+c\n");
    }

    #[test]
    fn without_the_file_an_edit_shows_its_snippets_and_says_so() {
        let input = json!({"file_path": "/elsewhere/a", "old_string": "old", "new_string": "new"});
        let (path, change) = one("Edit", input, None);
        assert_eq!(path, "/elsewhere/a");
        assert!(change.text().starts_with("(the file was not read"), "{}", change.text());
        assert!(change.text().contains("-old\n+new"), "{}", change.text());
        let create = json!({"file_path": "/w/n", "old_string": "", "new_string": "fresh\n"});
        assert_eq!(one("Edit", create, None).1, FileChange::add("fresh\n"));
    }

    #[test]
    fn other_tools_and_malformed_inputs_are_not_edits() {
        assert!(edit_changes("Bash", &json!({"command": "ls"}), Path::new(CWD), None).is_none());
        assert!(edit_changes("Edit", &json!({"file_path": "/w/a"}), Path::new(CWD), None).is_none());
        assert!(edit_changes("Write", &json!({"content": "x"}), Path::new(CWD), None).is_none());
        assert!(
            edit_changes("MultiEdit", &json!({"file_path": "/w/a", "edits": [{}]}), Path::new(CWD), None)
                .is_none()
        );
    }
}
