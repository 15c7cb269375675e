//! Whether the database is set up for the daemon's runs: the indexes `vcmetrics migrate`
//! creates that runs cannot do without ([`needed_by_runs`]).
//!
//! Checked as soon as MongoDB answers, again every `metrics_refresh` while something is
//! missing (so readiness comes back once someone runs `migrate`), every [`RECHECK`] otherwise,
//! and at once when a run failed for want of an index. What is missing is said in one log line
//! per change, shown by `/readyz` (503) and by `vcmetrics_database_missing_indexes`. It never
//! creates anything: that is `migrate`'s (or `run --migrate`'s), under a role that may.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::daemon::status::Status;
use crate::error::Chain;
use crate::store::indexes::{needed_by_runs, WantedIndex};
use crate::store::ServerStore;

/// How often a database found set up is looked at again (someone may drop an index).
pub const RECHECK: Duration = Duration::from_secs(300);
/// How often the check looks whether MongoDB answers yet.
const WAIT_FOR_MONGODB: Duration = Duration::from_secs(1);

pub async fn watch_setup(
    store: Arc<impl ServerStore>,
    config: Arc<Config>,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) {
    let needed = needed_by_runs(&config);
    loop {
        let wait = if status.mongodb_up() {
            let absent = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                absent = store.absent_indexes(&needed) => absent,
            };
            match absent {
                Ok(absent) => {
                    record(&status, &absent);
                    if absent.is_empty() {
                        RECHECK
                    } else {
                        config.metrics_refresh
                    }
                }
                Err(e) => {
                    // An unreachable server is the reachability watcher's to report.
                    debug!(error = %Chain(&e), "cannot list the indexes; checked again later");
                    config.metrics_refresh
                }
            }
        } else {
            WAIT_FOR_MONGODB
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = status.setup_suspected() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Records what is missing; logs once per change.
fn record(status: &Status, absent: &[WantedIndex]) {
    let was_missing = !status.missing_indexes().is_empty();
    let missing: Vec<String> = absent.iter().map(WantedIndex::describe).collect();
    if !status.set_missing_indexes(missing.clone()) {
        return;
    }
    if !missing.is_empty() {
        warn!(
            missing = %missing.join(", "),
            "the database is not set up for vcmetrics: run `vcmetrics migrate` (or start with \
             `vcmetrics run --migrate`); until then runs fail and /readyz answers 503"
        );
    } else if was_missing {
        info!("the database is set up: every index the runs need exists");
    }
}
