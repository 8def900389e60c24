//! A proxy around a real agent that breaks exactly one rule of PROTOCOL.md,
//! for `deputy check`'s self-tests:
//!
//! ```text
//! TEST_EXECUTABLE __broken_agent RULE -- AGENT ARGS...
//! ```
//!
//! It relays the host's stdin to AGENT and AGENT's stdout back, line for
//! line and byte for byte, except for the one thing RULE corrupts; AGENT's
//! stderr passes through, and SIGTERM/SIGHUP/SIGINT are passed on. It is
//! this test executable itself, started again: a constructor (an ELF
//! `.init_array` entry, the technique `deputy-testkit`'s scripted agent
//! uses) sees the marker before `main` and never returns to the test
//! harness — so a fixture costs a fork and an exec, not an interpreter
//! start, and the battery stays fast. The rules:
//!
//! | rule | what breaks |
//! |---|---|
//! | `none` | nothing: relay only (the proxy itself must pass everything) |
//! | `hide-shell` | `shell` is dropped from `capabilities.models` (the command checks skip) |
//! | `stdout-log` | a log line on stdout at start |
//! | `parse-error-code` | lines that are not JSON are answered -32600, not -32700 |
//! | `wrong-version` | `initialize` is answered with protocol_version 2 |
//! | `bad-event` | `exec_command_end.duration_ms` is sent as a string |
//! | `ignore-interrupt` | `interrupt` submissions are answered but never passed on |
//! | `run-after-error` | an error answer to an approval becomes "approved" |
//! | `answer-in-order` | approval answers go to the oldest pending request, whatever their id |
//! | `leave-grandchild` | a daemon (`setsid sleep 300.25`) outlives the agent |
//! | `eof-hang` | end of input is never passed on: the agent keeps running |

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// The marker argument.
pub const ARG: &str = "__broken_agent";

/// The rules, for the tests' use.
pub const RULES: &[&str] = &[
    "none",
    "hide-shell",
    "stdout-log",
    "parse-error-code",
    "wrong-version",
    "bad-event",
    "ignore-interrupt",
    "run-after-error",
    "answer-in-order",
    "leave-grandchild",
    "eof-hang",
];

/// The proxy breaking `rule` around `agent`, as an argv.
pub fn argv(rule: &str, agent: &[String]) -> Vec<String> {
    assert!(RULES.contains(&rule), "unknown rule {rule}");
    std::hint::black_box(&HOOK);
    let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    let mut argv = vec![exe, ARG.to_owned(), rule.to_owned(), "--".to_owned()];
    argv.extend(agent.iter().cloned());
    argv
}

#[used]
#[unsafe(link_section = ".init_array")]
static HOOK: extern "C" fn() = hook;

extern "C" fn hook() {
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else { return };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.get(1).map(String::as_str) != Some(ARG) {
        return;
    }
    let code = std::panic::catch_unwind(|| proxy(&args[2..])).unwrap_or(101);
    std::process::exit(code);
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_signal(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

#[derive(Default)]
struct Approvals {
    /// Not answered yet, oldest first.
    pending: Vec<Value>,
    /// Every approval request id the agent sent (as JSON text).
    all: HashSet<String>,
}

fn line_of(v: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(v).unwrap();
    line.push(b'\n');
    line
}

fn proxy(args: &[String]) -> i32 {
    let (rule, agent) = match args {
        [rule, sep, agent @ ..] if sep == "--" && !agent.is_empty() && RULES.contains(&rule.as_str()) => {
            (rule.clone(), agent.to_vec())
        }
        _ => {
            eprintln!("usage: {ARG} RULE -- AGENT ARGS... (rules: {})", RULES.join(", "));
            return 2;
        }
    };
    // SAFETY: dispositions only; the handler is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut child = match Command::new(&agent[0])
        .args(&agent[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{ARG}: cannot run {}: {e}", agent[0]);
            return 127;
        }
    };
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
            libc::signal(sig, pass_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        }
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let emit = {
        let out = Arc::clone(&out);
        move |bytes: &[u8]| {
            let mut out = out.lock().unwrap();
            let _ = out.write_all(bytes).and_then(|()| out.flush());
        }
    };
    let approvals = Arc::new(Mutex::new(Approvals::default()));

    if rule == "stdout-log" {
        emit(b"broken_agent: starting the agent\n");
    }
    if rule == "leave-grandchild" {
        // A daemon in a session of its own; its parent (sh) exits at once.
        let _ = Command::new("sh").args(["-c", "setsid sleep 300.25 </dev/null >/dev/null 2>&1 &"]).status();
    }

    let agent_out = child.stdout.take().unwrap();
    let reader = {
        let (rule, emit, approvals) = (rule.clone(), emit.clone(), Arc::clone(&approvals));
        std::thread::spawn(move || {
            let mut r = BufReader::new(agent_out);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                match serde_json::from_slice::<Value>(&line) {
                    Ok(mut msg) => {
                        if from_agent(&rule, &mut msg, &approvals) {
                            emit(&line_of(&msg));
                        } else {
                            emit(&line);
                        }
                    }
                    Err(_) => emit(&line),
                }
            }
        })
    };

    let mut agent_in = child.stdin.take().unwrap();
    {
        let (rule, emit, approvals) = (rule.clone(), emit.clone(), Arc::clone(&approvals));
        std::thread::spawn(move || {
            let mut stdin = BufReader::new(std::io::stdin());
            loop {
                let mut line = Vec::new();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                match to_agent(&rule, &line, &approvals) {
                    Forward::As => {
                        let _ = agent_in.write_all(&line).and_then(|()| agent_in.flush());
                    }
                    Forward::Rewritten(v) => {
                        let _ = agent_in.write_all(&line_of(&v)).and_then(|()| agent_in.flush());
                    }
                    Forward::Answer(v) => emit(&line_of(&v)),
                }
            }
            if rule == "eof-hang" {
                // Keep the agent's stdin open for as long as we live.
                std::mem::forget(agent_in);
            }
        });
    }

    let _ = reader.join();
    let status = child.wait();
    let _ = out.lock().unwrap().flush();
    match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt as _;
            128 + s.signal().unwrap_or(0)
        }),
        Err(_) => 1,
    }
}

/// Changes a message from the agent; true if it was changed.
fn from_agent(rule: &str, msg: &mut Value, approvals: &Mutex<Approvals>) -> bool {
    let method = msg["method"].as_str().unwrap_or_default().to_owned();
    if (method == "approval/exec" || method == "approval/patch") && msg.get("id").is_some() {
        let mut a = approvals.lock().unwrap();
        a.pending.push(msg["id"].clone());
        a.all.insert(msg["id"].to_string());
        return false;
    }
    if method == "$/cancelRequest" {
        let mut a = approvals.lock().unwrap();
        let id = msg["params"]["id"].clone();
        a.pending.retain(|p| *p != id);
        return false;
    }
    if let Some(result) = msg.get_mut("result")
        && result.get("protocol_version").is_some()
        && result.get("capabilities").is_some()
    {
        match rule {
            "wrong-version" => {
                result["protocol_version"] = json!(2);
                return true;
            }
            "hide-shell" => {
                if let Some(models) = result["capabilities"]["models"].as_array_mut() {
                    models.retain(|m| m != "shell");
                }
                return true;
            }
            _ => return false,
        }
    }
    if rule == "bad-event" && method == "event" && msg["params"]["msg"]["type"] == "exec_command_end" {
        let ms = msg["params"]["msg"]["duration_ms"].to_string();
        msg["params"]["msg"]["duration_ms"] = json!(format!("{ms} ms"));
        return true;
    }
    false
}

enum Forward {
    /// Pass the line on unchanged.
    As,
    /// Pass this on instead.
    Rewritten(Value),
    /// Pass nothing on; answer the host with this.
    Answer(Value),
}

/// Decides what to do with a line from the host.
fn to_agent(rule: &str, line: &[u8], approvals: &Mutex<Approvals>) -> Forward {
    let mut body = line.strip_suffix(b"\n").unwrap_or(line);
    body = body.strip_suffix(b"\r").unwrap_or(body);
    body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.is_empty() || !line.ends_with(b"\n") {
        return Forward::As;
    }
    let Ok(msg) = serde_json::from_slice::<Value>(body) else {
        if rule == "parse-error-code" {
            return Forward::Answer(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "invalid request"}}),
            );
        }
        return Forward::As;
    };
    let is_answer = msg.get("method").is_none() && msg.get("id").is_some();
    match rule {
        "ignore-interrupt" if msg["method"] == "submit" && msg["params"]["op"]["type"] == "interrupt" => {
            Forward::Answer(json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"id": msg["params"]["id"]}}))
        }
        "run-after-error" if is_answer && msg.get("error").is_some() => {
            if approvals.lock().unwrap().all.contains(&msg["id"].to_string()) {
                Forward::Rewritten(
                    json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"decision": "approved"}}),
                )
            } else {
                Forward::As
            }
        }
        "answer-in-order" if is_answer => {
            let mut a = approvals.lock().unwrap();
            if a.all.contains(&msg["id"].to_string()) && !a.pending.is_empty() {
                let mut msg = msg;
                msg["id"] = a.pending.remove(0);
                Forward::Rewritten(msg)
            } else {
                Forward::As
            }
        }
        _ => Forward::As,
    }
}
