//! One archive run: every audit event timestamped before the cutoff goes into the archive, in
//! batches of `archive.batch_size`.
//!
//! A batch is recorded, copied (server-side, keeping what is already there), checked (which of
//! its `_id`s the archive holds), recorded again, and only the confirmed events are deleted from
//! the audit log. Killed at any point, a run loses nothing (nothing is deleted before it is in
//! the archive) and duplicates nothing (the archive keys on `_id`; the next run finishes the
//! recorded batch first, and readers count it once meanwhile, see `archive::state`).

use std::time::Duration;

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use tracing::info;

use super::retention::{audit_retention, horizon};
use super::state::{complete_from_after_run, Finished, MovingBatch, Phase};
use super::storage::ArchiveStore;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Error, Result};

/// How long a run holds the archive lock without renewing it; every batch renews it (0.1 to 3 s
/// on DocumentDB at 1,000 events). A killed run keeps the next one out this long.
pub const ARCHIVE_HOLD: Duration = Duration::from_secs(120);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveOutcome {
    pub cutoff: DateTime<Utc>,
    /// Events deleted from the audit log after they were confirmed in the archive.
    pub moved: u64,
    pub batches: u64,
    /// A batch a previous run left half-way was finished first.
    pub resumed: bool,
    /// What the run recorded; `None` when it was stopped (shutdown) before the cutoff.
    pub finished: Option<Finished>,
}

/// The write time an event must be below to move (see [`archive`]): the lowest late-event
/// mark, or `None` — nothing waits — with `late_events.enabled = false` or before any
/// late-event scan.
pub async fn written_before(
    store: &impl ArchiveStore,
    config: &Config,
) -> Result<Option<ObjectId>> {
    if config.late_events.enabled {
        store.lowest_late_mark().await
    } else {
        Ok(None)
    }
}

/// Moves the audit events timestamped before `cutoff` into the archive, as `holder`.
/// `stop` is asked between batches (a shutdown); `progress` gets the events moved so far.
///
/// Only events every period's late-event scan has seen move (`_id` below every late-event mark,
/// read as the run starts): the scans read the audit log, so an event written late into an old
/// window and moved before they saw it would never have its windows refreshed. Such an event
/// waits in the audit log for a later run. With `late_events.enabled = false` nothing waits.
pub async fn archive(
    store: &impl ArchiveStore,
    config: &Config,
    clock: &impl Clock,
    holder: &str,
    cutoff: DateTime<Utc>,
    stop: impl Fn() -> bool,
    mut progress: impl FnMut(u64),
) -> Result<ArchiveOutcome> {
    let started = clock.now();
    if let Some(retention) = config.archive.retention {
        let kept_from = horizon(Some(retention), started);
        if kept_from.is_some_and(|k| k >= cutoff) {
            return Err(Error::Usage(format!(
                "archive.retention ({}) must be longer than the age of the events archived \
                 (archive.after or --before): the archive would delete them as they arrive",
                super::state::in_days(retention)
            )));
        }
    }
    let ttl = audit_retention(store, config).await?;
    // The audit log is complete from here as the run starts: what the run's record builds on.
    let audit_horizon = horizon(ttl, started);
    if !store
        .begin_archive(holder, cutoff, started, ARCHIVE_HOLD)
        .await?
    {
        let held = store.archive_state().await?.holder;
        let (who, until) = held.map_or_else(
            || ("another run".to_owned(), String::from("it stops")),
            |(who, until)| (who, until.to_rfc3339()),
        );
        return Err(Error::Busy(format!(
            "{who} holds the archive lock until {until}; one archive run at a time (a run that \
             was killed keeps it until then; run again after that)"
        )));
    }
    // Read under the lock: the batch a previous run left, and what the finished runs recorded.
    let previous = store.archive_state().await?;
    let seen_before = written_before(store, config).await?;
    let moved = move_batches(
        store,
        config,
        clock,
        holder,
        Selection {
            cutoff,
            seen_before,
        },
        &previous,
        &stop,
        &mut progress,
    )
    .await;
    let outcome = match moved {
        Ok((moved, batches, stopped)) => {
            let finished = (!stopped).then(|| Finished {
                archived_before: previous
                    .finished
                    .map_or(cutoff, |f| f.archived_before.max(cutoff)),
                complete_from: complete_from_after_run(previous.finished.as_ref(), audit_horizon),
                at: clock.now(),
                moved,
            });
            Ok(ArchiveOutcome {
                cutoff,
                moved,
                batches,
                resumed: previous.batch.is_some(),
                finished,
            })
        }
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(ArchiveOutcome {
            finished: Some(finished),
            ..
        }) => store.finish_archive(holder, finished).await?,
        // A failed or stopped run leaves its batch recorded (readers count it once) and gives
        // the lock up for the next run, which finishes the batch first.
        _ => {
            if let Err(e) = store.release_archive(holder).await {
                tracing::warn!(error = %crate::error::Chain(&e), "could not give the archive lock up; it expires on its own");
            }
        }
    }
    outcome
}

/// The events a run moves: timestamped before `cutoff` and, when some period has a late-event
/// mark, written before the lowest one.
#[derive(Debug, Clone, Copy)]
struct Selection {
    cutoff: DateTime<Utc>,
    seen_before: Option<ObjectId>,
}

/// The batches of one run: `(moved, batches, stopped)`.
#[allow(clippy::too_many_arguments)]
async fn move_batches(
    store: &impl ArchiveStore,
    config: &Config,
    clock: &impl Clock,
    holder: &str,
    selection: Selection,
    previous: &super::ArchiveState,
    stop: &impl Fn() -> bool,
    progress: &mut impl FnMut(u64),
) -> Result<(u64, u64, bool)> {
    let (mut moved, mut batches) = (0, 0);
    // A run that stopped half-way left its batch recorded: it goes first.
    let mut left_over = previous.batch.as_ref().map(|b| b.ids.clone());
    if let Some(ids) = &left_over {
        info!(
            events = ids.len(),
            "finishing the batch a previous archive run left half-way"
        );
    }
    loop {
        if stop() {
            return Ok((moved, batches, true));
        }
        let resumed = left_over.is_some();
        let started = std::time::Instant::now();
        let ids = match left_over.take() {
            Some(ids) => ids,
            None => {
                store
                    .archivable(
                        selection.cutoff,
                        selection.seen_before,
                        config.archive.batch_size,
                    )
                    .await?
            }
        };
        if ids.is_empty() {
            return Ok((moved, batches, false));
        }
        let copying = MovingBatch {
            ids,
            phase: Phase::Copying,
        };
        store
            .record_archive_batch(holder, Some(&copying), clock.now(), ARCHIVE_HOLD)
            .await?;
        let recorded = started.elapsed();
        store.copy_to_archive(&copying.ids).await?;
        let copied = started.elapsed();
        let deleting = MovingBatch {
            ids: store.archived(&copying.ids).await?,
            phase: Phase::Deleting,
        };
        let confirmed = started.elapsed();
        // Without this, the same events would come back as the next batch forever.
        if deleting.ids.is_empty() && !resumed {
            return Err(Error::MongoWrite {
                operation: "aggregate (copy to archive)",
                message: format!(
                    "after copying a batch of {} events the archive holds none of them; nothing was deleted",
                    copying.ids.len()
                ),
            });
        }
        store
            .record_archive_batch(holder, Some(&deleting), clock.now(), ARCHIVE_HOLD)
            .await?;
        let deleted = if deleting.ids.is_empty() {
            0
        } else {
            store.delete_audit_events(&deleting.ids).await?
        };
        store
            .record_archive_batch(holder, None, clock.now(), ARCHIVE_HOLD)
            .await?;
        tracing::debug!(
            events = copying.ids.len(),
            deleted,
            selected_and_recorded_ms = recorded.as_millis() as u64,
            copied_ms = copied.as_millis() as u64,
            confirmed_ms = confirmed.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "archive batch moved"
        );
        moved += deleted;
        batches += 1;
        progress(moved);
    }
}
