//! The engine in-process: `deputy_agent::serve` over an in-memory pipe, driven
//! by a `deputy-rpc` peer acting as the host (answering approvals through its
//! router, as a real host would).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deputy_protocol::{
    ApprovalResult, Event, EventMsg, ExecApprovalParams, InitializeParams, InitializeResult, Op, PeerInfo,
    ReviewDecision, SessionStartParams, SessionStartResult, Submission, SubmitResult, methods,
};
use deputy_rpc::{Peer, PeerConfig, Router};
use tokio::sync::mpsc;

#[tokio::test(flavor = "current_thread")]
async fn a_host_peer_drives_a_turn_with_an_approval() {
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().canonicalize().unwrap();
    let (host_side, agent_side) = tokio::io::duplex(64 * 1024);
    let (agent_read, agent_write) = tokio::io::split(agent_side);
    let agent = tokio::spawn(deputy_agent::serve(
        agent_read,
        agent_write,
        deputy_agent::AgentConfig::new(home.path()),
    ));

    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let asked: Arc<Mutex<Vec<ExecApprovalParams>>> = Arc::default();
    let mut router = Router::new();
    router.notification(methods::EVENT, move |e: Event| {
        let _ = events_tx.send(e);
        async {}
    });
    let a = Arc::clone(&asked);
    router.request(methods::APPROVAL_EXEC, move |p: ExecApprovalParams, _ctx| {
        a.lock().unwrap().push(p);
        async { Ok(ApprovalResult { decision: ReviewDecision::Approved }) }
    });
    let (host_read, host_write) = tokio::io::split(host_side);
    let (host, conn) = Peer::serve(host_read, host_write, router, PeerConfig::default());

    let init: InitializeResult = host
        .request(
            methods::INITIALIZE,
            InitializeParams {
                protocol_version: 1,
                client_info: PeerInfo { name: "in-process".into(), version: None },
                capabilities: Default::default(),
                meta: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(init.capabilities.models, ["shell", "script", "openai:*"]);
    let started: SessionStartResult =
        host.request(methods::SESSION_START, SessionStartParams::new(&cwd_path)).await.unwrap();
    let configured = events.recv().await.unwrap();
    assert!(
        matches!(&configured.msg, EventMsg::SessionConfigured { session_id, .. } if *session_id == started.session_id)
    );

    let sub: SubmitResult = host
        .request(methods::SUBMIT, Submission { id: Some("t1".into()), op: Op::text("$ touch made") })
        .await
        .unwrap();
    assert_eq!(sub.id, "t1");
    let mut kinds = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
        assert_eq!(e.id, "t1");
        kinds.push(e.msg.kind());
        if e.msg.ends_turn() {
            break;
        }
    }
    assert_eq!(kinds.first(), Some(&"task_started"));
    assert!(kinds.contains(&"exec_command_begin") && kinds.contains(&"exec_command_end"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"task_complete"));
    assert_eq!(asked.lock().unwrap()[0].command, ["touch", "made"]);
    assert!(cwd_path.join("made").exists());

    let _: SubmitResult =
        host.request(methods::SUBMIT, Submission { id: Some("bye".into()), op: Op::Shutdown }).await.unwrap();
    let done = events.recv().await.unwrap();
    assert_eq!(done.msg, EventMsg::ShutdownComplete);
    assert_eq!(agent.await.unwrap(), 0);
    // The agent closed its side; ours stays open until our last handle goes.
    host.read_closed().await;
    drop(host);
    assert!(matches!(conn.wait().await, deputy_rpc::CloseReason::Eof));
}
