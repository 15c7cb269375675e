//! Incremental runs: partials kept per slice (minute of write time) and bucket, windows written
//! from them, as `rollup::tick`'s pipelines compute them (the mingo suite checks the pipelines).
//! The fake counts call_start events only, so the user sets have nothing to model.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use vcmetrics::error::Result;
use vcmetrics::rollup::storage::TickStore;
use vcmetrics::rollup::tick::{slice_start, Finish, Keep, Kept, UsersRead, BUCKET_MS};
use vcmetrics::window::Period;

use super::rollup::Merge;
use super::{window_document, FakeState, FakeStore};

fn bucket_of(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms - ms.rem_euclid(BUCKET_MS)).unwrap()
}

impl FakeState {
    /// Each call in the audit log as (written, timestamp): a call written with
    /// [`FakeStore::write_call`] at its `_id`'s time, any other at its timestamp.
    pub fn call_writes(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut written: Vec<(DateTime<Utc>, DateTime<Utc>)> = self
            .writes
            .iter()
            .filter(|(id, _)| !self.archived_writes.contains(id))
            .map(|(id, at)| (id.timestamp().to_chrono(), *at))
            .collect();
        let mut out = Vec::new();
        for at in self
            .calls
            .iter()
            .filter(|t| **t != DateTime::<Utc>::MIN_UTC)
        {
            match written.iter().position(|(_, t)| t == at) {
                Some(i) => out.push(written.swap_remove(i)),
                None => out.push((*at, *at)),
            }
        }
        out
    }
}

impl TickStore for FakeStore {
    async fn keep(&self, keep: &Keep) -> Result<Kept> {
        self.gate("aggregate (keep)").await?;
        self.flaky("aggregate (keep)")?;
        Ok(self.with(|s| {
            let writes = s.call_writes();
            for slice in &keep.slices {
                let slice = slice.slice;
                s.kept.retain(|(kept_slice, _), _| *kept_slice != slice);
                for (written, at) in &writes {
                    if slice_start(*written) == slice && *at >= keep.origin {
                        *s.kept.entry((slice, bucket_of(*at))).or_default() += 1;
                    }
                }
            }
            let touched: BTreeSet<DateTime<Utc>> = s
                .kept
                .keys()
                .filter(|(slice, _)| keep.since <= *slice && *slice < keep.until)
                .map(|(_, bucket)| *bucket)
                .collect();
            // The double has no users to read; the reads are counted as the store counts them.
            let mut reads = keep.pending.clone();
            if let Some(ahead) = &keep.ahead {
                reads.extend(ahead.ranges.iter().map(|(from, to, _)| {
                    UsersRead {
                        from: *from,
                        to: *to,
                        events: writes
                            .iter()
                            .filter(|(written, _)| from <= written && written < to)
                            .count() as u64,
                    }
                }));
            }
            Kept {
                touched: touched.into_iter().collect(),
                reads,
                merged_again: 0,
            }
        }))
    }

    async fn finish_windows(&self, finish: &Finish) -> Result<()> {
        let merge = Merge {
            period: Period::Hourly,
            windows: &finish.windows,
            now: finish.now,
            fence: finish.fence.as_ref(),
        };
        // The partials of settled slices, and the tail of the recent windows.
        self.aggregate_and_merge(merge, || {
            self.with(|s| {
                let writes = s.call_writes();
                finish
                    .windows
                    .iter()
                    .map(|w| {
                        let kept: usize = s
                            .kept
                            .iter()
                            .filter(|((slice, bucket), _)| {
                                *slice < finish.settled && w.start <= *bucket && *bucket < w.end
                            })
                            .map(|(_, n)| *n)
                            .sum();
                        let tail = if finish.recent.contains(w) {
                            writes
                                .iter()
                                .filter(|(written, at)| {
                                    slice_start(*written) >= finish.settled
                                        && w.start <= *at
                                        && *at < w.end
                                })
                                .count()
                        } else {
                            0
                        };
                        window_document("hourly", w.start, (kept + tail) as i32)
                    })
                    .collect()
            })
        })
        .await
    }
}
