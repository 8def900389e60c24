//! The notification dispatcher: runs notification handlers one at a time, in
//! arrival order, and gives the reader its permits back as they finish.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, warn};

use crate::peer::Inner;
use crate::reader::{CREDIT_GROUP, Job, NotificationBatch};
use crate::router::{BatchEndFn, NotificationFn};

/// If the dispatcher stops abnormally, the reader must not wait for permits
/// that never come back.
struct DispatcherGuard(Arc<Semaphore>);

impl Drop for DispatcherGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Runs notification handlers one at a time, in order. Permits go back to the
/// reader as handlers finish (in groups, to keep the hot path cheap).
pub(crate) async fn dispatch_loop(
    mut rx: mpsc::UnboundedReceiver<NotificationBatch>,
    handlers: Vec<(&'static str, Box<NotificationFn>)>,
    batch_end: Option<Box<BatchEndFn>>,
    permits: Arc<Semaphore>,
    inner: Arc<Inner>,
) {
    let _guard = DispatcherGuard(Arc::clone(&permits));
    loop {
        let batch = tokio::select! {
            biased;
            batch = rx.recv() => batch,
            () = inner.local_close.cancelled() => return,
        };
        let Some(batch) = batch else { return };
        let mut done = 0;
        for job in batch.jobs {
            if inner.local_close.is_cancelled() {
                return;
            }
            let (handler, range) = match job {
                Job::Notify(handler, range) => (handler, range),
                Job::Then(then) => {
                    if std::panic::catch_unwind(AssertUnwindSafe(then)).is_err() {
                        error!("handing over a response or request in order panicked");
                    }
                    continue;
                }
            };
            let (method, handler) = &handlers[handler];
            let params = range.map(|r| &batch.text[r]);
            match std::panic::catch_unwind(AssertUnwindSafe(|| handler(params))) {
                Ok(Ok(fut)) => {
                    tokio::select! {
                        biased;
                        r = AssertUnwindSafe(fut).catch_unwind() => if r.is_err() {
                            error!(method, "a notification handler panicked");
                        },
                        () = inner.local_close.cancelled() => return,
                    }
                }
                Ok(Err(e)) => {
                    warn!(method, error = %e, "skipping a notification whose params do not decode");
                }
                Err(_) => error!(method, "a notification handler panicked"),
            }
            done += 1;
            if done == CREDIT_GROUP {
                permits.add_permits(done);
                done = 0;
            }
        }
        permits.add_permits(done);
        if let Some(batch_end) = &batch_end {
            tokio::select! {
                biased;
                r = AssertUnwindSafe(batch_end()).catch_unwind() => if r.is_err() {
                    error!("the notification batch-end hook panicked");
                },
                () = inner.local_close.cancelled() => return,
            }
        }
    }
}
