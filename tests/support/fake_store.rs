//! The one in-memory, fault-injecting double of the `Store` trait, shared by every test that
//! needs a store without a server (`mod support;`): the daemon under paused time, the rollup's
//! chunking and reports.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use vcmetrics::archive::{ArchiveState, EventSpan, Finished, MovingBatch};
use vcmetrics::error::{Error, Result};
use vcmetrics::rollup::late_scan::{
    object_id_at, LateBucket, LateScan, LateScanQuery, LateScanResult, BUCKET_MS,
};
use vcmetrics::rollup::pipeline::Chunk;
use vcmetrics::sessions::gauges::{GaugeQueries, SessionGauges};
use vcmetrics::store::Store;
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
    /// Each period's late-event mark.
    pub late_marks: BTreeMap<Period, ObjectId>,
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
    /// Every chunk rolled up, in order.
    pub aggregates: Vec<Aggregate>,
    /// Every chunk computed (previewed), in order.
    pub previews: Vec<Aggregate>,
    /// Every operation fails, as with MongoDB unreachable.
    pub down: bool,
    /// Every operation waits forever, as with a server that never answers.
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

    /// Fails (`down`) or never returns (`hang`) as the injected faults say.
    async fn gate(&self, operation: &'static str) -> Result<()> {
        if self.with(|s| s.hang) {
            std::future::pending::<()>().await;
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

impl Store for FakeStore {
    async fn roll_up(&self, chunk: &Chunk) -> Result<()> {
        self.gate("aggregate").await?;
        let delay = self.with(|s| s.aggregate_time);
        tokio::time::sleep(delay).await;
        self.injected_failure("aggregate", |s| &mut s.failing_aggregates)?;
        // As a server does: the `$merge` on {period, date} needs its unique index.
        if self.with(|s| s.absent_indexes.iter().any(|n| n == "period_1_date_1")) {
            return Err(missing_merge_index());
        }
        let period = chunk.period.as_str().to_owned();
        let computed = self.computed(chunk);
        self.with(|s| {
            s.aggregates.push(Aggregate {
                period: period.clone(),
                windows: chunk.windows.iter().map(|w| w.start).collect(),
                at: chunk.now,
            });
            for (w, mut d) in chunk.windows.iter().zip(computed) {
                let key = (period.clone(), w.start);
                let created = s
                    .docs
                    .get(&key)
                    .and_then(|old| old.get("createdAt").cloned())
                    .unwrap_or_else(|| Bson::DateTime(bson::DateTime::from_chrono(chunk.now)));
                d.insert("createdAt", created);
                d.insert("updatedAt", bson::DateTime::from_chrono(chunk.now));
                s.docs.insert(key, d);
            }
        });
        Ok(())
    }

    async fn compute(&self, chunk: &Chunk) -> Result<Vec<Document>> {
        self.gate("aggregate").await?;
        self.with(|s| {
            s.previews.push(Aggregate {
                period: chunk.period.as_str().to_owned(),
                windows: chunk.windows.iter().map(|w| w.start).collect(),
                at: chunk.now,
            })
        });
        // Like the engine's preview: windows without events are left out.
        let mut docs = self.computed(chunk);
        docs.retain(|d| d.get_i32("totalCalls").is_ok_and(|n| n > 0));
        Ok(docs)
    }

    async fn stored_windows(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
    ) -> Result<Vec<Document>> {
        self.gate("find (metrics)").await?;
        Ok(self.with(|s| {
            starts
                .iter()
                .filter_map(|t| s.docs.get(&(period.as_str().to_owned(), *t)).cloned())
                .collect()
        }))
    }

    async fn audit_ttl(&self) -> Result<Option<Duration>> {
        self.gate("listIndexes").await?;
        Ok(self.with(|s| s.audit_ttl))
    }

    async fn absent_indexes(
        &self,
        wanted: &[vcmetrics::store::indexes::WantedIndex],
    ) -> Result<Vec<vcmetrics::store::indexes::WantedIndex>> {
        self.gate("listIndexes").await?;
        Ok(self.with(|s| {
            wanted
                .iter()
                .filter(|w| s.absent_indexes.contains(&w.name))
                .cloned()
                .collect()
        }))
    }

    async fn ping(&self) -> Result<()> {
        self.gate("ping").await
    }

    async fn watermark(&self, period: Period) -> Result<Option<DateTime<Utc>>> {
        self.gate("find (watermark)").await?;
        Ok(self.with(|s| s.watermarks.get(&period).copied()))
    }

    async fn advance_watermark(
        &self,
        period: Period,
        to: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<()> {
        self.gate("update (watermark)").await?;
        self.with(|s| {
            let w = s.watermarks.entry(period).or_insert(to);
            *w = (*w).max(to);
        });
        Ok(())
    }

    /// As `pipelines/late_windows.json` computes it (the mingo suite checks the pipeline).
    async fn scan_late_events(&self, query: &LateScanQuery) -> Result<LateScanResult> {
        self.gate("aggregate (late events)").await?;
        let scan = query.scan;
        Ok(self.with(|s| {
            s.late_scans.push(scan);
            let mut scanned: Vec<(ObjectId, DateTime<Utc>)> = s
                .writes
                .iter()
                .filter(|(id, _)| scan.since <= *id && *id < scan.until)
                .copied()
                .collect();
            scanned.sort();
            scanned.truncate(scan.limit);
            let mut buckets = BTreeMap::<i64, LateBucket>::new();
            for (id, at) in &scanned {
                if *at >= scan.before {
                    continue;
                }
                let ms = at.timestamp_millis();
                let start = ms - ms.rem_euclid(BUCKET_MS);
                let b = buckets.entry(start).or_insert(LateBucket {
                    start: DateTime::from_timestamp_millis(start).unwrap(),
                    events: 0,
                    first_id: *id,
                    oldest: *at,
                });
                b.events += 1;
                b.first_id = b.first_id.min(*id);
                b.oldest = b.oldest.min(*at);
            }
            LateScanResult {
                scanned: scanned.len() as u64,
                last_id: scanned.last().map(|(id, _)| *id),
                buckets: buckets.into_values().collect(),
            }
        }))
    }

    async fn late_mark(&self, period: Period) -> Result<Option<ObjectId>> {
        self.gate("find (late-event mark)").await?;
        Ok(self.with(|s| s.late_marks.get(&period).copied()))
    }

    async fn advance_late_mark(
        &self,
        period: Period,
        to: ObjectId,
        _: DateTime<Utc>,
    ) -> Result<()> {
        self.gate("update (late-event mark)").await?;
        self.injected_failure("update (late-event mark)", |s| &mut s.failing_late_marks)?;
        self.with(|s| {
            let mark = s.late_marks.entry(period).or_insert(to);
            *mark = (*mark).max(to);
        });
        Ok(())
    }

    async fn session_gauges(&self, _: &GaugeQueries) -> Result<SessionGauges> {
        self.gate("count (sessions)").await?;
        Ok(self.with(|s| {
            s.session_reads += 1;
            s.session_gauges.clone()
        }))
    }

    async fn try_lease(&self, holder: &str, now: DateTime<Utc>, ttl: Duration) -> Result<bool> {
        self.gate("update (lease)").await?;
        Ok(self.with(|s| match &s.lease {
            Some((other, expires)) if other != holder && *expires > now => false,
            _ => {
                s.lease = Some((
                    holder.to_owned(),
                    now + chrono::Duration::from_std(ttl).unwrap(),
                ));
                true
            }
        }))
    }

    async fn release_lease(&self, holder: &str) -> Result<()> {
        self.gate("delete (lease)").await?;
        self.with(|s| {
            if s.lease.as_ref().is_some_and(|(h, _)| h == holder) {
                s.lease = None;
            }
        });
        Ok(())
    }

    async fn archive_state(&self) -> Result<ArchiveState> {
        self.gate("find (archive state)").await?;
        Ok(self.with(|s| s.archive_state.clone()))
    }

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

    /// The `_id`s are indexes into `calls`, oldest first.
    async fn archivable(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<Vec<Bson>> {
        self.gate("find (events to archive)").await?;
        Ok(self.with(|s| {
            let mut old: Vec<(DateTime<Utc>, usize)> = s
                .calls
                .iter()
                .enumerate()
                .filter(|(_, t)| **t < cutoff)
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
                s.archive.push(t);
            }
            s.copied.clear();
            gone.len() as u64
        }))
    }

    async fn archivable_span(&self, cutoff: DateTime<Utc>) -> Result<EventSpan> {
        self.gate("count (events to archive)").await?;
        Ok(self.with(|s| span(s.calls.iter().filter(|t| **t < cutoff))))
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

fn span<'a>(times: impl Iterator<Item = &'a DateTime<Utc>>) -> EventSpan {
    times.fold(EventSpan::default(), |span, t| EventSpan {
        count: span.count + 1,
        oldest: Some(span.oldest.map_or(*t, |o| o.min(*t))),
        newest: Some(span.newest.map_or(*t, |n| n.max(*t))),
    })
}
