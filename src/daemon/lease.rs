//! The leader lease: only the replica holding it runs jobs.
//!
//! The lease is a document in the state collection with a holder and an expiry. The holder
//! renews it every third of its TTL; a standby tries every fifth. A leader that cannot renew
//! stops scheduling a fifth of a TTL *before* its lease can have expired (clock skew between
//! replicas must stay below that), and gives the lease up on shutdown so a standby takes over at
//! its next try.
//!
//! The holder is this process, not only its `instance_id`: a replica restarted under the same
//! name (a container restarted in its pod) takes the lease over like any other, after it
//! expired, since a write of its predecessor may still be on its way. Each time the lease
//! changes hands its epoch grows by one. A run stamps the epoch it started
//! under on its writes: the `$merge` of a leader that lost the lease writes nothing, and the
//! run fails before it moves a mark (`rollup::commands::Fence`, `daemon::tenure`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::error::{Chain, Error};
use crate::store::{HeldLease, LeaseHolder, LeaseStore};

/// Whether this replica may schedule, and under which epoch of the lease; shared between the
/// lease task and the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Leadership {
    /// Until when this replica leads (the last renewal, less its safety margin), and the lease
    /// as it holds it.
    held: Arc<Mutex<Option<(Instant, HeldLease)>>>,
    /// Signalled when this replica becomes leader, or takes the lease again under a new epoch.
    gained: Arc<tokio::sync::Notify>,
}

impl Leadership {
    /// True while the last successful renewal still covers now (with its safety margin).
    pub fn is_leader(&self) -> bool {
        self.epoch().is_some()
    }

    /// The lease's epoch while this replica leads.
    pub fn epoch(&self) -> Option<i64> {
        self.lease().map(|l| l.epoch)
    }

    /// The lease while this replica leads: its epoch, and whether it was taken over from a
    /// holder that did not give it up.
    pub fn lease(&self) -> Option<HeldLease> {
        self.held()
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, lease)| lease)
    }

    fn held(&self) -> Option<(Instant, HeldLease)> {
        *self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn valid_until(&self) -> Option<Instant> {
        self.held().map(|(until, _)| until)
    }

    /// Leader until `until` with `lease` (`None`: not leader). The lease task calls this after
    /// each attempt.
    pub fn set(&self, held: Option<(Instant, HeldLease)>) {
        let before = self.epoch();
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
        let after = self.epoch();
        if after.is_some() && after != before {
            self.gained.notify_one();
        }
    }

    /// Resolves when this replica becomes leader (at once if it did since the last call).
    pub async fn gained(&self) {
        self.gained.notified().await;
    }
}

/// How long releasing the lease may hold a shutdown.
pub const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// `settle` after `now`: when a write in flight now has landed at the latest.
pub fn settles(now: DateTime<Utc>, settle: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(settle)
        .ok()
        .and_then(|settle| now.checked_add_signed(settle))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Takes, renews and finally releases the lease once `shutdown` says when this replica's last
/// write landed (`settle` is how long a write in flight may take: `aggregate_timeout` and a
/// margin).
pub async fn hold_lease(
    store: Arc<impl LeaseStore>,
    clock: impl Clock,
    name: String,
    (ttl, settle): (Duration, Duration),
    leadership: Leadership,
    mut shutdown: watch::Receiver<Option<DateTime<Utc>>>,
) {
    // This process: a restart under the same name takes the lease over, never renews it.
    let me = LeaseHolder::new(&name);
    let margin = ttl / 5;
    let mut was_leader = false;
    let mut renew_failing = false;
    loop {
        let attempt = Instant::now();
        let taken = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            taken = store.try_lease(&me, clock.now(), ttl, settle) => taken,
        };
        match taken {
            Ok(Some(lease)) => {
                leadership.set(Some((attempt + ttl - margin, lease)));
                renew_failing = false;
            }
            Ok(None) => leadership.set(None),
            Err(e) => {
                // Keep the current validity: it runs out on its own, before the lease does.
                // An unreachable server is the reachability watcher's to report, once.
                if !renew_failing && !matches!(e, Error::Unreachable { .. }) {
                    warn!(holder = %me.name, error = %Chain(&e), "cannot take or renew the lease");
                }
                renew_failing = true;
            }
        }
        let leader = leadership.is_leader();
        if leader != was_leader {
            if leader {
                info!(holder = %me.name, "became leader: this replica runs the jobs");
            } else {
                warn!(holder = %me.name, "not leader: standing by");
            }
            was_leader = leader;
        }
        let wait = if leader { ttl / 3 } else { ttl / 5 };
        // Wake up in time to stop scheduling when renewals keep failing.
        let wait = match leadership.valid_until() {
            Some(until) if leader => wait.min(until.saturating_duration_since(Instant::now())),
            _ => wait,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
    if leadership.is_leader() {
        leadership.set(None);
        // Bounded: with MongoDB gone, server selection would hold the exit for its whole
        // timeout, and the lease expires on its own anyway.
        // When this replica's last write can have landed: as the daemon says once its runs
        // are drained; if it cannot say, as if a write were still in flight.
        let settled_at = (*shutdown.borrow()).unwrap_or_else(|| settles(clock.now(), settle));
        match tokio::time::timeout(RELEASE_WAIT, store.release_lease(&me, settled_at)).await {
            Ok(Ok(())) => info!(holder = %me.name, "released the lease"),
            Ok(Err(e)) => {
                warn!(holder = %me.name, error = %Chain(&e), "could not release the lease; it expires on its own")
            }
            Err(_) => warn!(
                holder = %me.name,
                "MongoDB did not answer the lease release within {}s; it expires on its own",
                RELEASE_WAIT.as_secs()
            ),
        }
    }
}
