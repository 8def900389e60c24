//! The notification dispatcher: runs notification handlers one at a time, in
//! arrival order, and gives the reader its permits back as they finish.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;
use tokio::sync::{Semaphore, mpsc};
use tracing::{error, warn};

use crate::peer::Inner;
use crate::reader::{CREDIT_GROUP, Job, NotificationBatch};
use crate::router::{BatchEndFn, BoxFuture, NotificationFn, RunFn};

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
    handlers: Vec<(&'static str, Box<RunFn>)>,
    lines: Option<Box<NotificationFn>>,
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
            let (method, started) = match job {
                Job::Notify(handler, params) => {
                    let (method, run) = &handlers[handler];
                    (*method, std::panic::catch_unwind(AssertUnwindSafe(|| run(params))).map(Ok))
                }
                Job::Line(range) => {
                    let line = range.map(|r| &batch.text[r]);
                    let handler = lines.as_ref().expect("line jobs come only in line mode");
                    ("(line)", std::panic::catch_unwind(AssertUnwindSafe(|| handler(line))))
                }
                Job::Then(then) => {
                    if std::panic::catch_unwind(AssertUnwindSafe(then)).is_err() {
                        error!("handing over a response or request in order panicked");
                    }
                    continue;
                }
            };
            match started {
                Ok(Ok(fut)) => {
                    if run_handler(fut, method, &inner).await.is_err() {
                        return;
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

struct Stop;

/// Runs one handler to its end, unless the connection is closed locally
/// meanwhile (`Err(Stop)`). Most handlers finish at the first poll (an event
/// taken into a batch): that poll comes before the race with the close is
/// set up, which costs more than the handler.
async fn run_handler(fut: BoxFuture<()>, method: &str, inner: &Inner) -> Result<(), Stop> {
    let mut fut = AssertUnwindSafe(fut).catch_unwind();
    let result = match futures::poll!(&mut fut) {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => tokio::select! {
            biased;
            result = fut => result,
            () = inner.local_close.cancelled() => return Err(Stop),
        },
    };
    if result.is_err() {
        error!(method, "a notification handler panicked");
    }
    Ok(())
}
