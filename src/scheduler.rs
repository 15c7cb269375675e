//! The daemon: turns ticks into runs, one period at a time, safely.
//!
//! Ticks arrive from tokio-cron-scheduler (see `cli::run`). Because that scheduler fixes a zone's
//! offset when a job is created and can stop firing under load, the daemon also evaluates every
//! schedule itself in the real time zone and fires a period whose tick is more than a grace
//! period late (counted as a late tick). A tick starts a run only when MongoDB answers, this
//! replica holds the lease, and the period's previous run has finished; otherwise it is skipped
//! and counted. A run plans its windows from the watermark (`refresh`), rolls them up in one
//! aggregate (`rollup`), and advances the watermark only after that succeeded. A failed run is
//! logged, counted and retried at the next tick; it never stops other periods or the process.
//!
//! Correctness comes from the watermark and the window arithmetic, never from when ticks fire.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Chain, Result};
use crate::lease::hold_lease;
use crate::reachability::watch_mongodb;
use crate::refresh::{initial_watermark, plan_run, respect_retention};
use crate::rollup::{self, retention_horizon, Batch, Mode, Summary};
use crate::status::{RunOutcome, RunRecord, SkipReason, Status};
use crate::store::Store;
use crate::window::Period;

/// How late a tick may be before the daemon fires the period itself.
pub const LATE_TICK_GRACE: Duration = Duration::from_secs(60);
/// How often the daemon checks for late ticks.
const LATE_TICK_CHECK: Duration = Duration::from_secs(5);

pub struct Daemon<S, C> {
    store: Arc<S>,
    config: Arc<Config>,
    clock: C,
    status: Arc<Status>,
    running: [Arc<AtomicBool>; 4],
}

impl<S: Store + 'static, C: Clock + Clone> Daemon<S, C> {
    pub fn new(store: Arc<S>, config: Arc<Config>, clock: C, status: Arc<Status>) -> Self {
        Daemon {
            store,
            config,
            clock,
            status,
            running: Default::default(),
        }
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped): then starts no new runs,
    /// lets running ones finish within `shutdown_grace`, and releases the lease.
    pub async fn run(
        self,
        ticks: mpsc::Receiver<Period>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut background = JoinSet::new();
        background.spawn(watch_mongodb(
            self.store.clone(),
            self.config.mongodb_uri.clone(),
            self.status.clone(),
            shutdown.clone(),
        ));
        // The lease is given up only after running runs have drained, so no standby starts the
        // same period while this replica's run is still writing it.
        // A JoinSet, not a detached task: if this future is dropped, the lease task dies with it
        // (as in a crash) instead of outliving the daemon.
        let (release_lease, lease_shutdown) = watch::channel(false);
        let mut lease = JoinSet::new();
        lease.spawn(hold_lease(
            self.store.clone(),
            self.clock.clone(),
            self.config.instance_id.clone(),
            self.config.lease_ttl,
            self.status.leadership().clone(),
            lease_shutdown,
        ));

        let tz = self.config.calendar.time_zone();
        let now = self.clock.now();
        let mut expected: [Option<DateTime<Utc>>; 4] =
            Period::ALL.map(|p| self.config.period(p).schedule.next_after(tz, now));
        let mut ticks = Some(ticks);
        let mut check = tokio::time::interval(LATE_TICK_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut runs = JoinSet::new();

        loop {
            let next_tick = async {
                match ticks.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                tick = next_tick => match tick {
                    Some(period) => self.fire(period, &mut expected, &mut runs),
                    // The scheduler is gone; late-tick checks keep the periods running.
                    None => ticks = None,
                },
                _ = check.tick() => {
                    let now = self.clock.now();
                    for period in Period::ALL {
                        let late = expected[period.index()]
                            .is_some_and(|due| now >= due + LATE_TICK_GRACE);
                        if late {
                            self.status.late_tick(period);
                            warn!(period = %period, "tick is late: firing the period without the scheduler");
                            self.fire(period, &mut expected, &mut runs);
                        }
                    }
                }
                Some(finished) = runs.join_next(), if !runs.is_empty() => {
                    if let Err(e) = finished {
                        // A panicking run is a bug; its period's flag was cleared on unwind.
                        error!(error = %e, "a run panicked; the next tick retries its period");
                    }
                }
            }
        }

        info!(
            running = runs.len(),
            grace_seconds = self.config.shutdown_grace.as_secs(),
            "shutting down: no new runs"
        );
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                aborted = runs.len(),
                "runs did not finish within the grace period; aborted (they are idempotent and are redone by the next start)"
            );
            runs.shutdown().await;
        }
        while background.join_next().await.is_some() {}
        let _ = release_lease.send(true);
        if let Some(Err(e)) = lease.join_next().await {
            error!(error = %e, "the lease task failed; the lease expires on its own");
        }
        Ok(())
    }

    fn fire(
        &self,
        period: Period,
        expected: &mut [Option<DateTime<Utc>>; 4],
        runs: &mut JoinSet<()>,
    ) {
        let now = self.clock.now();
        expected[period.index()] = self
            .config
            .period(period)
            .schedule
            .next_after(self.config.calendar.time_zone(), now);
        let skip = if !self.status.mongodb_up() {
            Some(SkipReason::MongodbUnavailable)
        } else if !self.status.is_leader() {
            Some(SkipReason::Standby)
        } else if self.running[period.index()].swap(true, Ordering::AcqRel) {
            Some(SkipReason::Overlap)
        } else {
            None
        };
        if let Some(reason) = skip {
            self.status.skipped(period, reason);
            if reason == SkipReason::Overlap {
                info!(period = %period, "tick skipped: the previous run is still going");
            }
            return;
        }
        let running = RunningFlag(self.running[period.index()].clone());
        let (store, config, clock, status) = (
            self.store.clone(),
            self.config.clone(),
            self.clock.clone(),
            self.status.clone(),
        );
        runs.spawn(async move {
            let _running = running;
            run_period(&*store, &config, &clock, &status, period).await;
        });
    }
}

/// Clears the period's running flag however the run ends (finished, failed, aborted).
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One run of one period: plan from the watermark, roll up, advance the watermark, record.
async fn run_period(
    store: &impl Store,
    config: &Config,
    clock: &impl Clock,
    status: &Status,
    period: Period,
) {
    let started = Instant::now();
    let now = clock.now();
    let mut windows_planned = Vec::new();
    let result: Result<(usize, usize, usize, usize)> = async {
        let horizon = retention_horizon(store, config, now).await?;
        let watermark = match store.watermark(period).await? {
            Some(stored) => {
                let w = respect_retention(&config.calendar, period, stored, horizon);
                if w > stored {
                    warn!(
                        period = %period, from = %stored.to_rfc3339(), to = %w.to_rfc3339(),
                        "windows never aggregated are past the audit log's retention: left without documents (recompute --force builds them from what is left)"
                    );
                }
                w
            }
            None => initial_watermark(&config.calendar, period, now, config.start_from, horizon),
        };
        let plan = plan_run(
            &config.calendar,
            period,
            config.period(period),
            now,
            watermark,
        );
        windows_planned.clone_from(&plan.windows);
        let batch = Batch {
            period,
            windows: &plan.windows,
            now,
            mode: Mode::Write,
            // One aggregate for the whole run.
            chunk_windows: plan.windows.len(),
        };
        let reports = rollup::process(store, config, batch, |_| {}).await?;
        if plan.watermark_after > watermark {
            store
                .advance_watermark(period, plan.watermark_after, now)
                .await?;
        }
        status.set_watermark(period, plan.watermark_after);
        let summary = Summary::of(&reports);
        Ok((
            summary.created,
            summary.changed,
            summary.unchanged,
            plan.backlog_after,
        ))
    }
    .await;

    let duration = started.elapsed();
    let from = windows_planned.first().map(|w| w.start.to_rfc3339());
    let to = windows_planned.last().map(|w| w.end.to_rfc3339());
    let from = from.as_deref().unwrap_or("-");
    let to = to.as_deref().unwrap_or("-");
    let record = |outcome, error| RunRecord {
        period,
        outcome,
        windows: windows_planned.len(),
        first_window: windows_planned.first().map(|w| w.start),
        duration,
        error,
    };
    match result {
        Ok((created, changed, unchanged, backlog)) => {
            info!(
                period = %period, from, to, windows = windows_planned.len(), created, changed,
                unchanged, backlog, duration_ms = duration.as_millis() as u64, outcome = "success",
                "run finished"
            );
            status.record_run(record(RunOutcome::Success, None), clock.now());
        }
        Err(e) => {
            warn!(
                period = %period, from, to, windows = windows_planned.len(),
                duration_ms = duration.as_millis() as u64, outcome = "failed",
                error = %Chain(&e), "run failed; retried at the next tick"
            );
            status.record_run(
                record(RunOutcome::Failed, Some(e.metric_label())),
                clock.now(),
            );
        }
    }
}
