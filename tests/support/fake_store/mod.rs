//! The one in-memory, fault-injecting double of the store's parts (one file per part), shared by every test that
//! needs a store without a server (`mod support;`): the daemon under paused time, the rollup's
//! chunking and reports.

mod archive;
mod lease;
mod marks;
pub mod rollup;
mod server;
mod sessions;
mod tick;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Document};
use chrono::{DateTime, Utc};
use vcmetrics::archive::{ArchiveState, EventSpan};
use vcmetrics::error::{Error, Result};
use vcmetrics::rollup::late_scan::{object_id_at, LateScan};
use vcmetrics::rollup::pipeline::Chunk;
use vcmetrics::rollup::tick::TickMark;
use vcmetrics::sessions::gauges::SessionGauges;
use vcmetrics::store::LeaseHolder;
use vcmetrics::window::Period;

/// One chunk rolled up: its period, window starts and the run's pinned "now".
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub period: String,
    pub windows: Vec<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

#[derive(Default)]
pub struct FakeState {
    /// Timestamps of call_start events in the audit log.
    pub calls: Vec<DateTime<Utc>>,
    /// The `_id`s and timestamps of the calls written with [`FakeStore::write_call`]: what the
    /// late-event scan sees (calls pushed to `calls` directly have no ObjectId `_id`).
    pub writes: Vec<(ObjectId, DateTime<Utc>)>,
    /// The writes the archive took out of the audit log (the late-event scan reads the audit
    /// log only, so it no longer sees them).
    pub archived_writes: BTreeSet<ObjectId>,
    /// Each period's late-event mark.
    pub late_marks: BTreeMap<Period, ObjectId>,
    /// Each incremental period's mark.
    pub tick_marks: BTreeMap<Period, TickMark>,
    /// The partials kept by incremental runs: calls per (slice, bucket).
    pub kept: BTreeMap<(DateTime<Utc>, DateTime<Utc>), usize>,
    /// Every late-event scan, in order.
    pub late_scans: Vec<LateScan>,
    /// The next this-many late-event mark updates fail.
    pub failing_late_marks: usize,
    /// What the session gauges read; every read is counted in `session_reads`.
    pub session_gauges: SessionGauges,
    pub session_reads: usize,
    pub docs: BTreeMap<(String, DateTime<Utc>), Document>,
    pub watermarks: BTreeMap<Period, DateTime<Utc>>,
    pub lease: Option<(String, DateTime<Utc>)>,
    /// The lease's epoch: one more each time it changes hands.
    pub lease_epoch: i64,
    /// The incarnation (process) of the lease's holder.
    pub lease_incarnation: String,
    /// The lease's `settledAt`: until when an earlier holder's write may still land.
    pub lease_settled: Option<DateTime<Utc>>,
    /// Per period, the windows noted for a rewrite: (until, starts).
    pub rewrites: BTreeMap<Period, (DateTime<Utc>, std::collections::BTreeSet<DateTime<Utc>>)>,
    /// Lease operations of these holders fail, as for a replica cut off from the server.
    pub cut_off: Vec<String>,
    /// Roll-ups that take longer, by the order they start: the first takes the first duration
    /// (after reading its events, before its `$merge` checks the fence), and so on.
    pub stalled_roll_ups: std::collections::VecDeque<Duration>,
    /// `$merge`s that take longer after their fence check passed, by the order they pass it.
    pub slow_merges: std::collections::VecDeque<Duration>,
    /// Single operations (roll-ups, watermark and late-mark writes, lease renewals) fail at
    /// random, this many in a hundred, drawn from `flaky_state` (a seeded sequence).
    pub flaky_percent: u64,
    pub flaky_state: u64,
    /// Roll-ups whose `$merge` the fence stopped: (period, epoch).
    pub fenced_off: Vec<(String, i64)>,
    /// Every chunk rolled up, in order.
    pub aggregates: Vec<Aggregate>,
    /// Every chunk computed (previewed), in order.
    pub previews: Vec<Aggregate>,
    /// Every operation fails, as with MongoDB unreachable.
    pub down: bool,
    /// Every operation waits while this is set, as with a server that does not answer.
    pub hang: bool,
    /// The next this-many roll-ups fail.
    pub failing_aggregates: usize,
    /// How long a roll-up takes (paused time).
    pub aggregate_time: Duration,
    /// Names of the indexes the database lacks (`absent_indexes` reports the wanted ones of
    /// these names); none by default.
    pub absent_indexes: Vec<String>,
    /// The audit log's TTL, as `listIndexes` would report it.
    pub audit_ttl: Option<Duration>,
    /// The archive's record, as the store keeps it.
    pub archive_state: ArchiveState,
    /// Timestamps of the call_start events moved into the archive; chunks reading the archive
    /// count them too.
    pub archive: Vec<DateTime<Utc>>,
    /// Indexes into `calls` of the batch copied and not yet deleted (ids are those indexes).
    pub copied: Vec<i64>,
    /// The next this-many deletes from the audit log fail (a run dying after its copy).
    pub failing_archive_deletes: usize,
    /// The next this-many roll-ups and previews see the archive's `seq` change while they read,
    /// as when a run moves a batch meanwhile.
    pub archive_moves_during_reads: usize,
    /// How long copying a batch into the archive takes (paused time).
    pub archive_copy_time: Duration,
    /// Every `begin_archive`, as (holder, cutoff).
    pub archive_runs: Vec<(String, DateTime<Utc>)>,
}

/// An in-memory [`Store`] whose "audit log" is a list of call_start instants: a window's
/// document is all zeros but `totalCalls`, the calls in it. Failures are injected through the
/// state (`down`, `failing_aggregates`, `aggregate_time`).
pub struct FakeStore {
    state: Mutex<FakeState>,
}

impl FakeState {
    /// The `_id`s of the writes (see [`FakeStore::write_call`]) timestamped `at` that are still
    /// in the audit log.
    fn logged_writes_at(&self, at: DateTime<Utc>) -> impl Iterator<Item = ObjectId> + '_ {
        self.writes
            .iter()
            .filter(move |(id, t)| *t == at && !self.archived_writes.contains(id))
            .map(|(id, _)| *id)
    }

    /// Whether an archive run may take a call timestamped `at`: before `cutoff` and, with
    /// `written_before`, not one written at or after it (a call has no `_id` of its own here: a
    /// write still in the audit log with that timestamp counts).
    pub fn archivable(
        &self,
        at: DateTime<Utc>,
        cutoff: DateTime<Utc>,
        written_before: Option<ObjectId>,
    ) -> bool {
        at < cutoff
            && written_before.is_none_or(|mark| self.logged_writes_at(at).all(|id| id < mark))
    }

    /// The archive took a call timestamped `at` out of the audit log: so did it one write with
    /// that timestamp, if there is one still there.
    pub fn archive_write(&mut self, at: DateTime<Utc>) {
        let moved = self.logged_writes_at(at).next();
        if let Some(id) = moved {
            self.archived_writes.insert(id);
        }
    }

    /// Whether `holder` holds the lease at `epoch` (expired or not, as long as nobody took it).
    pub fn holds(&self, holder: &str, epoch: i64) -> bool {
        self.lease.as_ref().is_some_and(|(h, _)| h == holder) && self.lease_epoch == epoch
    }

    /// Whether the lease (expired or not) was last taken by this incarnation of `holder`.
    pub fn taken_by(&self, holder: &LeaseHolder) -> bool {
        self.lease.as_ref().is_some_and(|(h, _)| *h == holder.name)
            && self.lease_incarnation == holder.incarnation
    }
}

impl Default for FakeStore {
    fn default() -> Self {
        FakeStore {
            state: Mutex::new(FakeState {
                // The schema's 180 days.
                audit_ttl: Some(Duration::from_secs(15_552_000)),
                ..FakeState::default()
            }),
        }
    }
}

/// The error MongoDB and DocumentDB answer a `$merge` whose `on` fields have no unique index
/// with, as the driver decodes it.
pub fn missing_merge_index() -> Error {
    let reply = doc! {
        "ok": 0.0,
        "errmsg": "Unable to locate index required to confirm join fields are unique",
        "code": 51183,
        "codeName": "Location51183",
    };
    let command: mongodb::error::CommandError = bson::from_document(reply).unwrap();
    Error::mongo("aggregate")(mongodb::error::ErrorKind::Command(command).into())
}

/// The document the fake computes for a window with `calls` call_start events.
pub fn window_document(period: &str, start: DateTime<Utc>, calls: i32) -> Document {
    let mut d =
        doc! {"period": period, "date": bson::DateTime::from_chrono(start), "errorCounts": {}};
    for f in vcmetrics::metrics_document::FIELDS {
        d.insert(f.name, 0_i32);
    }
    d.insert("totalCalls", calls);
    d
}

impl FakeStore {
    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn computed(&self, chunk: &Chunk) -> Vec<Document> {
        self.with(|s| {
            if s.archive_moves_during_reads > 0 {
                s.archive_moves_during_reads -= 1;
                s.archive_state.seq += 1;
            }
            let archived: &[DateTime<Utc>] = if chunk.reads_archive() {
                &s.archive
            } else {
                &[]
            };
            chunk
                .windows
                .iter()
                .map(|w| {
                    let calls = s
                        .calls
                        .iter()
                        .chain(archived)
                        .filter(|t| w.start <= **t && **t < w.end)
                        .count();
                    window_document(chunk.period.as_str(), w.start, calls as i32)
                })
                .collect()
        })
    }

    /// Fails (`down`) or waits while `hang` (forever if it stays) as the injected faults say.
    async fn gate(&self, operation: &'static str) -> Result<()> {
        // A hanging server answers nothing until it stops hanging (if ever).
        while self.with(|s| s.hang) {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        self.check_up(operation)
    }

    fn check_up(&self, operation: &'static str) -> Result<()> {
        if self.with(|s| s.down) {
            return Err(Error::MongoWrite {
                operation,
                message: "injected: server unreachable".into(),
            });
        }
        Ok(())
    }

    /// A call_start event at `at`, written (its ObjectId made) at `written`.
    pub fn write_call(&self, at: DateTime<Utc>, written: DateTime<Utc>) {
        self.with(|s| {
            let mut bytes = object_id_at(written).bytes();
            // A counter in the last bytes, as a driver makes them: unique, in write order.
            bytes[8..].copy_from_slice(&(s.writes.len() as u32 + 1).to_be_bytes());
            s.writes.push((ObjectId::from_bytes(bytes), at));
            s.calls.push(at);
        });
    }

    /// What the audit log's TTL monitor does: deletes the calls timestamped before `before`
    /// (they stay in `calls` as `DateTime::MIN_UTC`, in no window, so the archive's indexes into
    /// `calls` keep pointing where they did).
    pub fn expire(&self, before: DateTime<Utc>) {
        self.with(|s| {
            for t in s.calls.iter_mut().filter(|t| **t < before) {
                *t = DateTime::<Utc>::MIN_UTC;
            }
        });
    }

    /// Fails `operation` at random, as often as `flaky_percent` says.
    pub fn flaky(&self, operation: &'static str) -> Result<()> {
        let fail = self.with(|s| {
            if s.flaky_percent == 0 {
                return false;
            }
            // SplitMix64, as the simulation's own sequence.
            s.flaky_state = s.flaky_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s.flaky_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % 100 < s.flaky_percent
        });
        if fail {
            return Err(Error::MongoWrite {
                operation,
                message: "injected: a flaky operation".into(),
            });
        }
        Ok(())
    }

    /// Fails `operation` while the counter `left` picks is above zero, counting it down.
    fn injected_failure(
        &self,
        operation: &'static str,
        left: impl FnOnce(&mut FakeState) -> &mut usize,
    ) -> Result<()> {
        let fail = self.with(|s| {
            let left = left(s);
            let fail = *left > 0;
            *left = left.saturating_sub(1);
            fail
        });
        if fail {
            return Err(Error::MongoWrite {
                operation,
                message: "injected failure".into(),
            });
        }
        Ok(())
    }

    pub fn aggregates(&self, period: &str) -> Vec<Aggregate> {
        self.with(|s| {
            s.aggregates
                .iter()
                .filter(|a| a.period == period)
                .cloned()
                .collect()
        })
    }

    pub fn total_calls(&self, period: &str, start: &str) -> Option<i32> {
        let start = DateTime::parse_from_rfc3339(start)
            .unwrap()
            .with_timezone(&Utc);
        self.with(|s| {
            s.docs
                .get(&(period.to_owned(), start))
                .and_then(|d| d.get_i32("totalCalls").ok())
        })
    }
}

fn span<'a>(times: impl Iterator<Item = &'a DateTime<Utc>>) -> EventSpan {
    times.fold(EventSpan::default(), |span, t| EventSpan {
        count: span.count + 1,
        oldest: Some(span.oldest.map_or(*t, |o| o.min(*t))),
        newest: Some(span.newest.map_or(*t, |n| n.max(*t))),
    })
}
