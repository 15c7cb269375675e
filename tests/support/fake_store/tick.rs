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
            // The tail: the recent windows' calls written from the first slice not kept to the
            // cut, staged under the run.
            if let Some(tail) = &keep.tail {
                let staged = s.staged_tails.entry(tail.run).or_default();
                staged.clear();
                for w in &tail.windows {
                    let n = writes
                        .iter()
                        .filter(|(written, at)| {
                            tail.from <= *written
                                && *written < tail.to
                                && w.start <= *at
                                && *at < w.end
                        })
                        .count();
                    staged.insert(w.start, n);
                }
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
        // The partials of settled slices, and the staged tail of the recent windows.
        let merged = self
            .aggregate_and_merge(merge, || {
                self.with(|s| {
                    let staged = finish.tail.and_then(|run| s.staged_tails.get(&run));
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
                            let tail = staged.and_then(|t| t.get(&w.start)).copied().unwrap_or(0);
                            window_document("hourly", w.start, (kept + tail) as i32)
                        })
                        .collect()
                })
            })
            .await;
        if let Some(run) = finish.tail {
            self.with(|s| s.staged_tails.remove(&run));
        }
        merged
    }
}
