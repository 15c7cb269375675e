//! The daemon's watermarks and late-event marks.

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use vcmetrics::error::Result;
use vcmetrics::rollup::tick::TickMark;
use vcmetrics::store::{MarkStore, PendingRewrite};
use vcmetrics::window::Period;

use super::FakeStore;

impl MarkStore for FakeStore {
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
        self.flaky("update (watermark)")?;
        self.with(|s| {
            let w = s.watermarks.entry(period).or_insert(to);
            *w = (*w).max(to);
        });
        Ok(())
    }

    async fn tick_mark(&self, period: Period) -> Result<Option<TickMark>> {
        self.gate("find (incremental mark)").await?;
        Ok(self.with(|s| s.tick_marks.get(&period).cloned()))
    }

    async fn advance_tick_mark(
        &self,
        period: Period,
        mark: &TickMark,
        _: DateTime<Utc>,
    ) -> Result<()> {
        self.gate("update (incremental mark)").await?;
        self.flaky("update (incremental mark)")?;
        self.with(|s| {
            let kept = s.tick_marks.entry(period).or_insert_with(|| mark.clone());
            kept.since = kept.since.max(mark.since);
            kept.origin = kept.origin.min(mark.origin);
            kept.reads = mark.reads.clone();
        });
        Ok(())
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
        self.flaky("update (late-event mark)")?;
        self.injected_failure("update (late-event mark)", |s| &mut s.failing_late_marks)?;
        self.with(|s| {
            let mark = s.late_marks.entry(period).or_insert(to);
            *mark = (*mark).max(to);
        });
        Ok(())
    }

    async fn note_rewrite(
        &self,
        period: Period,
        starts: &[DateTime<Utc>],
        until: DateTime<Utc>,
    ) -> Result<()> {
        self.gate("update (rewrite)").await?;
        self.flaky("update (rewrite)")?;
        self.with(|s| {
            let (noted_until, noted) = s
                .rewrites
                .entry(period)
                .or_insert((until, Default::default()));
            *noted_until = (*noted_until).max(until);
            noted.extend(starts.iter().copied());
        });
        Ok(())
    }

    async fn pending_rewrite(&self, period: Period) -> Result<Option<PendingRewrite>> {
        self.gate("find (rewrite)").await?;
        Ok(self.with(|s| {
            s.rewrites
                .get(&period)
                .filter(|(_, starts)| !starts.is_empty())
                .map(|(until, starts)| PendingRewrite {
                    until: *until,
                    starts: starts.iter().copied().collect(),
                })
        }))
    }

    async fn clear_rewrite(&self, period: Period, starts: &[DateTime<Utc>]) -> Result<()> {
        self.gate("update (rewrite)").await?;
        self.flaky("update (rewrite)")?;
        self.with(|s| {
            if let Some((_, noted)) = s.rewrites.get_mut(&period) {
                for start in starts {
                    noted.remove(start);
                }
            }
        });
        Ok(())
    }
}
