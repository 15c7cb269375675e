//! The server: whether it answers, which indexes it lacks.

use vcmetrics::error::Result;
use vcmetrics::store::ServerStore;

use super::FakeStore;

impl ServerStore for FakeStore {
    async fn ping(&self) -> Result<()> {
        self.gate("ping").await
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
}
