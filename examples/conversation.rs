//! An interactive conversation with `deputy agent`: two turns, the token
//! usage, and a graceful shutdown. Run it from a checkout:
//! `cargo build && cargo run --example conversation` (it finds the `deputy`
//! binary one folder up from itself, else through `$DEPUTY_BIN` or `PATH`).
//! Run by `tests/readme.rs`.

use std::sync::Arc;

use deputy_host::protocol::{Op, SessionStartParams};
use deputy_host::{AgentCommand, ApproveAll, CancellationToken, Conversation, ConversationConfig};

#[tokio::main]
async fn main() -> Result<(), deputy_host::HostError> {
    let config = ConversationConfig::new(SessionStartParams::new(std::env::current_dir().unwrap()));
    let cancel = CancellationToken::new(); // cancel it to stop everything within 500 ms
    let mut conversation =
        Conversation::spawn(AgentCommand::deputy_agent(), config, Arc::new(ApproveAll), cancel).await?;
    println!("session {}", conversation.session_id());

    for (n, prompt) in ["$ echo hello", "$ echo again"].into_iter().enumerate() {
        let turn = conversation.submit_with_id(format!("turn-{n}"), Op::text(prompt)).await?;
        while let Some(event) = conversation.next_event().await {
            println!("{}: {:?}", event.id, event.msg);
            if event.id == turn && event.msg.ends_turn() {
                break;
            }
        }
    }
    println!("tokens: {:?}", conversation.token_usage());
    let ending = conversation.shutdown().await?;
    println!("the agent ended: {ending:?}");
    Ok(())
}
