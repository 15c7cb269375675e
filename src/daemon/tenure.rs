//! The lease a run runs under: the fence stamped on its writes, the check before it moves a
//! mark, and the rewrite of windows written while an earlier holder's write could still land.
//!
//! A fenced `$merge` (`rollup::commands::Fence`) checks the lease on the server just before it
//! writes, so a leader that lost the lease writes nothing afterwards. One write can still slip
//! through: a `$merge` that passed its check just before a takeover and was still writing after
//! it. The server stops every aggregate at its `maxTimeMS` (`aggregate_timeout`), counted from
//! its start, which was before the takeover. So the lease records when the last such write can
//! have landed (`settledAt`: `aggregate_timeout` and a margin after a takeover of an expired
//! lease, or whenever a holder that abandoned runs gave it up), and every window written before
//! then is noted in the database before it is written, and written again by whichever leader
//! runs its period after then. Noted in the database, not in memory: a leader that dies or loses
//! the lease before then leaves the rewrite to the next one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::info;

use crate::archive::storage::RetentionStore;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rollup::commands::Fence;
use crate::rollup::storage::RollupStore;
use crate::rollup::{self, Batch, Mode};
use crate::store::{LeaseStore, MarkStore};
use crate::window::{consecutive, Period, Window};

/// The lease a run runs under: the fence stamped on its writes, and until when an earlier
/// holder's write may still land.
#[derive(Debug, Clone)]
pub struct Tenure {
    pub fence: Fence,
    pub settled_at: DateTime<Utc>,
}

impl Tenure {
    /// Before writing `windows` of `period` in a run started at `now`: notes them for a rewrite
    /// if an earlier holder's write may still land on them.
    pub async fn note(
        &self,
        store: &impl MarkStore,
        period: Period,
        windows: &[Window],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if now >= self.settled_at || windows.is_empty() {
            return Ok(());
        }
        let starts: Vec<DateTime<Utc>> = windows.iter().map(|w| w.start).collect();
        store.note_rewrite(period, &starts, self.settled_at).await
    }
}

/// Writes `windows` of `period` (in order, not necessarily consecutive) under the tenure's
/// fence, one batch per run of consecutive windows, noting them first for a rewrite if needed.
pub async fn write_windows(
    store: &(impl RollupStore + RetentionStore + MarkStore),
    config: &Config,
    period: Period,
    windows: &[Window],
    now: DateTime<Utc>,
    tenure: &Tenure,
) -> Result<()> {
    tenure.note(store, period, windows, now).await?;
    for run in consecutive(windows) {
        let batch = Batch {
            period,
            windows: run,
            now,
            mode: Mode::Write,
            chunk_windows: config.period(period).chunk_windows,
            fence: Some(&tenure.fence),
        };
        rollup::process(store, config, batch, |_| {}).await?;
    }
    Ok(())
}

/// Writes again the windows of `period` noted while an earlier holder's write could still land,
/// once it cannot (those before the retention horizon are left as they are), and forgets them.
pub async fn rewrite_pending(
    store: &(impl RollupStore + RetentionStore + MarkStore + LeaseStore),
    config: &Config,
    period: Period,
    now: DateTime<Utc>,
    horizon: Option<DateTime<Utc>>,
    tenure: &Tenure,
) -> Result<()> {
    let Some(pending) = store.pending_rewrite(period).await? else {
        return Ok(());
    };
    if now < pending.until {
        return Ok(());
    }
    let rebuildable: Vec<Window> = pending
        .starts
        .iter()
        .filter(|start| horizon.is_none_or(|h| **start >= h))
        .map(|start| config.calendar.window_containing(period, *start))
        .collect();
    write_windows(store, config, period, &rebuildable, now, tenure).await?;
    confirm_lease(store, &tenure.fence).await?;
    store.clear_rewrite(period, &pending.starts).await?;
    info!(
        period = %period, windows = rebuildable.len(),
        "rewrote the windows written while an earlier leader's last write could still land"
    );
    Ok(())
}

/// Fails with [`Error::LostLease`] unless this replica still holds the lease the run writes
/// under: the last check before a run moves a mark, since its fenced writes may have written
/// nothing.
pub async fn confirm_lease(store: &impl LeaseStore, fence: &Fence) -> Result<()> {
    if store.holds_lease(&fence.holder, fence.epoch).await? {
        Ok(())
    } else {
        Err(Error::LostLease { epoch: fence.epoch })
    }
}

/// Beyond `aggregate_timeout`: the server's own delay in stopping a command.
pub const MARGIN: Duration = Duration::from_secs(5);
