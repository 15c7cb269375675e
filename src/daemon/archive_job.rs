//! The archive on the daemon's own schedule (`archive.schedule`): the leader runs
//! `vcmetrics archive` when it fires, and every replica exports where the archive stands.
//!
//! A run starts only when MongoDB answers and this replica holds the lease; it stops between
//! two batches at shutdown or when leadership is lost (its batch stays recorded, the next run
//! finishes it). A failed run is logged and counted; the next fire time retries it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::records::ArchiveView;
use super::status::Status;
use super::MAX_SLEEP;
use crate::archive::retention::{audit_retention, horizon};
use crate::archive::state::cutoff;
use crate::archive::storage::ArchiveStore;
use crate::archive::{archive, ArchiveOutcome};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Chain, Result};

/// Runs the archive at each fire time of `archive.schedule` (none: returns at once), and reads
/// where the archive stands every `metrics_refresh`, until shutdown.
pub async fn archive_on_schedule<S: ArchiveStore, C: Clock>(
    store: Arc<S>,
    config: Arc<Config>,
    clock: C,
    status: Arc<Status>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(schedule) = config.archive.schedule.clone() else {
        return;
    };
    let tz = config.calendar.time_zone();
    let mut due = schedule.next_after(tz, clock.now());
    let mut next_refresh = clock.now();
    loop {
        let now = clock.now();
        if now >= next_refresh {
            // A read stuck on MongoDB must not hold shutdown.
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = refresh(&*store, &config, &status, now) => {}
            }
            next_refresh =
                now + chrono::Duration::from_std(config.metrics_refresh).unwrap_or_default();
        }
        if due.is_some_and(|t| t <= now) {
            due = schedule.next_after(tz, now);
            if !status.mongodb_up() {
                info!("archive not started: MongoDB did not answer the last ping");
            } else if !status.is_leader() {
                // Standby: the leader archives.
            } else {
                // At shutdown the run stops after its batch; a batch stuck on MongoDB is dropped
                // after `shutdown_grace` (it stays recorded, and the lock expires on its own).
                let mut signal = shutdown.clone();
                let grace = async {
                    let _ = signal.wait_for(|stop| *stop).await;
                    tokio::time::sleep(config.shutdown_grace).await;
                };
                tokio::select! {
                    _ = run_once(&*store, &config, &clock, &status, &shutdown) => {}
                    _ = grace => {
                        warn!("the archive run did not stop within shutdown_grace; dropped (its batch stays recorded)");
                        return;
                    }
                }
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    _ = refresh(&*store, &config, &status, clock.now()) => {}
                }
            }
        }
        let now = clock.now();
        let wake = [due, Some(next_refresh)].into_iter().flatten().min();
        let sleep = wake
            .map_or(MAX_SLEEP, |t| (t - now).to_std().unwrap_or_default())
            .min(MAX_SLEEP);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One scheduled run, recorded in the status (and so in the daemon's metrics).
async fn run_once<S: ArchiveStore, C: Clock>(
    store: &S,
    config: &Config,
    clock: &C,
    status: &Status,
    shutdown: &watch::Receiver<bool>,
) {
    let started = Instant::now();
    let stop = || *shutdown.borrow() || !status.is_leader();
    let result: Result<ArchiveOutcome> = async {
        let ttl = audit_retention(store, config).await?;
        let cutoff = cutoff(clock.now(), config.archive.after, ttl, None)?;
        archive(
            store,
            config,
            clock,
            &config.instance_id,
            cutoff,
            stop,
            |_| {},
        )
        .await
    }
    .await;
    let duration = started.elapsed();
    match &result {
        Ok(outcome) => info!(
            cutoff = %outcome.cutoff.to_rfc3339(), moved = outcome.moved, batches = outcome.batches,
            resumed = outcome.resumed, stopped = outcome.finished.is_none(),
            duration_ms = duration.as_millis() as u64, "archive run finished"
        ),
        Err(e) => warn!(
            error = %Chain(e), duration_ms = duration.as_millis() as u64,
            "archive run failed; retried at its next fire time"
        ),
    }
    status.record_archive_run(
        result.as_ref().map_err(|e| e.metric_label()),
        duration,
        clock.now(),
    );
}

/// Reads where the archive stands into the status; a failed read keeps the last values.
async fn refresh(store: &impl ArchiveStore, config: &Config, status: &Status, now: DateTime<Utc>) {
    match read_view(store, config, now).await {
        Ok(view) => status.set_archive_view(&view),
        Err(e) => {
            tracing::debug!(error = %Chain(&e), "archive state not read; its gauges keep their last values")
        }
    }
}

async fn read_view(
    store: &impl ArchiveStore,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<ArchiveView> {
    let ttl = audit_retention(store, config).await?;
    let state = store.archive_state().await?;
    Ok(ArchiveView {
        complete_from: state
            .complete_from(horizon(ttl, now), horizon(config.archive.retention, now)),
        state,
        archived: store.archive_span().await?,
        audit_oldest: store.oldest_audit_event().await?,
        audit_retention: ttl,
    })
}
