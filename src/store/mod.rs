//! MongoDB behind one trait: the only module that talks to the server.
//!
//! [`Store`] is what a rollup needs (roll a chunk of windows up, compute it without writing, read
//! documents back, learn the audit log's TTL, find late events, keep watermarks, late-event
//! marks and the lease); [`MongoStore`]
//! implements it with the official driver; tests use one in-memory, fault-injecting double
//! (`tests/support/fake_store.rs`). [`indexes`] is what `migrate` creates; index management is an
//! inherent part of [`MongoStore`], since nothing else needs it.
//!
//! Raw audit events never come back through here: the rollup's aggregates end in `$merge`, and a
//! preview returns at most one document per window.

pub mod indexes;
mod mongo;
mod mongo_archive;
mod mongo_sessions;
pub mod privileges;

pub use mongo::{ExistingIndex, MongoStore};

use std::future::Future;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{Bson, Document};
use chrono::{DateTime, Utc};

use crate::archive::{ArchiveState, EventSpan, Finished, MovingBatch};
use crate::error::Result;
use crate::rollup::late_scan::{LateScanQuery, LateScanResult};
use crate::rollup::pipeline::Chunk;
use crate::sessions::gauges::{GaugeQueries, SessionGauges};
use crate::window::Period;

/// What the rollup needs from storage.
pub trait Store: Send + Sync {
    /// Writes one chunk's metrics documents: every window gets a document (keeping its
    /// `createdAt`), and every computed field is replaced.
    fn roll_up(&self, chunk: &Chunk) -> impl Future<Output = Result<()>> + Send;

    /// Computes one chunk's metrics documents and writes nothing. Windows without events and
    /// without a stored document may be absent.
    fn compute(&self, chunk: &Chunk) -> impl Future<Output = Result<Vec<Document>>> + Send;

    /// The stored metrics documents of `period` at the given window starts.
    fn stored_windows(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
    ) -> impl Future<Output = Result<Vec<Document>>> + Send;

    /// The `expireAfterSeconds` of the audit log's TTL index on `timestamp`, if there is one.
    fn audit_ttl(&self) -> impl Future<Output = Result<Option<Duration>>> + Send;

    /// Which of `wanted` the database lacks (see [`indexes::is_absent`]).
    fn absent_indexes(
        &self,
        wanted: &[indexes::WantedIndex],
    ) -> impl Future<Output = Result<Vec<indexes::WantedIndex>>> + Send;

    /// Whether the server answers at all.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// The end of the newest closed window of `period` known complete, if one was recorded.
    fn watermark(
        &self,
        period: Period,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;

    /// Moves the watermark forward to `to` (never backwards), recording `now` as the update time.
    fn advance_watermark(
        &self,
        period: Period,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Runs a late-event scan of the audit log (`rollup::late_scan`): what was written in an
    /// `_id` range, as 15-minute buckets of late timestamps, never the events.
    fn scan_late_events(
        &self,
        query: &LateScanQuery,
    ) -> impl Future<Output = Result<LateScanResult>> + Send;

    /// Where `period`'s next late-event scan starts (an `_id`, inclusive); `None` before the
    /// period's first run.
    fn late_mark(&self, period: Period) -> impl Future<Output = Result<Option<ObjectId>>> + Send;

    /// Moves `period`'s late-event mark forward to `to` (never backwards).
    fn advance_late_mark(
        &self,
        period: Period,
        to: ObjectId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The live session gauges: the counts of `sessions::gauges`' queries.
    fn session_gauges(
        &self,
        queries: &GaugeQueries,
    ) -> impl Future<Output = Result<SessionGauges>> + Send;

    /// Takes or renews the leader lease for `holder` until `now + ttl`. False when another
    /// holder's lease has not expired.
    fn try_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Gives the lease up, if `holder` has it.
    fn release_lease(&self, holder: &str) -> impl Future<Output = Result<()>> + Send;

    /// The archive's record (`archive::state`); the default when nothing was ever archived.
    fn archive_state(&self) -> impl Future<Output = Result<ArchiveState>> + Send;

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

    /// The `_id`s of at most `limit` audit events timestamped before `cutoff`, oldest first.
    fn archivable(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Bson>>> + Send;

    /// Copies these audit events into the archive, unchanged, server-side; events already
    /// there are left as they are.
    fn copy_to_archive(&self, ids: &[Bson]) -> impl Future<Output = Result<()>> + Send;

    /// Which of these `_id`s the archive holds.
    fn archived(&self, ids: &[Bson]) -> impl Future<Output = Result<Vec<Bson>>> + Send;

    /// Deletes these events from the audit log; how many it deleted.
    fn delete_audit_events(&self, ids: &[Bson]) -> impl Future<Output = Result<u64>> + Send;

    /// The audit events timestamped before `cutoff`: how many, and their span.
    fn archivable_span(
        &self,
        cutoff: DateTime<Utc>,
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

/// The `_id` of the lease document in the state collection.
pub const LEASE_ID: &str = "leader";
