//! Deputy's own protocol: the dialect `deputy agent` speaks.

use std::sync::Arc;

use deputy_protocol::{
    ApprovalResult, ClientCapabilities, Event, ExecApprovalParams, InitializeParams, InitializeResult, Op,
    PROTOCOL_VERSION, PatchApprovalParams, SessionStartResult, Submission, SubmitResult, methods,
};
use deputy_rpc::{ErrorObject, Peer, RequestContext, RequestOptions, Router};

use super::{BoxFuture, Dialect, Established};
use crate::approver::ApprovalRequest;
use crate::config::ConversationConfig;
use crate::conversation::{ApprovalHub, EventSink, Fault, Shared, handshake_fault, submit_error};
use crate::error::HostError;

/// The native dialect: `initialize` + `session/start`, `submit`, `event`
/// notifications, `approval/exec` and `approval/patch` requests.
pub(crate) struct Native;

impl Dialect for Native {
    fn router(&self, sink: Arc<EventSink>, hub: Arc<ApprovalHub>) -> Router {
        let mut router = Router::new();
        super::flush_each_batch(&mut router, &sink);
        router.notification(methods::EVENT, move |event: Event| {
            let sink = Arc::clone(&sink);
            async move { sink.deliver(event).await }
        });
        let exec_hub = Arc::clone(&hub);
        router.request(methods::APPROVAL_EXEC, move |params: ExecApprovalParams, _cx: RequestContext| {
            let hub = Arc::clone(&exec_hub);
            async move {
                let decision = hub.ask(ApprovalRequest::Exec(params), &hub.shared.drain).await;
                Ok::<_, ErrorObject>(ApprovalResult { decision })
            }
        });
        router.request(methods::APPROVAL_PATCH, move |params: PatchApprovalParams, _cx: RequestContext| {
            let hub = Arc::clone(&hub);
            async move {
                let decision = hub.ask(ApprovalRequest::Patch(params), &hub.shared.drain).await;
                Ok::<_, ErrorObject>(ApprovalResult { decision })
            }
        });
        router
    }

    fn handshake<'a>(
        &'a self,
        peer: &'a Peer,
        config: &'a ConversationConfig,
    ) -> BoxFuture<'a, Result<Established, Option<Fault>>> {
        Box::pin(async move {
            let params = InitializeParams {
                protocol_version: PROTOCOL_VERSION,
                client_info: config.client_info.clone(),
                capabilities: ClientCapabilities {
                    max_line_bytes: Some(config.rpc.max_line_bytes as u64),
                    ..ClientCapabilities::default()
                },
                meta: None,
            };
            let init: InitializeResult = peer
                .request(methods::INITIALIZE, params)
                .await
                .map_err(|e| handshake_fault(methods::INITIALIZE, e))?;
            if init.protocol_version != PROTOCOL_VERSION {
                return Err(Some(Fault::Version(PROTOCOL_VERSION, init.protocol_version)));
            }
            // Never write a line the agent announced it would reject.
            if let Some(limit) = init.capabilities.max_line_bytes {
                peer.set_max_outgoing_bytes(Some(usize::try_from(limit).unwrap_or(usize::MAX)));
            }
            let session: SessionStartResult = peer
                .request(methods::SESSION_START, &config.session)
                .await
                .map_err(|e| handshake_fault(methods::SESSION_START, e))?;
            Ok((init, session))
        })
    }

    fn submit<'a>(
        &'a self,
        peer: &'a Peer,
        shared: &'a Arc<Shared>,
        submission: Submission,
    ) -> BoxFuture<'a, Result<String, HostError>> {
        Box::pin(async move {
            let opts = RequestOptions::default().cancel(shared.drain.clone());
            match peer.request_with::<_, SubmitResult>(methods::SUBMIT, submission, opts).await {
                Ok(result) => Ok(result.id),
                Err(e) => Err(submit_error(shared, methods::SUBMIT, e).await),
            }
        })
    }

    fn ending(&self, peer: &Peer, interrupt: bool, tag: String) -> BoxFuture<'static, ()> {
        let opts = RequestOptions::default().send_cancel_on_drop(false);
        let interrupt = interrupt.then(|| {
            peer.request_with::<_, SubmitResult>(
                methods::SUBMIT,
                Submission { id: None, op: Op::Interrupt },
                opts.clone(),
            )
        });
        let shutdown = peer.request_with::<_, SubmitResult>(
            methods::SUBMIT,
            Submission { id: Some(tag), op: Op::Shutdown },
            opts,
        );
        Box::pin(async move {
            match interrupt {
                // `join` polls both at once: both lines are queued in order.
                Some(i) => drop(futures::future::join(i, shutdown).await),
                None => drop(shutdown.await),
            }
        })
    }
}
