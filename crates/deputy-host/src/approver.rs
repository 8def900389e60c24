//! Answering the agent's approval requests (`approval/exec`, `approval/patch`,
//! and for foreign agents the permission requests of other tools).

use std::fmt;

use async_trait::async_trait;
use deputy_protocol::{ApprovalKind, ExecApprovalParams, PatchApprovalParams, ReviewDecision};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What an approval call gets besides its params.
#[derive(Debug, Clone)]
pub struct ApprovalContext {
    key: String,
    cancel: CancellationToken,
}

impl ApprovalContext {
    /// A context for the approval `key`, withdrawn when `cancel` fires. The
    /// conversation makes these; make one yourself to call an approver
    /// directly (in its tests, say).
    pub fn new(key: impl Into<String>, cancel: CancellationToken) -> Self {
        ApprovalContext { key: key.into(), cancel }
    }

    /// The approval's key: `approval_id` if the agent sent one, else `call_id`.
    /// Use it to identify the prompt in a UI (never the turn id: several
    /// approvals of one turn may be outstanding at once).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Fires when the answer is no longer wanted: the agent withdrew the
    /// request (`$/cancelRequest`), or the conversation is being cancelled or
    /// shut down. The approver's future is dropped at that point anyway; use
    /// this to close a prompt living elsewhere.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Resolves when [`token`](Self::token) fires.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether [`token`](Self::token) has fired.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A foreign agent's request to use a tool that is neither a command nor a
/// patch (an ACP `fetch`, `read`, `search`, … tool call; an edit that shows
/// no diff). Deputy's own agents never ask this.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolApprovalParams {
    /// The tool call's id (the approval's key).
    pub call_id: String,
    /// The turn it belongs to.
    pub turn_id: String,
    /// What kind of tool, as the agent names it (ACP's tool kind: `read`,
    /// `fetch`, `search`, `think`, `other`, …).
    pub tool: String,
    /// The agent's one-line description of the call.
    pub title: String,
    /// The tool's input as the agent sent it (ACP's `rawInput`), if any.
    pub input: Option<Value>,
    /// Text the agent attached to the call, if any.
    pub detail: Option<String>,
}

/// Answers the agent's approval requests. Implemented by the host.
///
/// Calls run concurrently (each request in its own task), so a slow answer
/// to one approval never delays another. When the answer is no longer wanted
/// (the agent withdrew the request, or the conversation is cancelled, in which
/// case the agent is answered `abort`), the call's future is dropped and
/// [`cancelled`](Self::cancelled) is called with the approval's key.
#[async_trait]
pub trait Approver: Send + Sync + 'static {
    /// May this command run?
    async fn approve_exec(&self, params: ExecApprovalParams, cx: ApprovalContext) -> ReviewDecision;

    /// May this patch be applied?
    async fn approve_patch(&self, params: PatchApprovalParams, cx: ApprovalContext) -> ReviewDecision;

    /// May a foreign agent use this other tool? Only agents of other
    /// protocols ask it (see [`ToolApprovalParams`]). Default: denied — a
    /// host that does not know what it is asked does not allow it.
    async fn approve_tool(&self, params: ToolApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        let _ = (params, cx);
        ReviewDecision::Denied
    }

    /// The approval `key` was withdrawn before it was answered (close its prompt).
    fn cancelled(&self, key: &str) {
        let _ = key;
    }
}

/// One approval request, either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalRequest {
    /// May this command run?
    Exec(ExecApprovalParams),
    /// May this patch be applied?
    Patch(PatchApprovalParams),
    /// A foreign agent's other tool (see [`ToolApprovalParams`]).
    Tool(ToolApprovalParams),
}

impl ApprovalRequest {
    /// `approval_id` if present, else `call_id`.
    pub fn key(&self) -> &str {
        match self {
            ApprovalRequest::Exec(p) => p.approval_key(),
            ApprovalRequest::Patch(p) => &p.call_id,
            ApprovalRequest::Tool(p) => &p.call_id,
        }
    }

    /// The tool call this approval is for.
    pub fn call_id(&self) -> &str {
        match self {
            ApprovalRequest::Exec(p) => &p.call_id,
            ApprovalRequest::Patch(p) => &p.call_id,
            ApprovalRequest::Tool(p) => &p.call_id,
        }
    }

    /// The turn the tool call belongs to (for display, never as a key).
    pub fn turn_id(&self) -> &str {
        match self {
            ApprovalRequest::Exec(p) => &p.turn_id,
            ApprovalRequest::Patch(p) => &p.turn_id,
            ApprovalRequest::Tool(p) => &p.turn_id,
        }
    }

    /// Exec or patch; `None` for a foreign agent's other tool.
    pub fn kind(&self) -> Option<ApprovalKind> {
        match self {
            ApprovalRequest::Exec(_) => Some(ApprovalKind::Exec),
            ApprovalRequest::Patch(_) => Some(ApprovalKind::Patch),
            ApprovalRequest::Tool(_) => None,
        }
    }
}

/// Approves everything (`approved`): commands, patches and other tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApproveAll;

#[async_trait]
impl Approver for ApproveAll {
    async fn approve_exec(&self, _: ExecApprovalParams, _: ApprovalContext) -> ReviewDecision {
        ReviewDecision::Approved
    }
    async fn approve_patch(&self, _: PatchApprovalParams, _: ApprovalContext) -> ReviewDecision {
        ReviewDecision::Approved
    }
    async fn approve_tool(&self, _: ToolApprovalParams, _: ApprovalContext) -> ReviewDecision {
        ReviewDecision::Approved
    }
}

/// Denies everything (`denied`: the tool does not run, the turn goes on).
#[derive(Debug, Clone, Copy, Default)]
pub struct DenyAll;

#[async_trait]
impl Approver for DenyAll {
    async fn approve_exec(&self, _: ExecApprovalParams, _: ApprovalContext) -> ReviewDecision {
        ReviewDecision::Denied
    }
    async fn approve_patch(&self, _: PatchApprovalParams, _: ApprovalContext) -> ReviewDecision {
        ReviewDecision::Denied
    }
}

/// Decides with a synchronous closure.
///
/// ```
/// use deputy_host::{ApprovalRequest, FnApprover};
/// use deputy_protocol::ReviewDecision;
/// let approver = FnApprover::new(|req: &ApprovalRequest| match req {
///     ApprovalRequest::Exec(p) if p.command.first().is_some_and(|c| c == "ls") => ReviewDecision::Approved,
///     _ => ReviewDecision::Denied,
/// });
/// # let _ = approver;
/// ```
pub struct FnApprover<F> {
    f: F,
}

impl<F> FnApprover<F>
where
    F: Fn(&ApprovalRequest) -> ReviewDecision + Send + Sync + 'static,
{
    /// An approver that answers every request with `f`.
    pub fn new(f: F) -> Self {
        FnApprover { f }
    }
}

impl<F> fmt::Debug for FnApprover<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnApprover")
    }
}

#[async_trait]
impl<F> Approver for FnApprover<F>
where
    F: Fn(&ApprovalRequest) -> ReviewDecision + Send + Sync + 'static,
{
    async fn approve_exec(&self, params: ExecApprovalParams, _: ApprovalContext) -> ReviewDecision {
        (self.f)(&ApprovalRequest::Exec(params))
    }
    async fn approve_patch(&self, params: PatchApprovalParams, _: ApprovalContext) -> ReviewDecision {
        (self.f)(&ApprovalRequest::Patch(params))
    }
    async fn approve_tool(&self, params: ToolApprovalParams, _: ApprovalContext) -> ReviewDecision {
        (self.f)(&ApprovalRequest::Tool(params))
    }
}

/// Hands every approval request, with a responder, to a channel (e.g. a UI).
///
/// Fails closed: if the receiver is gone, or a [`PendingApproval`] is dropped
/// unanswered, the answer is `denied`. When the agent withdraws a request or
/// the conversation is cancelled, the pending approval's
/// [`cancelled`](PendingApproval::cancelled) fires (the agent is answered
/// `abort` on cancel; a withdrawn request needs no answer).
///
/// ```
/// use deputy_host::protocol::{ExecApprovalParams, ReviewDecision};
/// use deputy_host::{ApprovalContext, ApprovalRequest, Approver, CancellationToken, ChannelApprover};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (approver, mut requests) = ChannelApprover::new(8);
/// // The UI's side: show each request, answer it.
/// tokio::spawn(async move {
///     while let Some(pending) = requests.recv().await {
///         let allow = matches!(pending.request(), ApprovalRequest::Exec(p) if p.command == ["ls"]);
///         pending.respond(if allow { ReviewDecision::Approved } else { ReviewDecision::Denied });
///     }
/// });
/// // What a conversation does with each `approval/exec` of the agent:
/// let ask = |argv: &[&str]| ExecApprovalParams {
///     call_id: "call-1".into(),
///     approval_id: None,
///     turn_id: "turn-1".into(),
///     command: argv.iter().map(|a| a.to_string()).collect(),
///     cwd: "/work".into(),
///     reason: None,
///     unsandboxed: false,
/// };
/// let cx = || ApprovalContext::new("call-1", CancellationToken::new());
/// assert_eq!(approver.approve_exec(ask(&["ls"]), cx()).await, ReviewDecision::Approved);
/// assert_eq!(approver.approve_exec(ask(&["rm", "-rf", "/"]), cx()).await, ReviewDecision::Denied);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ChannelApprover {
    tx: mpsc::Sender<PendingApproval>,
}

impl ChannelApprover {
    /// A channel approver and the receiving end of its requests (`capacity`
    /// requests may wait in the channel; further ones wait for room).
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<PendingApproval>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ChannelApprover { tx }, rx)
    }

    async fn ask(&self, request: ApprovalRequest, cx: ApprovalContext) -> ReviewDecision {
        let (responder, answer) = oneshot::channel();
        let pending = PendingApproval { request, cancel: cx.cancel.clone(), responder };
        tokio::select! {
            biased;
            () = cx.cancelled() => return ReviewDecision::Abort,
            sent = self.tx.send(pending) => if sent.is_err() {
                tracing::debug!(key = cx.key(), "approval channel closed: denying");
                return ReviewDecision::Denied;
            },
        }
        tokio::select! {
            biased;
            () = cx.cancelled() => ReviewDecision::Abort,
            answer = answer => answer.unwrap_or(ReviewDecision::Denied),
        }
    }
}

#[async_trait]
impl Approver for ChannelApprover {
    async fn approve_exec(&self, params: ExecApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        self.ask(ApprovalRequest::Exec(params), cx).await
    }
    async fn approve_patch(&self, params: PatchApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        self.ask(ApprovalRequest::Patch(params), cx).await
    }
    async fn approve_tool(&self, params: ToolApprovalParams, cx: ApprovalContext) -> ReviewDecision {
        self.ask(ApprovalRequest::Tool(params), cx).await
    }
}

/// One approval waiting for an answer, from [`ChannelApprover`].
#[derive(Debug)]
pub struct PendingApproval {
    request: ApprovalRequest,
    cancel: CancellationToken,
    responder: oneshot::Sender<ReviewDecision>,
}

impl PendingApproval {
    /// What is asked.
    pub fn request(&self) -> &ApprovalRequest {
        &self.request
    }

    /// The approval's key (`approval_id`, else `call_id`).
    pub fn key(&self) -> &str {
        self.request.key()
    }

    /// Answers. Returns `false` if the answer is no longer wanted (withdrawn or cancelled).
    pub fn respond(self, decision: ReviewDecision) -> bool {
        !self.cancel.is_cancelled() && self.responder.send(decision).is_ok()
    }

    /// Fires when the answer is no longer wanted (close the prompt).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Resolves when the answer is no longer wanted.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the answer is no longer wanted.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.responder.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn exec(call: &str, approval: Option<&str>) -> ExecApprovalParams {
        ExecApprovalParams {
            call_id: call.into(),
            approval_id: approval.map(Into::into),
            turn_id: "t".into(),
            command: vec!["ls".into()],
            cwd: PathBuf::from("/"),
            reason: None,
            unsandboxed: false,
        }
    }

    fn cx(key: &str) -> ApprovalContext {
        ApprovalContext::new(key, CancellationToken::new())
    }

    #[test]
    fn request_key_prefers_the_approval_id() {
        assert_eq!(ApprovalRequest::Exec(exec("c1", Some("a1"))).key(), "a1");
        assert_eq!(ApprovalRequest::Exec(exec("c1", None)).key(), "c1");
        assert_eq!(ApprovalRequest::Exec(exec("c1", None)).kind(), Some(ApprovalKind::Exec));
    }

    #[tokio::test]
    async fn ready_approvers_answer() {
        assert_eq!(ApproveAll.approve_exec(exec("c", None), cx("c")).await, ReviewDecision::Approved);
        assert_eq!(DenyAll.approve_exec(exec("c", None), cx("c")).await, ReviewDecision::Denied);
        let f = FnApprover::new(|r: &ApprovalRequest| {
            if r.key() == "yes" { ReviewDecision::ApprovedForSession } else { ReviewDecision::Abort }
        });
        assert_eq!(f.approve_exec(exec("yes", None), cx("yes")).await, ReviewDecision::ApprovedForSession);
        assert_eq!(f.approve_exec(exec("no", None), cx("no")).await, ReviewDecision::Abort);
    }

    #[tokio::test]
    async fn channel_approver_hands_requests_over_and_fails_closed() {
        let (approver, mut rx) = ChannelApprover::new(4);
        let a = approver.clone();
        let ask = tokio::spawn(async move { a.approve_exec(exec("c1", None), cx("c1")).await });
        let pending = rx.recv().await.unwrap();
        assert_eq!(pending.key(), "c1");
        assert!(pending.respond(ReviewDecision::Approved));
        assert_eq!(ask.await.unwrap(), ReviewDecision::Approved);

        // Dropped unanswered: denied.
        let a = approver.clone();
        let ask = tokio::spawn(async move { a.approve_exec(exec("c2", None), cx("c2")).await });
        drop(rx.recv().await.unwrap());
        assert_eq!(ask.await.unwrap(), ReviewDecision::Denied);

        // Receiver gone: denied.
        drop(rx);
        assert_eq!(approver.approve_exec(exec("c3", None), cx("c3")).await, ReviewDecision::Denied);
    }

    #[tokio::test]
    async fn channel_approver_cancel_answers_abort_and_tells_the_ui() {
        let (approver, mut rx) = ChannelApprover::new(4);
        let token = CancellationToken::new();
        let context = ApprovalContext::new("c1", token.clone());
        let ask = tokio::spawn(async move { approver.approve_exec(exec("c1", None), context).await });
        let pending = rx.recv().await.unwrap();
        token.cancel();
        pending.cancelled().await;
        assert_eq!(ask.await.unwrap(), ReviewDecision::Abort);
        assert!(pending.is_cancelled());
        assert!(!pending.respond(ReviewDecision::Approved));
    }
}
