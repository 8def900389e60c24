use std::sync::Arc;

use deputy_host::{AgentCommand, ApproveAll, CancellationToken, ConversationConfig, OneShot};
use deputy_protocol::{InputItem, SessionSource, SessionStartParams};

#[tokio::main]
async fn main() -> Result<(), deputy_host::HostError> {
    let mut session = SessionStartParams::new(std::env::current_dir().unwrap());
    session.source = SessionSource::Exec;
    let input = vec![InputItem::Text { text: "$ echo delegated".into() }];
    let cancel = CancellationToken::new(); // cancel() it to stop the agent within 500 ms
    let mut turn = OneShot::run(
        AgentCommand::deputy_agent(), // or AgentCommand::new("my-agent") for any protocol speaker
        ConversationConfig::new(session),
        Arc::new(ApproveAll), // or your own `Approver`
        input,
        cancel,
    )
    .await?;
    while let Some(event) = turn.next_event().await {
        println!("{:?}", event.msg);
    }
    println!("the agent ended: {:?}", turn.wait().await?);
    Ok(())
}
