//! MongoDB through the official driver: the only module that talks to the server.
//!
//! Each stage states the storage it needs next to the code that uses it, in its own types:
//! [`RollupStore`], [`StoredMetrics`], [`LateEventStore`] and [`TickStore`] (`rollup::storage`),
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
pub use crate::rollup::storage::{LateEventStore, RollupStore, StoredMetrics, TickStore};
use crate::rollup::tick::TickMark;
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
    /// Where `period`'s incremental runs stand; `None` before the first.
    fn tick_mark(&self, period: Period) -> impl Future<Output = Result<Option<TickMark>>> + Send;
    /// Moves `period`'s incremental mark: `since` forward only, `origin` back only; its reads
    /// of users still to check are replaced.
    fn advance_tick_mark(
        &self,
        period: Period,
        mark: &TickMark,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Records that windows of `period` (by start) are written while an older leader's write
    /// may still land, and must be written again from `until` on (`daemon::tenure`). Kept in
    /// the database, so a leader that dies before `until` leaves the rewrite to the next one.
    fn note_rewrite(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The windows of `period` waiting to be written again, and from when: the latest `until`
    /// noted with them. `None` when none wait.
    fn pending_rewrite(
        &self,
        period: Period,
    ) -> impl Future<Output = Result<Option<PendingRewrite>>> + Send;
    /// The windows were written again: forgets them (not those noted since).
    fn clear_rewrite(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Windows of one period to be written again once no older write can land on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRewrite {
    /// When the last older write can have landed.
    pub until: DateTime<Utc>,
    /// The windows' starts, in order.
    pub starts: Vec<DateTime<Utc>>,
}

/// The leader lease: one replica runs the periods at a time.
pub trait LeaseStore: Send + Sync {
    /// Takes or renews the leader lease for `holder` until `now + ttl`; `None` when another
    /// holder's lease has not expired. Renewing an unexpired lease keeps its epoch; taking it
    /// (from another holder, or again after it expired) adds one. The epoch fences writes: a
    /// run stamps it on its commands, and a leader that lost the lease writes nothing.
    ///
    /// Taking a lease that expired without being given up moves its `settledAt` to at least
    /// `now + settle`: until then a write of the earlier holder may still land.
    ///
    /// Only the same incarnation renews: a restarted process with the same `instance_id` takes
    /// the lease over like any other replica (a write of its predecessor may still land).
    fn try_lease(
        &self,
        holder: &LeaseHolder,
        now: DateTime<Utc>,
        ttl: Duration,
        settle: Duration,
    ) -> impl Future<Output = Result<Option<HeldLease>>> + Send;

    /// Whether `holder` still holds the lease at `epoch` (expired or not, as long as nobody
    /// took it since): what a run checks before it moves a mark.
    fn holds_lease(&self, holder: &str, epoch: i64) -> impl Future<Output = Result<bool>> + Send;

    /// Gives the lease up, if `holder` has it: it expires at once and says it was given up.
    /// `settled_at` is when this holder's last write can have landed (now, unless it abandoned
    /// runs); the lease's `settledAt` moves to at least that.
    fn release_lease(
        &self,
        holder: &LeaseHolder,
        settled_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
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
    RollupStore
    + LateEventStore
    + TickStore
    + ArchiveStore
    + SessionStore
    + MarkStore
    + LeaseStore
    + ServerStore
{
}

impl<S> Store for S where
    S: RollupStore
        + LateEventStore
        + TickStore
        + ArchiveStore
        + SessionStore
        + MarkStore
        + LeaseStore
        + ServerStore
{
}

pub use crate::rollup::commands::LEASE_ID;

/// Who takes and renews the lease: the replica's `instance_id`, and this process's
/// incarnation of it (a restart under the same `instance_id` is another incarnation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub name: String,
    pub incarnation: String,
}

impl LeaseHolder {
    /// `name` in a new incarnation, unique to this process.
    pub fn new(name: &str) -> Self {
        LeaseHolder {
            name: name.to_owned(),
            incarnation: ObjectId::new().to_hex(),
        }
    }
}

/// The lease as its holder has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    pub epoch: i64,
    /// Until when a write of an earlier holder may still land (`daemon::tenure`): a holder
    /// whose lease expired may have had a `$merge` in flight, which the server stops only at
    /// its time limit.
    pub settled_at: DateTime<Utc>,
}
