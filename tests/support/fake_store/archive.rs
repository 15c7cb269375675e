//! The archive and the retention horizon.

use std::time::Duration;

use bson::oid::ObjectId;
use bson::Bson;
use chrono::{DateTime, Utc};
use vcmetrics::archive::storage::{ArchiveStore, RetentionStore};
use vcmetrics::archive::{ArchiveState, EventSpan, Finished, MovingBatch};
use vcmetrics::error::{Error, Result};

use super::{span, FakeStore};

impl RetentionStore for FakeStore {
    async fn audit_ttl(&self) -> Result<Option<Duration>> {
        self.gate("listIndexes").await?;
        Ok(self.with(|s| s.audit_ttl))
    }

    async fn archive_state(&self) -> Result<ArchiveState> {
        self.gate("find (archive state)").await?;
        Ok(self.with(|s| s.archive_state.clone()))
    }
}

impl ArchiveStore for FakeStore {
    async fn begin_archive(
        &self,
        holder: &str,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<bool> {
        self.gate("update (archive lock)").await?;
        Ok(self.with(|s| {
            let a = &mut s.archive_state;
            if a.holder
                .as_ref()
                .is_some_and(|(h, until)| h != holder && *until > now)
            {
                return false;
            }
            a.holder = Some((
                holder.to_owned(),
                now + chrono::Duration::from_std(hold).unwrap(),
            ));
            a.reach = a.reach.max(Some(cutoff));
            a.seq += 1;
            s.archive_runs.push((holder.to_owned(), cutoff));
            true
        }))
    }

    async fn record_archive_batch(
        &self,
        holder: &str,
        batch: Option<&MovingBatch>,
        _: DateTime<Utc>,
        _: Duration,
    ) -> Result<()> {
        self.gate("update (archive batch)").await?;
        self.with(|s| {
            let a = &mut s.archive_state;
            if a.holder.as_ref().is_none_or(|(h, _)| h != holder) {
                return Err(Error::Busy("lost the archive lock".into()));
            }
            a.batch = batch.cloned();
            a.seq += 1;
            Ok(())
        })
    }

    async fn finish_archive(&self, holder: &str, finished: &Finished) -> Result<()> {
        self.gate("update (archive finished)").await?;
        self.with(|s| {
            let a = &mut s.archive_state;
            if a.holder.as_ref().is_some_and(|(h, _)| h == holder) {
                a.finished = Some(*finished);
                a.holder = None;
            }
        });
        Ok(())
    }

    async fn release_archive(&self, holder: &str) -> Result<()> {
        self.gate("update (archive lock)").await?;
        self.with(|s| {
            if s.archive_state
                .holder
                .as_ref()
                .is_some_and(|(h, _)| h == holder)
            {
                s.archive_state.holder = None;
            }
        });
        Ok(())
    }

    async fn lowest_late_mark(&self) -> Result<Option<ObjectId>> {
        self.gate("find (late-event marks)").await?;
        Ok(self.with(|s| s.late_marks.values().min().copied()))
    }

    /// The `_id`s are indexes into `calls`, oldest first.
    async fn archivable(
        &self,
        cutoff: DateTime<Utc>,
        written_before: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<Bson>> {
        self.gate("find (events to archive)").await?;
        Ok(self.with(|s| {
            let mut old: Vec<(DateTime<Utc>, usize)> = s
                .calls
                .iter()
                .enumerate()
                .filter(|(_, t)| s.archivable(**t, cutoff, written_before))
                .map(|(i, t)| (*t, i))
                .collect();
            old.sort();
            old.into_iter()
                .take(limit)
                .map(|(_, i)| Bson::Int64(i as i64))
                .collect()
        }))
    }

    async fn copy_to_archive(&self, ids: &[Bson]) -> Result<()> {
        self.gate("aggregate (copy to archive)").await?;
        let delay = self.with(|s| s.archive_copy_time);
        tokio::time::sleep(delay).await;
        self.with(|s| {
            for id in ids {
                let i = id.as_i64().unwrap();
                if !s.copied.contains(&i) {
                    s.copied.push(i);
                }
            }
        });
        Ok(())
    }

    async fn archived(&self, ids: &[Bson]) -> Result<Vec<Bson>> {
        self.gate("find (archived events)").await?;
        Ok(self.with(|s| {
            ids.iter()
                .filter(|id| s.copied.contains(&id.as_i64().unwrap()))
                .cloned()
                .collect()
        }))
    }

    /// Moves the copied calls into `archive` (so no call is ever in both).
    async fn delete_audit_events(&self, ids: &[Bson]) -> Result<u64> {
        self.gate("delete (archived events)").await?;
        self.injected_failure("delete (archived events)", |s| {
            &mut s.failing_archive_deletes
        })?;
        Ok(self.with(|s| {
            let mut gone: Vec<usize> = ids.iter().map(|id| id.as_i64().unwrap() as usize).collect();
            gone.sort_unstable_by(|a, b| b.cmp(a));
            for i in &gone {
                let t = s.calls.remove(*i);
                s.archive_write(t);
                s.archive.push(t);
            }
            s.copied.clear();
            gone.len() as u64
        }))
    }

    async fn archivable_span(
        &self,
        cutoff: DateTime<Utc>,
        written_before: Option<ObjectId>,
    ) -> Result<EventSpan> {
        self.gate("count (events to archive)").await?;
        Ok(self.with(|s| {
            span(
                s.calls
                    .iter()
                    .filter(|t| s.archivable(**t, cutoff, written_before)),
            )
        }))
    }

    async fn archive_span(&self) -> Result<EventSpan> {
        self.gate("count (archive)").await?;
        Ok(self.with(|s| span(s.archive.iter())))
    }

    async fn drop_archived_before(&self, before: DateTime<Utc>) -> Result<u64> {
        self.gate("delete (dropped archive events)").await?;
        Ok(self.with(|s| {
            s.archive_state.dropped_before = s.archive_state.dropped_before.max(Some(before));
            let kept = s.archive.len();
            s.archive.retain(|t| *t >= before);
            (kept - s.archive.len()) as u64
        }))
    }

    async fn oldest_audit_event(&self) -> Result<Option<DateTime<Utc>>> {
        self.gate("find (oldest audit event)").await?;
        Ok(self.with(|s| s.calls.iter().min().copied()))
    }
}
