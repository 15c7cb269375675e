//! The daemon's watermarks and late-event marks.

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use vcmetrics::error::Result;
use vcmetrics::store::MarkStore;
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
}
