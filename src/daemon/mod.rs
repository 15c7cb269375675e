//! The daemon: decides when each period runs, and turns those ticks into runs, one period at a
//! time, safely.
//!
//! When: each period's cron schedule is evaluated in the configured time zone's real local time
//! (croner, DST-aware: after a change, local-time schedules keep their local time; in the
//! repeated hour of an autumn change a schedule fires once), against the injected clock, and the
//! daemon sleeps until the earliest fire time (at most [`MAX_SLEEP`], so a wall-clock step is
//! followed). This is the only place that decides when a period runs (see docs/design.md on why not
//! tokio-cron-scheduler). A period whose fire time passed while the process could not run (a
//! suspended VM) fires once; what it missed is made good by the watermark.
//!
//! Work starts at start: a replica that starts, or becomes leader, or sees MongoDB answer again
//! after it did not, runs every period at once (as soon as MongoDB answers and it leads), and a
//! run that leaves a backlog is followed at once by the next, until the period has caught up;
//! then the schedules take over. A tick starts a run only when MongoDB answers, this replica
//! holds the lease, and the period's previous run has finished; otherwise it is skipped and
//! counted. A run (`run`) plans its windows from the watermark (`run_plan`), rolls them up
//! (`rollup`), and advances the watermark only after that succeeded; then it refreshes the older
//! windows that events written since its previous run fall in (`late_events`). What the
//! database lacks for the runs is watched by `setup`. A failed run is logged, counted and
//! retried at the next tick; it never stops other periods or the process.
//!
//! Correctness comes from the watermark and the window arithmetic, never from when ticks fire.

pub mod archive_job;
pub mod incremental;
pub mod late_events;
pub mod lease;
pub mod reachability;
pub mod records;
pub mod run;
pub mod run_plan;
pub mod self_metrics;
pub mod setup;
pub mod status;
pub mod tenure;
pub mod watermarks;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::Result;
use crate::rollup::commands::Fence;
use crate::store::Store;
use crate::window::Period;
use lease::hold_lease;
use reachability::watch_mongodb;
use records::SkipReason;
use run::{run_period, RunEnd};
use status::Status;
use tenure::Tenure;

/// The longest the daemon sleeps before it looks at the clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

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
    /// lets running ones finish within `shutdown_grace`, and releases the lease. Besides the
    /// schedules, `extra_ticks` fires a period at once (tests; closing it changes nothing).
    pub async fn run(
        self,
        extra_ticks: mpsc::Receiver<Period>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut background = self.spawn_watchers(&shutdown);
        let (release_lease, mut lease) = self.spawn_lease();
        self.assume_start_watermarks();
        let tz = self.config.calendar.time_zone();
        let next_fire =
            |period: Period, after| self.config.period(period).schedule.next_after(tz, after);
        let now = self.clock.now();
        let mut due: [Option<DateTime<Utc>>; 4] = Period::ALL.map(|p| next_fire(p, now));
        let mut extra_ticks = Some(extra_ticks);
        let mut runs = JoinSet::new();
        // Periods to run as soon as MongoDB answers and this replica leads: all of them at
        // start, again on becoming leader or on MongoDB answering again, and one whose run left
        // a backlog.
        let mut now_due = [true; 4];
        let mut was_leader = false;
        let mut mongodb_was_up = false;

        loop {
            let (leader, mongodb_up) = (self.status.is_leader(), self.status.mongodb_up());
            if (leader && !was_leader) || (mongodb_up && !mongodb_was_up) {
                now_due = [true; 4];
            }
            (was_leader, mongodb_was_up) = (leader, mongodb_up);
            if leader && mongodb_up {
                for period in Period::ALL {
                    if now_due[period.index()]
                        && !self.running[period.index()].load(Ordering::Acquire)
                    {
                        now_due[period.index()] = false;
                        self.fire(period, &mut runs);
                    }
                }
            }
            let now = self.clock.now();
            let sleep = due
                .iter()
                .flatten()
                .min()
                .map_or(MAX_SLEEP, |t| (*t - now).to_std().unwrap_or_default())
                .min(MAX_SLEEP);
            let extra_tick = async {
                match extra_ticks.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                tick = extra_tick => match tick {
                    Some(period) => self.fire(period, &mut runs),
                    None => extra_ticks = None,
                },
                // Taking over, or MongoDB answering again, starts work at once (at the top).
                _ = self.status.leadership().gained() => {}
                _ = self.status.mongodb_back() => {}
                _ = tokio::time::sleep(sleep) => {
                    let now = self.clock.now();
                    for period in Period::ALL {
                        if due[period.index()].is_some_and(|t| t <= now) {
                            due[period.index()] = next_fire(period, now);
                            self.fire(period, &mut runs);
                        }
                    }
                }
                Some(finished) = runs.join_next(), if !runs.is_empty() => match finished {
                    // Catching up: the next part of the backlog at once.
                    Ok((period, RunEnd::Succeeded { backlog })) if backlog > 0 => {
                        now_due[period.index()] = true;
                    }
                    Ok(_) => {}
                    // A panicking run is a bug; its period's flag was cleared on unwind.
                    Err(e) => error!(error = %e, "a run panicked; the next tick retries its period"),
                },
            }
        }

        let abandoned = self.drain(runs).await;
        while background.join_next().await.is_some() {}
        // An abandoned run's `$merge` may still be running on the server.
        let now = self.clock.now();
        let settled_at = if abandoned {
            lease::settles(now, self.settle())
        } else {
            now
        };
        let _ = release_lease.send(Some(settled_at));
        if let Some(Err(e)) = lease.join_next().await {
            error!(error = %e, "the lease task failed; the lease expires on its own");
        }
        Ok(())
    }

    /// The daemon's watchers: MongoDB's reachability, the stored watermarks, the database's
    /// setup, and the archive's schedule.
    fn spawn_watchers(&self, shutdown: &watch::Receiver<bool>) -> JoinSet<()> {
        let mut background = JoinSet::new();
        background.spawn(watch_mongodb(
            self.store.clone(),
            self.config.mongodb_uri.clone(),
            self.status.clone(),
            shutdown.clone(),
        ));
        background.spawn(watermarks::follow_stored_watermarks(
            self.store.clone(),
            self.status.clone(),
            self.config.metrics_refresh,
            shutdown.clone(),
        ));
        background.spawn(setup::watch_setup(
            self.store.clone(),
            self.config.clone(),
            self.status.clone(),
            shutdown.clone(),
        ));
        background.spawn(archive_job::archive_on_schedule(
            self.store.clone(),
            self.config.clone(),
            self.clock.clone(),
            self.status.clone(),
            shutdown.clone(),
        ));
        background
    }

    /// The lease task, and the sender that makes it give the lease up.
    fn spawn_lease(&self) -> (watch::Sender<Option<DateTime<Utc>>>, JoinSet<()>) {
        // The lease is given up only after running runs have drained, so no standby starts the
        // same period while this replica's run is still writing it.
        // A JoinSet, not a detached task: if this future is dropped, the lease task dies with it
        // (as in a crash) instead of outliving the daemon.
        let (release_lease, lease_shutdown) = watch::channel(None);
        let mut lease = JoinSet::new();
        lease.spawn(hold_lease(
            self.store.clone(),
            self.clock.clone(),
            self.config.instance_id.clone(),
            (self.config.lease_ttl, self.settle()),
            self.status.leadership().clone(),
            lease_shutdown,
        ));

        (release_lease, lease)
    }

    /// Until a watermark is read or written, the data lag counts from where each period
    /// starts (`start_from`): a daemon that never succeeds shows a growing lag.
    fn assume_start_watermarks(&self) {
        for period in Period::ALL {
            let start = run_plan::initial_watermark(
                &self.config.calendar,
                period,
                self.clock.now(),
                self.config.start_from,
                None,
            );
            self.status.assume_watermark(period, start);
        }
    }

    /// How long a write in flight may take to land: the server stops it at `aggregate_timeout`.
    fn settle(&self) -> Duration {
        self.config.aggregate_timeout + tenure::MARGIN
    }

    /// Lets running runs finish within `shutdown_grace`, then aborts the rest; whether it did.
    async fn drain(&self, mut runs: JoinSet<(Period, RunEnd)>) -> bool {
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
        drained.is_err()
    }

    fn fire(&self, period: Period, runs: &mut JoinSet<(Period, RunEnd)>) {
        let lease = self.status.leadership().lease();
        let skip = match lease {
            _ if !self.status.mongodb_up() => Err(SkipReason::MongodbUnavailable),
            None => Err(SkipReason::Standby),
            Some(_) if self.running[period.index()].swap(true, Ordering::AcqRel) => {
                Err(SkipReason::Overlap)
            }
            Some(lease) => Ok(lease),
        };
        let lease = match skip {
            Ok(lease) => lease,
            Err(reason) => {
                self.status.skipped(period, reason);
                if reason == SkipReason::Overlap {
                    info!(period = %period, "tick skipped: the previous run is still going");
                }
                return;
            }
        };
        let running = RunningFlag(self.running[period.index()].clone());
        let (store, config, clock, status) = (
            self.store.clone(),
            self.config.clone(),
            self.clock.clone(),
            self.status.clone(),
        );
        let tenure = Tenure {
            fence: Fence {
                holder: self.config.instance_id.clone(),
                epoch: lease.epoch,
            },
            settled_at: lease.settled_at,
        };
        runs.spawn(async move {
            let _running = running;
            (
                period,
                run_period(&*store, &config, &clock, &status, period, &tenure).await,
            )
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
