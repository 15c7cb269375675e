//! MongoDB through the official driver: the only module that talks to the server.
//!
//! Each stage states the storage it needs next to the code that uses it, in its own types:
//! [`RollupStore`], [`StoredMetrics`] and [`LateEventStore`] (`rollup::storage`),
//! [`RetentionStore`] and [`ArchiveStore`] (`archive::storage`), [`SessionStore`]
//! (`sessions::storage`). The daemon's own bookkeeping is stated here: [`MarkStore`] (watermarks
//! and late-event marks), [`LeaseStore`], [`ServerStore`] (ping, missing indexes). [`Store`] is
//! all of them, for the daemon's top level and the command line only. [`MongoStore`] implements
//! every part; tests use one in-memory, fault-injecting double that implements the same parts
//! (`tests/support/fake_store/`, one file per part). [`indexes`] is what `migrate` creates;
//! index management is an inherent part of [`MongoStore`], since nothing else needs it.
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
use chrono::{DateTime, Utc};

pub use crate::archive::storage::{ArchiveStore, RetentionStore};
use crate::error::Result;
pub use crate::rollup::storage::{LateEventStore, RollupStore, StoredMetrics};
pub use crate::sessions::storage::SessionStore;
use crate::window::Period;

/// The daemon's marks: per period, the watermark (how far windows are known complete) and the
/// late-event mark (where the next late-event scan starts).
pub trait MarkStore: Send + Sync {
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
}

/// The leader lease: one replica runs the periods at a time.
pub trait LeaseStore: Send + Sync {
    /// Takes or renews the leader lease for `holder` until `now + ttl`; `None` when another
    /// holder's lease has not expired. Renewing an unexpired lease keeps its epoch; taking it
    /// (from another holder, or again after it expired) adds one. The epoch fences writes: a
    /// run stamps it on its commands, and a leader that lost the lease writes nothing.
    fn try_lease(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<HeldLease>>> + Send;

    /// Whether `holder` still holds the lease at `epoch` (expired or not, as long as nobody
    /// took it since): what a run checks before it moves a mark.
    fn holds_lease(&self, holder: &str, epoch: i64) -> impl Future<Output = Result<bool>> + Send;

    /// Gives the lease up, if `holder` has it: it expires at once and says it was given up, so
    /// the next holder knows no write of this one is still in flight.
    fn release_lease(&self, holder: &str) -> impl Future<Output = Result<()>> + Send;
}

/// The server itself: whether it answers, and whether it has the indexes runs need.
pub trait ServerStore: Send + Sync {
    /// Whether the server answers at all.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// Which of `wanted` the database lacks (see [`indexes::is_absent`]).
    fn absent_indexes(
        &self,
        wanted: &[indexes::WantedIndex],
    ) -> impl Future<Output = Result<Vec<indexes::WantedIndex>>> + Send;
}

/// Everything a daemon wires together: each stage's storage and the daemon's own. Only the
/// daemon's top level and the command line name it; every other consumer names its part.
pub trait Store:
    RollupStore + LateEventStore + ArchiveStore + SessionStore + MarkStore + LeaseStore + ServerStore
{
}

impl<S> Store for S where
    S: RollupStore
        + LateEventStore
        + ArchiveStore
        + SessionStore
        + MarkStore
        + LeaseStore
        + ServerStore
{
}

pub use crate::rollup::commands::LEASE_ID;

/// The lease as its holder has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    pub epoch: i64,
    /// Taken from a holder that did not give it up (it expired): that holder may still have a
    /// write in flight (`daemon::tenure`).
    pub taken_over: bool,
}
