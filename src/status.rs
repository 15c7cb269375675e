//! What the daemon knows about itself: MongoDB reachability, leadership, runs and skipped ticks.
//!
//! Written by the daemon's tasks, read by health checks and tests. Every label set is bounded:
//! four periods, a few outcomes and reasons.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::window::Period;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunOutcome {
    Success,
    Failed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Failed => "failed",
        }
    }
}

/// Why a tick did not start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// The previous run of the period was still going.
    Overlap,
    /// Another replica holds the lease.
    Standby,
    /// MongoDB did not answer the last ping.
    MongodbUnavailable,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Standby => "standby",
            SkipReason::MongodbUnavailable => "mongodb_unavailable",
        }
    }
}

/// One finished run, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub period: Period,
    pub outcome: RunOutcome,
    pub windows: usize,
    pub first_window: Option<DateTime<Utc>>,
    pub duration: Duration,
    /// The error's label (`Error::metric_label`) when it failed.
    pub error: Option<&'static str>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSnapshot {
    pub mongodb_up: bool,
    pub leader: bool,
    pub runs: BTreeMap<(Period, RunOutcome), u64>,
    pub skipped: BTreeMap<(Period, SkipReason), u64>,
    /// Ticks the scheduler should have delivered but did not; the daemon fired them itself.
    pub late_ticks: BTreeMap<Period, u64>,
    pub windows_written: BTreeMap<Period, u64>,
    pub last_success: BTreeMap<Period, DateTime<Utc>>,
    pub watermark: BTreeMap<Period, DateTime<Utc>>,
    /// The most recent runs, newest last (bounded).
    pub recent_runs: Vec<RunRecord>,
}

#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusSnapshot>,
}

const RECENT_RUNS: usize = 64;

impl Status {
    fn with<T>(&self, f: impl FnOnce(&mut StatusSnapshot) -> T) -> T {
        // A panic while holding the lock cannot leave a counter half-written; keep serving.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        self.with(|s| s.clone())
    }

    pub fn mongodb_up(&self) -> bool {
        self.with(|s| s.mongodb_up)
    }

    pub fn set_mongodb_up(&self, up: bool) {
        self.with(|s| s.mongodb_up = up)
    }

    pub fn set_leader(&self, leader: bool) {
        self.with(|s| s.leader = leader)
    }

    pub fn skipped(&self, period: Period, reason: SkipReason) {
        self.with(|s| *s.skipped.entry((period, reason)).or_default() += 1)
    }

    pub fn late_tick(&self, period: Period) {
        self.with(|s| *s.late_ticks.entry(period).or_default() += 1)
    }

    pub fn set_watermark(&self, period: Period, watermark: DateTime<Utc>) {
        self.with(|s| {
            s.watermark.insert(period, watermark);
        })
    }

    pub fn record_run(&self, record: RunRecord, finished_at: DateTime<Utc>) {
        self.with(|s| {
            *s.runs.entry((record.period, record.outcome)).or_default() += 1;
            if record.outcome == RunOutcome::Success {
                *s.windows_written.entry(record.period).or_default() += record.windows as u64;
                s.last_success.insert(record.period, finished_at);
            }
            if s.recent_runs.len() == RECENT_RUNS {
                s.recent_runs.remove(0);
            }
            s.recent_runs.push(record);
        })
    }
}
