//! Every replica follows the stored watermarks, so that each one — standby or demoted leader
//! included — exports the real data lag, not the view of its own last run.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use super::status::Status;
use crate::error::{Chain, Result};
use crate::store::MarkStore;
use crate::window::Period;

/// Reads every period's stored watermark into `status`.
pub async fn read_stored_watermarks(store: &impl MarkStore, status: &Status) -> Result<()> {
    for period in Period::ALL {
        if let Some(watermark) = store.watermark(period).await? {
            status.set_watermark(period, watermark);
        }
    }
    Ok(())
}

/// Reads the stored watermarks after every finished run and every `every`, until shutdown.
pub async fn follow_stored_watermarks(
    store: Arc<impl MarkStore>,
    status: Arc<Status>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut runs_finished = status.subscribe_runs_finished();
    loop {
        // A read in flight at the signal is dropped: nothing waits on MongoDB after it.
        let read = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            read = read_stored_watermarks(&*store, &status) => read,
        };
        if let Err(e) = read {
            debug!(error = %Chain(&e), "watermarks not read; the data lag keeps growing from the last known");
        }
        tokio::select! {
            _ = runs_finished.changed() => {}
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
