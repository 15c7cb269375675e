//! What the daemon knows about itself: whether MongoDB answers, whether this replica leads, each
//! period's watermark, and that runs finish.
//!
//! Written by the daemon's tasks at the same call sites that log, read by the exporter (health,
//! `/metrics` through [`SelfMetrics`]) and the call-metrics refresher (which re-reads after each
//! run).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::Registry;
use tokio::sync::watch;

use crate::archive::ArchiveOutcome;
use crate::daemon::lease::Leadership;
use crate::daemon::records::{ArchiveView, LateReport, RunRecord, SkipReason};
use crate::daemon::self_metrics::SelfMetrics;
use crate::window::Period;

/// A period's watermark as this replica knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watermark {
    /// Where the period starts when nothing is recorded (`start_from`): the data lag is
    /// measured from here until a stored or written watermark is known, so a daemon that never
    /// succeeds still shows a growing lag.
    Assumed(DateTime<Utc>),
    /// Read from the state collection or written by a run.
    Recorded(DateTime<Utc>),
}

impl Watermark {
    fn at(self) -> DateTime<Utc> {
        match self {
            Watermark::Assumed(t) | Watermark::Recorded(t) => t,
        }
    }
}

#[derive(Debug)]
pub struct Status {
    metrics: SelfMetrics,
    mongodb_up: AtomicBool,
    watermarks: Mutex<BTreeMap<Period, Watermark>>,
    /// Counts finished runs; a watch, so a run that finishes while nobody waits is not lost.
    runs_finished: watch::Sender<u64>,
    /// Read live: leadership ends when its validity runs out, even while a renewal hangs.
    leadership: Leadership,
    /// What the database lacks of the indexes runs need (`daemon::setup`); empty when set up or
    /// not yet checked.
    missing_indexes: Mutex<Vec<String>>,
    /// Asks the setup check to look again now (a run failed for want of an index).
    setup_suspect: tokio::sync::Notify,
    /// Signalled when MongoDB answers after it did not (or for the first time).
    mongodb_back: tokio::sync::Notify,
}

impl Status {
    /// Fails only on a duplicate or inconsistent metric definition, a bug every test shows.
    pub fn new() -> prometheus::Result<Status> {
        Ok(Status {
            metrics: SelfMetrics::new()?,
            mongodb_up: AtomicBool::new(false),
            watermarks: Mutex::new(BTreeMap::new()),
            runs_finished: watch::Sender::new(0),
            leadership: Leadership::default(),
            missing_indexes: Mutex::new(Vec::new()),
            setup_suspect: tokio::sync::Notify::new(),
            mongodb_back: tokio::sync::Notify::new(),
        })
    }

    /// The registry of the daemon's own metrics.
    pub fn registry(&self) -> &Registry {
        self.metrics.registry()
    }

    /// Every family the daemon declares (see [`SelfMetrics::declared_families`]).
    pub fn declared_families(&self) -> Vec<String> {
        self.metrics.declared_families()
    }

    /// The lease state this replica's lease task maintains and the scheduler obeys.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    pub fn mongodb_up(&self) -> bool {
        self.mongodb_up.load(Ordering::Acquire)
    }

    pub fn set_mongodb_up(&self, up: bool) {
        self.metrics.set_mongodb_up(up);
        let was_up = self.mongodb_up.swap(up, Ordering::AcqRel);
        if up && !was_up {
            self.mongodb_back.notify_one();
        }
    }

    /// Resolves when MongoDB answers after it did not (at once if it did since the last call).
    pub async fn mongodb_back(&self) {
        self.mongodb_back.notified().await;
    }

    /// The indexes runs need that the database lacks, as the last setup check found them.
    pub fn missing_indexes(&self) -> Vec<String> {
        self.missing_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records the setup check's finding; true when it differs from the previous one.
    pub fn set_missing_indexes(&self, missing: Vec<String>) -> bool {
        self.metrics.set_missing_indexes(missing.len());
        let mut known = self
            .missing_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let changed = *known != missing;
        *known = missing;
        changed
    }

    /// A run failed for want of an index: the setup check looks again at once.
    pub fn setup_suspect(&self) {
        self.setup_suspect.notify_one();
    }

    /// Resolves at the next [`Status::setup_suspect`] (or at once if one is pending).
    pub async fn setup_suspected(&self) {
        self.setup_suspect.notified().await;
    }

    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    pub fn skipped(&self, period: Period, reason: SkipReason) {
        self.metrics.skipped(period, reason);
    }

    /// The watermark recorded for `period`, if any.
    pub fn watermark(&self, period: Period) -> Option<DateTime<Utc>> {
        match self.watermarks().get(&period) {
            Some(Watermark::Recorded(t)) => Some(*t),
            _ => None,
        }
    }

    fn watermarks(&self) -> std::sync::MutexGuard<'_, BTreeMap<Period, Watermark>> {
        // A panic while holding the lock cannot leave a map half-written; keep serving.
        self.watermarks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where `period`'s data starts while no watermark is recorded: the data lag counts from
    /// here. A recorded watermark always replaces it, older or not.
    pub fn assume_watermark(&self, period: Period, start: DateTime<Utc>) {
        self.watermarks()
            .entry(period)
            .or_insert(Watermark::Assumed(start));
    }

    /// Records a period's watermark; never moves a recorded one backwards (a stored value read
    /// after a run may be older than what the run just wrote).
    pub fn set_watermark(&self, period: Period, watermark: DateTime<Utc>) {
        let recorded = {
            let mut watermarks = self.watermarks();
            let entry = watermarks
                .entry(period)
                .or_insert(Watermark::Recorded(watermark));
            let newest = match *entry {
                Watermark::Recorded(known) => known.max(watermark),
                Watermark::Assumed(_) => watermark,
            };
            *entry = Watermark::Recorded(newest);
            newest
        };
        self.metrics.set_watermark(period, recorded);
    }

    /// Brings the gauges that depend on the time up to date. Called when a scrape encodes the
    /// daemon's metrics.
    pub fn update_gauges(&self, now: DateTime<Utc>) {
        let watermarks: Vec<_> = self
            .watermarks()
            .iter()
            .map(|(period, w)| (*period, w.at()))
            .collect();
        self.metrics
            .update_gauges(now, self.is_leader(), watermarks);
    }

    /// Changes whenever a run of any period finished (and its metrics are in place).
    pub fn subscribe_runs_finished(&self) -> watch::Receiver<u64> {
        self.runs_finished.subscribe()
    }

    /// After a run's late-event part (before its [`Status::record_run`]).
    pub fn record_late(&self, period: Period, report: &LateReport) {
        self.metrics.late_events_scanned(period, report);
    }

    /// After a scheduled archive run: its outcome, or the error's label.
    pub fn record_archive_run(
        &self,
        result: std::result::Result<&ArchiveOutcome, &'static str>,
        duration: Duration,
        finished_at: DateTime<Utc>,
    ) {
        self.metrics.archive_run(result, duration, finished_at);
    }

    pub fn set_archive_view(&self, view: &ArchiveView) {
        self.metrics.set_archive_view(view);
    }

    pub fn record_run(&self, record: RunRecord, finished_at: DateTime<Utc>) {
        self.metrics.run_finished(&record, finished_at);
        self.runs_finished.send_modify(|n| *n += 1);
    }
}
