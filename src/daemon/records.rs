//! What the daemon records of its runs: how each ended, why one was skipped, what a late-event
//! scan found, what the archive holds. Kept by `status`, counted by `self_metrics`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::archive::{ArchiveState, EventSpan};
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
    pub duration: Duration,
    /// The error's label (`Error::metric_label`) when it failed.
    pub error: Option<&'static str>,
}

/// The late-event part of one run (`daemon::late_events`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LateReport {
    /// Late events found in the windows taken.
    pub events: u64,
    /// Windows refreshed because of them.
    pub windows: usize,
    /// Windows with late events before the retention horizon, not rebuilt.
    pub unrepairable: usize,
    /// How old the oldest late event found was (now minus its timestamp).
    pub oldest_age: Option<Duration>,
    /// How long the scan took; `None` when nothing was scanned.
    pub scan_duration: Option<Duration>,
    /// The write time of the new mark: where the next scan starts.
    pub mark: Option<DateTime<Utc>>,
}

/// Where the archive stands, as one read of the store shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveView {
    pub state: ArchiveState,
    /// The archive's events (count estimated).
    pub archived: EventSpan,
    /// From when audit log and archive together hold every event; `None`: from the first.
    pub complete_from: Option<DateTime<Utc>>,
    /// The audit log's oldest event: events still there when they reach the TTL are lost.
    pub audit_oldest: Option<DateTime<Utc>>,
    /// The audit log's retention (TTL or `audit_retention`).
    pub audit_retention: Option<Duration>,
}
