//! The call metrics served from memory: re-read from the metrics collection after every run and
//! every `metrics_refresh`, so a scrape never waits on MongoDB and every replica — leader or
//! standby — serves the same numbers (the daemon follows the stored watermarks the same way, in
//! `daemon::watermarks`). When a read fails the previous snapshot stays.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, TextEncoder};
use tokio::sync::watch;
use tracing::debug;

use super::call_metrics::{families, ExportedWindow, WindowRole};
use super::session_metrics::SessionMetricsCache;
use crate::clock::Clock;
use crate::config::Config;
use crate::daemon::status::Status;
use crate::error::{Chain, Result};
use crate::metrics_document::WindowMetrics;
use crate::rollup::storage::StoredMetrics;
use crate::sessions::gauges::GaugeQueries;
use crate::sessions::storage::SessionStore;
use crate::window::Period;

/// The call metrics, already in the text exposition format: encoded once per refresh, not once
/// per scrape (with eight windows of error codes that is most of a scrape's work).
#[derive(Debug, Default)]
pub struct CallMetricsCache {
    text: RwLock<Bytes>,
}

impl CallMetricsCache {
    pub fn text(&self) -> Bytes {
        self.text.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, families: &[MetricFamily]) -> prometheus::Result<()> {
        let mut text = Vec::with_capacity(32 * 1024);
        TextEncoder::new().encode(families, &mut text)?;
        *self.text.write().unwrap_or_else(|p| p.into_inner()) = Bytes::from(text);
        Ok(())
    }
}

/// Reads each period's open and last closed window documents and rebuilds the snapshot.
pub async fn refresh(
    store: &(impl StoredMetrics + SessionStore),
    config: &Config,
    clock: &impl Clock,
    cache: &CallMetricsCache,
) -> Result<()> {
    let now = clock.now();
    let mut windows = Vec::new();
    for period in Period::ALL {
        let open = config.calendar.window_containing(period, now);
        let last_closed_start = config.calendar.previous_window_start(period, open.start);
        for doc in store
            .stored_windows(period, &[last_closed_start, open.start])
            .await?
        {
            let metrics = WindowMetrics::from_document(&doc)?;
            // A seed without metrics (its run has not finished) is not exported.
            if metrics.values.is_empty() {
                continue;
            }
            let role = if metrics.date == open.start {
                WindowRole::Open
            } else {
                WindowRole::LastClosed
            };
            windows.push(ExportedWindow {
                period,
                role,
                metrics,
            });
        }
    }
    cache.set(&families(&windows, config.top_error_codes)?)?;
    Ok(())
}

/// Reads the session gauges at the clock's now: a failure is counted and the last values stay.
pub async fn refresh_sessions(
    store: &(impl StoredMetrics + SessionStore),
    config: &Config,
    clock: &impl Clock,
    cache: &SessionMetricsCache,
) -> Result<()> {
    let now = clock.now();
    let queries = GaugeQueries::at(now, config.stuck_call_after, config.session_rules_lookback);
    match store.session_gauges(&queries).await {
        Ok(gauges) => cache.set(gauges, now)?,
        Err(e) => {
            cache.failed()?;
            return Err(e);
        }
    }
    Ok(())
}

/// Refreshes the call metrics and the session gauges after every finished run and every
/// `metrics_refresh` until shutdown.
pub async fn keep_fresh(
    store: Arc<impl StoredMetrics + SessionStore>,
    config: Arc<Config>,
    clock: impl Clock,
    status: Arc<Status>,
    caches: (Arc<CallMetricsCache>, Arc<SessionMetricsCache>),
    mut shutdown: watch::Receiver<bool>,
) {
    let (cache, sessions) = caches;
    let mut runs_finished = status.subscribe_runs_finished();
    loop {
        // A read in flight at the signal is dropped: nothing waits on MongoDB after it.
        let refreshed = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            refreshed = refresh(&*store, &config, &clock, &cache) => refreshed,
        };
        if let Err(e) = refreshed {
            debug!(error = %Chain(&e), "call metrics not refreshed; serving the previous snapshot");
        }
        let refreshed = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            refreshed = refresh_sessions(&*store, &config, &clock, &sessions) => refreshed,
        };
        if let Err(e) = refreshed {
            debug!(error = %Chain(&e), "session gauges not refreshed; serving the previous values");
        }
        tokio::select! {
            _ = runs_finished.changed() => {}
            _ = tokio::time::sleep(config.metrics_refresh) => {}
            _ = shutdown.changed() => return,
        }
    }
}
