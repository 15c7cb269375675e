//! The leader lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use vcmetrics::error::Result;
use vcmetrics::store::LeaseStore;

use super::FakeStore;

impl LeaseStore for FakeStore {
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
}
