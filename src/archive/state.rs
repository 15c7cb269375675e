//! The archive's record in the state collection, and the rules built on it. Pure: no I/O.
//!
//! A run first raises [`ArchiveState::reach`] to its cutoff, then moves batches. Before a batch
//! is copied it is recorded as [`Phase::Copying`], before it is deleted from the audit log as
//! [`Phase::Deleting`], and cleared after; each change bumps [`ArchiveState::seq`]. So a reader
//! knows, at any moment and even after a crash half-way, where each event is whole: the batch is
//! counted from the audit log while it is copied, from the archive while it is deleted. A reader
//! that sees `seq` change during its read reads again.

use std::time::Duration;

use bson::Bson;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};

/// The state collection's `archive` document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveState {
    /// Events timestamped before this may be in the archive: the latest cutoff any run began
    /// with. `None`: nothing was ever archived.
    pub reach: Option<DateTime<Utc>>,
    /// Changes whenever events start or stop moving.
    pub seq: i64,
    /// The batch of the run in progress, or of a run that stopped half-way.
    pub batch: Option<MovingBatch>,
    /// What the finished runs established.
    pub finished: Option<Finished>,
    /// The run holding the archive lock, and until when.
    pub holder: Option<(String, DateTime<Utc>)>,
    /// Archived events before this were dropped from the archive (`archive --drop-before`,
    /// after a dump to cheaper storage): windows before it can no longer be rebuilt.
    pub dropped_before: Option<DateTime<Utc>>,
}

/// Where a batch is in its move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Being copied into the archive: whole in the audit log.
    Copying,
    /// Being deleted from the audit log: whole in the archive.
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "copying" => Some(Phase::Copying),
            "deleting" => Some(Phase::Deleting),
            _ => None,
        }
    }
}

/// One batch of events on its way from the audit log to the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct MovingBatch {
    /// The events' `_id`s.
    pub ids: Vec<Bson>,
    pub phase: Phase,
}

/// What finished runs established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    /// Every event timestamped before this that existed at the last finished run is archived,
    /// but those no late-event scan had seen yet (they wait for a later run).
    pub archived_before: DateTime<Utc>,
    /// Audit log and archive together hold every event from here on; `None`: every event ever
    /// written (the audit log had no retention when archiving began).
    pub complete_from: Option<DateTime<Utc>>,
    /// When the last run finished.
    pub at: DateTime<Utc>,
    /// Events the last run moved.
    pub moved: u64,
}

/// The count and timestamp span of some events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSpan {
    pub count: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

/// How one chunk reads the archive: besides the audit log, leaving the moving batch out of the
/// source where it is not whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveRead {
    /// `_id`s the audit log's side leaves out (a batch being deleted).
    pub except_audit: Vec<Bson>,
    /// `_id`s the archive's side leaves out (a batch being copied).
    pub except_archive: Vec<Bson>,
}

impl ArchiveState {
    /// Whether a chunk starting at `from` must read the archive too (some of its events may
    /// have moved), and what each side leaves out.
    pub fn read_for(&self, from: DateTime<Utc>) -> Option<ArchiveRead> {
        if from >= self.reach? {
            return None;
        }
        Some(match &self.batch {
            None => ArchiveRead::default(),
            Some(MovingBatch {
                ids,
                phase: Phase::Copying,
            }) => ArchiveRead {
                except_audit: Vec::new(),
                except_archive: ids.clone(),
            },
            Some(MovingBatch {
                ids,
                phase: Phase::Deleting,
            }) => ArchiveRead {
                except_audit: ids.clone(),
                except_archive: Vec::new(),
            },
        })
    }

    /// From when audit log and archive together hold every event, given the audit log's
    /// horizon (`now - TTL`) and the archive's (`now - archive.retention`); `None`: from the
    /// first event. Without finished runs it is the audit log's horizon; it is also that when
    /// the archive stopped short of it (the TTL may have deleted what was never archived).
    pub fn complete_from(
        &self,
        audit_horizon: Option<DateTime<Utc>>,
        archive_horizon: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        match &self.finished {
            Some(f) if audit_horizon.is_none_or(|h| f.archived_before >= h) => f
                .complete_from
                .max(archive_horizon)
                .max(self.dropped_before),
            _ => audit_horizon,
        }
    }
}

/// The completeness point a run records, given the previous runs' and the audit log's horizon
/// when it started: unchanged when the archive already reached that horizon (nothing fell
/// between archive and TTL), else the horizon itself.
pub fn complete_from_after_run(
    previous: Option<&Finished>,
    audit_horizon: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (previous, audit_horizon) {
        (Some(f), Some(h)) if f.archived_before >= h => f.complete_from,
        (Some(f), None) => f.complete_from,
        (_, h) => h,
    }
}

/// A duration as the configuration would write it: whole days as `180d`.
pub fn in_days(d: Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// `archive.after` by default: a week less than the audit log's TTL, or half of it when the TTL
/// is two weeks or less.
pub fn default_after(ttl: Duration) -> Duration {
    const WEEK: Duration = Duration::from_secs(7 * 86_400);
    if ttl > 2 * WEEK {
        ttl - WEEK
    } else {
        ttl / 2
    }
}

/// The cutoff of a run at `now`: events timestamped before it move. `before` (`--before`)
/// replaces the configured age; either way it must leave the TTL time to spare.
pub fn cutoff(
    now: DateTime<Utc>,
    after: Option<Duration>,
    ttl: Option<Duration>,
    before: Option<DateTime<Utc>>,
) -> Result<DateTime<Utc>> {
    let after =
        match (after, ttl) {
            (Some(after), Some(ttl)) if after >= ttl => {
                return Err(Error::Usage(format!(
                "archive.after ({}) must be shorter than the audit log's TTL ({}): the TTL would \
                 delete events before they are archived",
                in_days(after),
                in_days(ttl)
            )))
            }
            (Some(after), _) => after,
            (None, Some(ttl)) => default_after(ttl),
            (None, None) => return Err(Error::Usage(
                "archive.after: the audit log has no TTL index on timestamp and audit_retention \
                 is not set, so there is no default; set archive.after"
                    .to_owned(),
            )),
        };
    if let Some(before) = before {
        if before > now {
            return Err(Error::Usage(format!(
                "--before ({}) is in the future",
                before.to_rfc3339()
            )));
        }
        return Ok(before);
    }
    let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    Ok(now
        .checked_sub_signed(after)
        .unwrap_or(DateTime::<Utc>::MIN_UTC))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn the_default_age_leaves_a_week_before_the_ttl() {
        assert_eq!(default_after(180 * DAY), 173 * DAY);
        assert_eq!(default_after(14 * DAY), 7 * DAY);
        assert_eq!(default_after(2 * DAY), DAY);
        let now = utc("2026-07-01T00:00:00Z");
        assert_eq!(
            cutoff(now, None, Some(180 * DAY), None).unwrap(),
            utc("2026-01-09T00:00:00Z")
        );
        assert_eq!(
            cutoff(now, Some(30 * DAY), Some(180 * DAY), None).unwrap(),
            utc("2026-06-01T00:00:00Z")
        );
        let before = utc("2026-02-01T00:00:00Z");
        assert_eq!(
            cutoff(now, None, Some(180 * DAY), Some(before)).unwrap(),
            before
        );
    }

    #[test]
    fn an_age_at_or_past_the_ttl_or_without_any_ttl_names_the_key() {
        let now = utc("2026-07-01T00:00:00Z");
        let err = cutoff(now, Some(180 * DAY), Some(180 * DAY), None).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().starts_with(
                "archive.after (180d) must be shorter than the audit log's TTL (180d)"
            ),
            "{err}"
        );
        let err = cutoff(now, None, None, None).unwrap_err();
        assert!(err.to_string().starts_with("archive.after:"), "{err}");
        assert_eq!(
            cutoff(now, Some(DAY), None, None).unwrap(),
            utc("2026-06-30T00:00:00Z")
        );
        let err = cutoff(
            now,
            None,
            Some(DAY * 180),
            Some(utc("2026-07-02T00:00:00Z")),
        );
        assert!(err.unwrap_err().to_string().contains("in the future"));
    }

    fn finished(archived_before: &str, complete_from: Option<&str>) -> Finished {
        Finished {
            archived_before: utc(archived_before),
            complete_from: complete_from.map(utc),
            at: utc("2026-07-01T00:00:00Z"),
            moved: 1,
        }
    }

    #[test]
    fn completeness_holds_while_each_run_reaches_the_next_ones_ttl_horizon() {
        // The first run: complete from the audit log's horizon when it started.
        let h1 = Some(utc("2026-01-01T00:00:00Z"));
        assert_eq!(complete_from_after_run(None, h1), h1);
        // A later run whose horizon the archive had reached: unchanged.
        let f = finished("2026-01-08T00:00:00Z", Some("2026-01-01T00:00:00Z"));
        assert_eq!(
            complete_from_after_run(Some(&f), Some(utc("2026-01-05T00:00:00Z"))),
            h1
        );
        // A run after the TTL passed the archive: the gap makes the horizon the new start.
        let late = Some(utc("2026-01-10T00:00:00Z"));
        assert_eq!(complete_from_after_run(Some(&f), late), late);
        // Without retention the audit log was complete: the archive is too.
        assert_eq!(complete_from_after_run(None, None), None);
    }

    #[test]
    fn the_point_of_completeness_now_follows_the_ttl_when_the_archive_fell_behind() {
        let state = ArchiveState {
            reach: Some(utc("2026-01-08T00:00:00Z")),
            finished: Some(finished(
                "2026-01-08T00:00:00Z",
                Some("2025-12-01T00:00:00Z"),
            )),
            ..ArchiveState::default()
        };
        let keeping_up = Some(utc("2026-01-05T00:00:00Z"));
        assert_eq!(
            state.complete_from(keeping_up, None),
            Some(utc("2025-12-01T00:00:00Z"))
        );
        // The archive's own retention thins it from the other end.
        let archive_horizon = Some(utc("2025-12-15T00:00:00Z"));
        assert_eq!(
            state.complete_from(keeping_up, archive_horizon),
            archive_horizon
        );
        // Dropped from the archive after a dump: not rebuildable any more.
        let dropped = ArchiveState {
            dropped_before: Some(utc("2025-12-20T00:00:00Z")),
            ..state.clone()
        };
        assert_eq!(
            dropped.complete_from(keeping_up, archive_horizon),
            Some(utc("2025-12-20T00:00:00Z"))
        );
        let fallen_behind = Some(utc("2026-01-09T00:00:00Z"));
        assert_eq!(state.complete_from(fallen_behind, None), fallen_behind);
        // Never archived: the audit log alone.
        assert_eq!(
            ArchiveState::default().complete_from(keeping_up, archive_horizon),
            keeping_up
        );
    }

    #[test]
    fn chunks_before_the_reach_read_the_archive_and_count_a_moving_batch_once() {
        let id = |n: i32| Bson::Int32(n);
        let mut state = ArchiveState {
            reach: Some(utc("2026-01-08T00:00:00Z")),
            ..ArchiveState::default()
        };
        assert_eq!(state.read_for(utc("2026-01-08T00:00:00Z")), None);
        assert_eq!(
            state.read_for(utc("2026-01-07T00:00:00Z")),
            Some(ArchiveRead::default())
        );
        state.batch = Some(MovingBatch {
            ids: vec![id(1), id(2)],
            phase: Phase::Copying,
        });
        let read = state.read_for(utc("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            (read.except_audit, read.except_archive),
            (vec![], vec![id(1), id(2)])
        );
        state.batch = Some(MovingBatch {
            ids: vec![id(1)],
            phase: Phase::Deleting,
        });
        let read = state.read_for(utc("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            (read.except_audit, read.except_archive),
            (vec![id(1)], vec![])
        );
        assert_eq!(
            ArchiveState::default().read_for(utc("2000-01-01T00:00:00Z")),
            None
        );
    }
}
