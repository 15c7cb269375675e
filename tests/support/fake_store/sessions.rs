//! The live session gauges.

use vcmetrics::error::Result;
use vcmetrics::sessions::gauges::{GaugeQueries, SessionGauges};
use vcmetrics::sessions::storage::SessionStore;

use super::FakeStore;

impl SessionStore for FakeStore {
    async fn session_gauges(&self, _: &GaugeQueries) -> Result<SessionGauges> {
        self.gate("count (sessions)").await?;
        Ok(self.with(|s| {
            s.session_reads += 1;
            s.session_gauges.clone()
        }))
    }
}
