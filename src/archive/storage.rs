//! The storage archival needs, and what decides how far back windows can be rebuilt; stated
//! here and implemented by `store::MongoStore` (and the tests' in-memory double).

use std::future::Future;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::Bson;
use chrono::{DateTime, Utc};

use super::state::{ArchiveState, EventSpan, Finished, MovingBatch};
use crate::error::Result;

/// How long the audit log keeps events, and the archive's record of what it holds: together
/// the retention horizon (`archive::retention`).
pub trait RetentionStore: Send + Sync {
    /// The `expireAfterSeconds` of the audit log's TTL index on `timestamp`, if there is one.
    fn audit_ttl(&self) -> impl Future<Output = Result<Option<Duration>>> + Send;
    /// The archive's record (`archive::state`); the default when nothing was ever archived.
    fn archive_state(&self) -> impl Future<Output = Result<ArchiveState>> + Send;
}

/// Moving audit events into the archive under its lock, and reading what each side holds.
pub trait ArchiveStore: RetentionStore {
    /// Takes (or renews) the archive lock for `holder` until `now + hold` and raises the
    /// archive's reach to `cutoff`. False when another holder's lock has not expired.
    fn begin_archive(
        &self,
        holder: &str,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Records the batch about to move (or none, after it moved), renewing the lock; fails when
    /// `holder` no longer holds it.
    fn record_archive_batch(
        &self,
        holder: &str,
        batch: Option<&MovingBatch>,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Records a finished run and gives the lock up.
    fn finish_archive(
        &self,
        holder: &str,
        finished: &Finished,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Gives the archive lock up, if `holder` has it (a run that failed or stopped).
    fn release_archive(&self, holder: &str) -> impl Future<Output = Result<()>> + Send;
    /// The lowest late-event mark of the periods that have one: every audit event written
    /// before it was looked at by every period's late-event scan. `None` when no period has one
    /// (no daemon ever scanned).
    fn lowest_late_mark(&self) -> impl Future<Output = Result<Option<ObjectId>>> + Send;
    /// The `_id`s of at most `limit` audit events timestamped before `cutoff`, oldest first;
    /// with `written_before`, only those whose `_id` is below it (written before it) or is not
    /// an ObjectId.
    fn archivable(
        &self,
        cutoff: DateTime<Utc>,
        written_before: Option<ObjectId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Bson>>> + Send;
    /// Copies these audit events into the archive, unchanged, server-side; events already
    /// there are left as they are.
    fn copy_to_archive(&self, ids: &[Bson]) -> impl Future<Output = Result<()>> + Send;
    /// Which of these `_id`s the archive holds.
    fn archived(&self, ids: &[Bson]) -> impl Future<Output = Result<Vec<Bson>>> + Send;
    /// Deletes these events from the audit log; how many it deleted.
    fn delete_audit_events(&self, ids: &[Bson]) -> impl Future<Output = Result<u64>> + Send;
    /// The audit events [`ArchiveStore::archivable`] selects with these arguments and no
    /// limit: how many, and their span.
    fn archivable_span(
        &self,
        cutoff: DateTime<Utc>,
        written_before: Option<ObjectId>,
    ) -> impl Future<Output = Result<EventSpan>> + Send;
    /// The archive's events: about how many (the collection's estimate), and their span.
    fn archive_span(&self) -> impl Future<Output = Result<EventSpan>> + Send;
    /// Records that archived events before `before` are dropped, then deletes them from the
    /// archive (after they were dumped elsewhere); how many it deleted.
    fn drop_archived_before(
        &self,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// The timestamp of the audit log's oldest event (one read along the timestamp index).
    fn oldest_audit_event(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;
}
