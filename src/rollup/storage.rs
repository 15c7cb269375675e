//! The storage a rollup needs, stated here and implemented by `store::MongoStore` (and the
//! tests' in-memory double): the stage names what it uses, the store depends on the stage.

use std::future::Future;

use bson::Document;
use chrono::{DateTime, Utc};

use super::late_scan::{LateScanQuery, LateScanResult};
use super::pipeline::Chunk;
use super::tick::{Finish, Keep, Kept};
use crate::error::Result;
use crate::window::Period;

/// Reading stored metrics documents back: what `verify`, the rollup's diffs and the
/// endpoint's call metrics read.
pub trait StoredMetrics: Send + Sync {
    /// The stored metrics documents of `period` at the given window starts.
    fn stored_windows(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
    ) -> impl Future<Output = Result<Vec<Document>>> + Send;
}

/// Writing and computing one chunk's metrics documents.
pub trait RollupStore: StoredMetrics {
    /// Writes one chunk's metrics documents: every window gets a document (keeping its
    /// `createdAt`), and every computed field is replaced.
    fn roll_up(&self, chunk: &Chunk) -> impl Future<Output = Result<()>> + Send;

    /// Computes one chunk's metrics documents and writes nothing. Windows without events and
    /// without a stored document may be absent.
    fn compute(&self, chunk: &Chunk) -> impl Future<Output = Result<Vec<Document>>> + Send;
}

/// Finding events written late, by their `_id`s.
pub trait LateEventStore: Send + Sync {
    /// Runs a late-event scan of the audit log (`rollup::late_scan`): what was written in an
    /// `_id` range, as 15-minute buckets of late timestamps, never the events.
    fn scan_late_events(
        &self,
        query: &LateScanQuery,
    ) -> impl Future<Output = Result<LateScanResult>> + Send;
}

/// Incremental runs (`rollup::tick`): keeping what was written, writing windows from it.
pub trait TickStore: Send + Sync {
    /// Keeps the settled slices in partials, checks (or merges) their users, counts and merges
    /// the users written since the newest read; returns the buckets the kept slices fall in
    /// and the reads still to check.
    fn keep(&self, keep: &Keep) -> impl Future<Output = Result<Kept>> + Send;

    /// Writes the windows from their partials, user sets and the recent writes (seeded first).
    fn finish_windows(&self, finish: &Finish) -> impl Future<Output = Result<()>> + Send;
}
