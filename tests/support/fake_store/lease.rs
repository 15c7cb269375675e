//! The leader lease.

use std::time::Duration;

use chrono::{DateTime, Utc};
use vcmetrics::error::{Error, Result};
use vcmetrics::store::{HeldLease, LeaseHolder, LeaseStore};

use super::FakeStore;

impl FakeStore {
    fn lease_gate(&self, holder: &str, operation: &'static str) -> Result<()> {
        if self.with(|s| s.cut_off.iter().any(|h| h == holder)) {
            return Err(Error::MongoWrite {
                operation,
                message: "injected: this replica is cut off".into(),
            });
        }
        Ok(())
    }
}

impl LeaseStore for FakeStore {
    async fn try_lease(
        &self,
        holder: &LeaseHolder,
        now: DateTime<Utc>,
        ttl: Duration,
        settle: Duration,
    ) -> Result<Option<HeldLease>> {
        self.gate("findAndModify (lease)").await?;
        self.lease_gate(&holder.name, "findAndModify (lease)")?;
        self.flaky("findAndModify (lease)")?;
        Ok(self.with(|s| {
            let expires = now + chrono::Duration::from_std(ttl).unwrap();
            let mine = s.taken_by(holder);
            match &s.lease {
                // Renewing: the expiry only moves forward.
                Some((_, until)) if mine && *until > now => {
                    let until = (*until).max(expires);
                    s.lease = Some((holder.name.clone(), until));
                    return Some(HeldLease {
                        epoch: s.lease_epoch,
                        settled_at: s.lease_settled.unwrap_or(DateTime::<Utc>::MIN_UTC),
                    });
                }
                // Another holder's, or another incarnation's, unexpired.
                Some((_, until)) if *until > now => return None,
                // Expired without being given up: its holder's write may still land.
                Some(_) => {
                    let settles = now + chrono::Duration::from_std(settle).unwrap();
                    s.lease_settled = s.lease_settled.max(Some(settles));
                    s.lease_epoch += 1;
                }
                // Given up or never taken.
                None => s.lease_epoch += 1,
            }
            s.lease = Some((holder.name.clone(), expires));
            s.lease_incarnation.clone_from(&holder.incarnation);
            Some(HeldLease {
                epoch: s.lease_epoch,
                settled_at: s.lease_settled.unwrap_or(DateTime::<Utc>::MIN_UTC),
            })
        }))
    }

    async fn holds_lease(&self, holder: &str, epoch: i64) -> Result<bool> {
        self.gate("find (lease)").await?;
        self.lease_gate(holder, "find (lease)")?;
        Ok(self.with(|s| s.holds(holder, epoch)))
    }

    async fn release_lease(&self, holder: &LeaseHolder, settled_at: DateTime<Utc>) -> Result<()> {
        self.gate("update (lease)").await?;
        self.with(|s| {
            if s.taken_by(holder) {
                s.lease = None;
                s.lease_settled = s.lease_settled.max(Some(settled_at));
            }
        });
        Ok(())
    }
}
