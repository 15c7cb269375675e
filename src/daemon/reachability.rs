//! Whether MongoDB answers: pinged every 10 s while up; while down, retried with capped
//! exponential backoff (1 s doubling to 60 s). One log line per change of state, and one
//! [`FIRST_REPORT`] after start if the first ping has not been answered by then (the driver
//! itself waits up to its server selection timeout, 10 s by default), so that a daemon pointed
//! at the wrong place says so at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{redact_uri, WHERE_TO_SET_URI};
use crate::daemon::status::Status;
use crate::error::Chain;
use crate::store::ServerStore;

pub const PING_INTERVAL: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long after start an unanswered first ping is reported.
pub const FIRST_REPORT: Duration = Duration::from_secs(5);

pub async fn watch_mongodb(
    store: Arc<impl ServerStore>,
    uri: String,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        // A ping in flight at the signal is dropped: nothing waits on MongoDB after it.
        let ping = store.ping();
        tokio::pin!(ping);
        let mut answered = None;
        if first {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                result = &mut ping => answered = Some(result),
                _ = tokio::time::sleep(FIRST_REPORT) => warn!(
                    uri = %redact_uri(&uri),
                    "MongoDB has not answered for {}s: {WHERE_TO_SET_URI}; runs wait, retrying",
                    FIRST_REPORT.as_secs()
                ),
            }
        }
        let result = match answered {
            Some(result) => result,
            None => tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                result = &mut ping => result,
            },
        };
        let up = result.is_ok();
        if up != status.mongodb_up() || first {
            match result {
                Ok(()) => info!(uri = %redact_uri(&uri), "MongoDB reachable"),
                Err(e) => warn!(
                    uri = %redact_uri(&uri),
                    error = %Chain(&e),
                    "MongoDB unreachable: {WHERE_TO_SET_URI}; runs wait, retrying with backoff up to {}s",
                    MAX_BACKOFF.as_secs()
                ),
            }
        }
        first = false;
        status.set_mongodb_up(up);
        let wait = if up {
            backoff = Duration::from_secs(1);
            PING_INTERVAL
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            wait
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
