//! The one reader of stdin: chat lines and approval answers alike.
//!
//! A single thread owns stdin (through the line editor on a terminal, plain
//! reads otherwise) for the life of the command, and serves one request at a
//! time. Nothing else reads stdin, so nothing can wait on a lock another
//! reader holds forever (an approval in `chat` used to deadlock that way).
//!
//! The line editor exists only while it reads a line: rustyline replaces the
//! SIGINT handler for as long as an editor lives (and its `signal-hook`
//! feature, which would not, stalls on typed-ahead input: it waits on the
//! descriptor while the keys sit in its buffer). So a Ctrl-C typed while the
//! editor reads (raw mode) is [`Reply::Interrupted`], and one typed while a
//! turn runs is an ordinary SIGINT for [`super::Interrupts`]. The history is
//! kept here and handed to each editor.

use std::io::BufRead;

use tokio::sync::oneshot;

/// What a read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Line(String),
    /// Ctrl-C while the line editor was reading.
    Interrupted,
    /// Ctrl-D, end of input or a read error.
    Eof,
}

struct Request {
    /// The prompt the line editor draws (plain reads print nothing: the
    /// caller printed the question through the renderer).
    prompt: String,
    reply: oneshot::Sender<Reply>,
}

pub struct Input {
    requests: std::sync::mpsc::Sender<Request>,
    editor: bool,
}

impl Input {
    /// Starts the reader; `editor`: read through a line editor (stdin and
    /// stdout are a terminal).
    pub fn start(editor: bool) -> Input {
        let (requests, rx) = std::sync::mpsc::channel::<Request>();
        // Can an editor be made here at all (a terminal it supports)?
        let has_editor = editor && rustyline::DefaultEditor::new().is_ok();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut history: Vec<String> = Vec::new();
            while let Ok(request) = rx.recv() {
                let reply = if has_editor {
                    edit_line(&request.prompt, &mut history)
                } else {
                    let mut line = String::new();
                    match stdin.read_line(&mut line) {
                        Ok(0) | Err(_) => Reply::Eof,
                        Ok(_) => Reply::Line(line.trim_end_matches(['\n', '\r']).to_owned()),
                    }
                };
                let _ = request.reply.send(reply);
            }
        });
        Input { requests, editor: has_editor }
    }

    /// Whether reads go through the line editor (which draws the prompt).
    pub fn has_editor(&self) -> bool {
        self.editor
    }

    /// The next line. Requests are served in order; a request whose future
    /// was dropped still consumes the line typed for it.
    pub async fn read(&self, prompt: &str) -> Reply {
        let (reply, rx) = oneshot::channel();
        if self.requests.send(Request { prompt: prompt.to_owned(), reply }).is_err() {
            return Reply::Eof;
        }
        rx.await.unwrap_or(Reply::Eof)
    }
}

/// One line through a fresh editor that knows the history so far.
fn edit_line(prompt: &str, history: &mut Vec<String>) -> Reply {
    let Ok(mut editor) = rustyline::DefaultEditor::new() else { return Reply::Eof };
    for line in history.iter() {
        let _ = editor.add_history_entry(line.as_str());
    }
    match editor.readline(prompt) {
        Ok(line) => {
            if !line.trim().is_empty() && history.last() != Some(&line) {
                history.push(line.clone());
            }
            Reply::Line(line)
        }
        Err(rustyline::error::ReadlineError::Interrupted) => Reply::Interrupted,
        Err(_) => Reply::Eof,
    }
    // The editor is dropped here, giving SIGINT back to the runtime.
}
