//! The leader lease: only the replica holding it runs jobs.
//!
//! The lease is a document in the state collection with a holder and an expiry. The holder
//! renews it every third of its TTL; a standby tries every fifth. A leader that cannot renew
//! stops scheduling a fifth of a TTL *before* its lease can have expired (clock skew between
//! replicas must stay below that), and gives the lease up on shutdown so a standby takes over at
//! its next try. Correctness never depends on the lease — runs are idempotent upserts — it only
//! keeps replicas from doing the same work twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::error::{Chain, Error};
use crate::store::LeaseStore;

/// Whether this replica may schedule, shared between the lease task and the scheduler.
#[derive(Debug, Clone, Default)]
pub struct Leadership {
    valid_until: Arc<Mutex<Option<Instant>>>,
    /// Signalled when this replica becomes leader.
    gained: Arc<tokio::sync::Notify>,
}

impl Leadership {
    /// True while the last successful renewal still covers now (with its safety margin).
    pub fn is_leader(&self) -> bool {
        self.valid_until()
            .is_some_and(|until| Instant::now() < until)
    }

    fn valid_until(&self) -> Option<Instant> {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leader until `until` (`None`: not leader). The lease task calls this after each attempt.
    pub fn set(&self, until: Option<Instant>) {
        let was_leader = self.is_leader();
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
        if !was_leader && self.is_leader() {
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

/// Takes, renews and finally releases the lease until `shutdown` flips.
pub async fn hold_lease(
    store: Arc<impl LeaseStore>,
    clock: impl Clock,
    holder: String,
    ttl: Duration,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    let margin = ttl / 5;
    let mut was_leader = false;
    let mut renew_failing = false;
    loop {
        let attempt = Instant::now();
        let taken = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            taken = store.try_lease(&holder, clock.now(), ttl) => taken,
        };
        match taken {
            Ok(true) => {
                leadership.set(Some(attempt + ttl - margin));
                renew_failing = false;
            }
            Ok(false) => leadership.set(None),
            Err(e) => {
                // Keep the current validity: it runs out on its own, before the lease does.
                // An unreachable server is the reachability watcher's to report, once.
                if !renew_failing && !matches!(e, Error::Unreachable { .. }) {
                    warn!(holder = %holder, error = %Chain(&e), "cannot take or renew the lease");
                }
                renew_failing = true;
            }
        }
        let leader = leadership.is_leader();
        if leader != was_leader {
            if leader {
                info!(holder = %holder, "became leader: this replica runs the jobs");
            } else {
                warn!(holder = %holder, "not leader: standing by");
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
        match tokio::time::timeout(RELEASE_WAIT, store.release_lease(&holder)).await {
            Ok(Ok(())) => info!(holder = %holder, "released the lease"),
            Ok(Err(e)) => {
                warn!(holder = %holder, error = %Chain(&e), "could not release the lease; it expires on its own")
            }
            Err(_) => warn!(
                holder = %holder,
                "MongoDB did not answer the lease release within {}s; it expires on its own",
                RELEASE_WAIT.as_secs()
            ),
        }
    }
}
