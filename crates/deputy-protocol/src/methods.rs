//! Method names of the Deputy protocol, one constant each.

/// host → agent request: handshake. Params [`crate::InitializeParams`], result [`crate::InitializeResult`].
pub const INITIALIZE: &str = "initialize";
/// host → agent request: start the one session of this process.
/// Params [`crate::SessionStartParams`], result [`crate::SessionStartResult`].
pub const SESSION_START: &str = "session/start";
/// host → agent request: submit an op. Params [`crate::Submission`], result [`crate::SubmitResult`].
pub const SUBMIT: &str = "submit";
/// agent → host notification: one event. Params [`crate::Event`].
pub const EVENT: &str = "event";
/// agent → host request: may this command run? Params [`crate::ExecApprovalParams`],
/// result [`crate::ApprovalResult`].
pub const APPROVAL_EXEC: &str = "approval/exec";
/// agent → host request: may this patch be applied? Params [`crate::PatchApprovalParams`],
/// result [`crate::ApprovalResult`].
pub const APPROVAL_PATCH: &str = "approval/patch";
/// Notification, either direction: the sender no longer needs the answer to
/// request `id`. Params [`crate::CancelRequestParams`].
pub const CANCEL_REQUEST: &str = "$/cancelRequest";
