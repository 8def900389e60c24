//! A model server for the model-call sweep: an OpenAI-compatible
//! `/v1/chat/completions` endpoint on 127.0.0.1 that answers every request
//! at once with the same short SSE stream (and closes the connection), and
//! records each request body's length. It lives as long as the benchmark.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;

/// The reply to every request: one content delta, stop, usage, done.
const REPLY: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

pub struct ModelServer {
    pub port: u16,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ModelServer {
    pub fn start() -> Result<ModelServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    if let Ok(body) = serve(conn) {
                        seen.lock().unwrap_or_else(PoisonError::into_inner).push(body);
                    }
                });
            }
        });
        Ok(ModelServer { port, bodies })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The bodies received so far, taken.
    pub fn take_bodies(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.bodies.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn serve(conn: TcpStream) -> std::io::Result<Vec<u8>> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().map_err(std::io::Error::other)?;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let mut w = conn;
    w.write_all(REPLY.as_bytes())?;
    w.flush()?;
    Ok(body)
}
