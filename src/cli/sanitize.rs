//! Untrusted text made safe for a terminal.
//!
//! Everything the agent (or a model, or a command it ran) says is printed for
//! a person through [`clean`]: a terminal must never receive an escape
//! sequence it did not come from us, or a person could be shown a different
//! command than the one they approve, have their clipboard written (OSC 52),
//! their title changed (OSC 0) or their screen cleared. `\n` and `\t` pass;
//! everything else that steers a terminal is made visible:
//!
//! | input | shown as |
//! |---|---|
//! | C0 controls U+0000–U+001F (ESC, `\r`, backspace, BEL, …) | the Control Pictures `␀`…`␟` (ESC is `␛`, `\r` is `␍`) |
//! | DEL U+007F | `␡` |
//! | C1 controls U+0080–U+009F (e.g. the one-byte CSI `\x9b`) | `\u{9b}` |
//! | bidi controls (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069) | `\u{202e}` |
//!
//! A `\r\n` line ending is shown as a plain newline (it cannot rewrite
//! anything). Invalid UTF-8 becomes U+FFFD ([`clean_bytes`]).
//!
//! For argv in an approval question, [`quote_argv`] is stricter: it quotes so
//! that what is shown is exactly what runs (bash's `$'…'` form for arguments
//! with such characters), because a Control Picture and the control it stands
//! for would look the same.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is.
fn hostile(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}') || bidi(c)
}

fn bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every terminal control made visible (see the module docs).
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| hostile(c) || c == '\r') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\u{0}'..='\u{1f}' if c != '\n' && c != '\t' => {
                out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'))
            }
            '\u{7f}' => out.push('␡'),
            c if hostile(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`clean`] for bytes that may not be UTF-8 (invalid sequences become U+FFFD).
#[allow(dead_code)] // for byte sources (files, raw output); the protocol's text is UTF-8 already
pub fn clean_bytes(bytes: &[u8]) -> String {
    clean(&String::from_utf8_lossy(bytes)).into_owned()
}

/// An argv as a person would type it into a POSIX shell, exactly: plain words
/// as they are, others single-quoted, and words holding any control, bidi or
/// newline character in bash's `$'…'` form with escapes (`\e`, `\r`, `\n`,
/// `\xHH`, `\u202e`), so nothing in the question can hide or rewrite itself.
pub fn quote_argv(argv: &[String]) -> String {
    let words: Vec<String> = argv.iter().map(|w| quote_word(w)).collect();
    words.join(" ")
}

fn quote_word(word: &str) -> String {
    if word.chars().any(|c| hostile(c) || matches!(c, '\r' | '\n' | '\t')) {
        let mut out = String::from("$'");
        for c in word.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{1b}' => out.push_str("\\e"),
                c if (c as u32) < 0x80 && hostile(c) => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if hostile(c) => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    match shlex::try_quote(word) {
        Ok(quoted) => quoted.into_owned(),
        // Only NUL makes shlex refuse, and NUL is handled above.
        Err(_) => format!("'{}'", word.replace('\'', "'\\''")),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The hostile strings every printing path is tested with.
    pub const HOSTILE: &[&str] = &[
        "\x1b]0;owned title\x07",
        "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
        "\x1b]52;c;cm0gLXJmIH4=\x07",
        "\x1b[2J\x1b[H",
        "\x1b[1A\x1b[2K",
        "safe\rfake",
        "abc\x08\x08\x08xyz",
        "\u{9b}31m one-byte CSI",
        "\u{202e}txt.exe",
        "\u{2066}isolate\u{2069}",
        "nul\0bel\x07del\x7f",
    ];

    /// What may never appear in what a person sees.
    pub fn assert_inert(shown: &str, input: &str) {
        for c in shown.chars() {
            assert!(!hostile(c) && c != '\r', "{:?} shows {:?} raw in {shown:?}", input, c);
        }
    }

    #[test]
    fn every_hostile_string_is_made_visible() {
        for input in HOSTILE {
            let shown = clean(input);
            assert_inert(&shown, input);
            // Nothing is silently dropped: the visible text is still there.
            for word in ["owned title", "click", "cm0gLXJmIH4=", "fake", "xyz", "one-byte", "txt.exe"] {
                if input.contains(word) {
                    assert!(shown.contains(word), "{shown:?}");
                }
            }
        }
    }

    #[test]
    fn notation() {
        assert_eq!(clean("a\x1b[2Jb"), "a␛[2Jb");
        assert_eq!(clean("x\ry"), "x␍y");
        assert_eq!(clean("line\r\nnext\n\tindented"), "line\nnext\n\tindented");
        assert_eq!(clean("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(clean("\u{202e}abc"), "\\u{202e}abc");
        assert_eq!(clean("a\x08b\x7f"), "a␈b␡");
        assert!(matches!(clean("plain ünïcode ✓ text\n"), Cow::Borrowed(_)));
        assert_eq!(clean_bytes(b"ok \xff\xfe \x1b"), "ok \u{fffd}\u{fffd} ␛");
    }

    #[test]
    fn argv_is_quoted_exactly() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(quote_argv(&argv(&["echo", "hi there"])), "echo 'hi there'");
        assert_eq!(quote_argv(&argv(&["touch", "X", "\r\x1b[2Kallow"])), "touch X $'\\r\\e[2Kallow'");
        assert_eq!(quote_argv(&argv(&["a\nb", "it's"])), "$'a\\nb' \"it's\"");
        assert_eq!(quote_argv(&argv(&["\u{202e}gpj.sh"])), "$'\\u202egpj.sh'");
        assert_eq!(quote_argv(&argv(&["\u{9b}x", "\0"])), "$'\\u009bx' $'\\x00'");
        for input in HOSTILE {
            let shown = quote_argv(&argv(&["cmd", input]));
            assert_inert(&shown, input);
            assert!(!shown.contains('\n'));
        }
    }
}
