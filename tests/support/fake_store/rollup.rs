//! The rollup's storage: chunks computed from the recorded calls, late-event scans over the
//! recorded writes.

use std::collections::BTreeMap;

use bson::oid::ObjectId;
use bson::{Bson, Document};
use chrono::{DateTime, Utc};
use vcmetrics::error::Result;
use vcmetrics::rollup::commands::Fence;
use vcmetrics::rollup::late_scan::{LateBucket, LateScanQuery, LateScanResult, BUCKET_MS};
use vcmetrics::rollup::pipeline::Chunk;
use vcmetrics::rollup::storage::{LateEventStore, RollupStore, StoredMetrics};
use vcmetrics::window::{Period, Window};

use super::{missing_merge_index, Aggregate, FakeStore};

impl RollupStore for FakeStore {
    async fn roll_up(&self, chunk: &Chunk) -> Result<()> {
        let merge = Merge {
            period: chunk.period,
            windows: &chunk.windows,
            now: chunk.now,
            fence: chunk.fence.as_ref(),
        };
        self.aggregate_and_merge(merge, || self.computed(chunk))
            .await
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
}

/// Where an aggregate ending in a (fenced) `$merge` of windows writes.
pub struct Merge<'a> {
    pub period: Period,
    pub windows: &'a [Window],
    pub now: DateTime<Utc>,
    pub fence: Option<&'a Fence>,
}

impl FakeStore {
    /// An aggregate that computes `merge.windows`' documents (`compute`, in window order) when it
    /// starts and `$merge`s them when it ends, as a server runs it: with the injected delays and
    /// failures, the unique index the `$merge` needs, and the lease checked just before it writes.
    pub async fn aggregate_and_merge(
        &self,
        merge: Merge<'_>,
        compute: impl FnOnce() -> Vec<Document>,
    ) -> Result<()> {
        self.gate("aggregate").await?;
        let delay = self.with(|s| s.aggregate_time);
        tokio::time::sleep(delay).await;
        self.injected_failure("aggregate", |s| &mut s.failing_aggregates)?;
        self.flaky("aggregate")?;
        // As a server does: the `$merge` on {period, date} needs its unique index.
        if self.with(|s| s.absent_indexes.iter().any(|n| n == "period_1_date_1")) {
            return Err(missing_merge_index());
        }
        let period = merge.period.as_str().to_owned();
        // The scans read the events when they start; the `$merge` writes when they end.
        let computed = compute();
        let stall = self.with(|s| s.stalled_roll_ups.pop_front().unwrap_or_default());
        tokio::time::sleep(stall).await;
        // A fenced `$merge` checks the lease just before it writes.
        if let Some(fence) = merge.fence {
            if !self.with(|s| s.holds(&fence.holder, fence.epoch)) {
                self.with(|s| s.fenced_off.push((period.clone(), fence.epoch)));
                return Ok(());
            }
        }
        let merge_time = self.with(|s| s.slow_merges.pop_front().unwrap_or_default());
        tokio::time::sleep(merge_time).await;
        self.with(|s| {
            s.aggregates.push(Aggregate {
                period: period.clone(),
                windows: merge.windows.iter().map(|w| w.start).collect(),
                at: merge.now,
            });
            for (w, mut d) in merge.windows.iter().zip(computed) {
                let key = (period.clone(), w.start);
                let created = s
                    .docs
                    .get(&key)
                    .and_then(|old| old.get("createdAt").cloned())
                    .unwrap_or_else(|| Bson::DateTime(bson::DateTime::from_chrono(merge.now)));
                d.insert("createdAt", created);
                d.insert("updatedAt", bson::DateTime::from_chrono(merge.now));
                s.docs.insert(key, d);
            }
        });
        Ok(())
    }
}

impl StoredMetrics for FakeStore {
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
}

impl LateEventStore for FakeStore {
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
                .filter(|(id, _)| !s.archived_writes.contains(id))
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
}
