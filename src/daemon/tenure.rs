//! The lease a run runs under: the fence stamped on its writes, the check before it moves a
//! mark, and, after a takeover, the windows this leader wrote while the previous leader's last
//! write could still land, rewritten once it cannot.
//!
//! A fenced `$merge` (`rollup::commands::Fence`) checks the lease on the server just before it
//! writes, so a leader that lost the lease writes nothing afterwards. One write can still slip
//! through: a `$merge` that passed its check just before the takeover and was still writing
//! after it. The server stops every aggregate at its `maxTimeMS` (`aggregate_timeout`), counted
//! from its start, which was before the takeover; so from `aggregate_timeout` (and a margin)
//! after this leader's first write under its epoch, no older write can land. The windows it
//! wrote before then are rewritten once, at the period's first run after that.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};

use crate::archive::storage::RetentionStore;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rollup::commands::Fence;
use crate::rollup::storage::RollupStore;
use crate::rollup::{self, Batch, Mode};
use crate::store::LeaseStore;
use crate::window::{consecutive, Period, Window};

/// The lease a run runs under: the fence stamped on its writes, and, for a lease taken over
/// from a holder that did not give it up, where the windows it writes early on are recorded for
/// their rewrite.
pub struct Tenure<'a> {
    pub fence: Fence,
    pub redo: Option<&'a Redo>,
}

impl Tenure<'_> {
    /// Records windows written under this tenure (see [`Redo::wrote`]).
    pub fn wrote(&self, period: Period, windows: &[Window]) {
        if let Some(redo) = self.redo {
            redo.wrote(self.fence.epoch, period, windows);
        }
    }

    /// The windows of `period` to rewrite now (see [`Redo::due`]).
    pub fn due(&self, period: Period) -> Vec<Window> {
        self.redo
            .map(|redo| redo.due(self.fence.epoch, period))
            .unwrap_or_default()
    }

    /// The windows [`Tenure::due`] gave were rewritten.
    pub fn done(&self, period: Period, windows: &[Window]) {
        if let Some(redo) = self.redo {
            redo.done(self.fence.epoch, period, windows);
        }
    }
}

/// Writes `windows` of `period` (in order, not necessarily consecutive) under the tenure's
/// fence, one batch per run of consecutive windows, and records them for the redo.
pub async fn write_windows(
    store: &(impl RollupStore + RetentionStore),
    config: &Config,
    period: Period,
    windows: &[Window],
    now: DateTime<Utc>,
    tenure: &Tenure<'_>,
) -> Result<()> {
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
        tenure.wrote(period, run);
    }
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

/// The windows to rewrite, per tenure of the lease.
#[derive(Debug)]
pub struct Redo {
    /// How long after a takeover an older write may still land.
    wait: Duration,
    written: Mutex<Option<Written>>,
}

/// What one epoch of the lease wrote early on.
#[derive(Debug)]
struct Written {
    epoch: i64,
    /// Until when an older leader's write may still land.
    until: Instant,
    /// Per period, the windows written before `until`, by start.
    written: BTreeMap<Period, BTreeMap<chrono::DateTime<chrono::Utc>, Window>>,
}

impl Redo {
    /// Older writes may land up to `aggregate_timeout` after a takeover.
    pub fn new(aggregate_timeout: Duration) -> Self {
        Redo {
            wait: aggregate_timeout + MARGIN,
            written: Mutex::new(None),
        }
    }

    fn with<T>(&self, epoch: i64, f: impl FnOnce(&mut Written) -> T) -> T {
        let mut tenure = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let current = match tenure.take() {
            Some(t) if t.epoch == epoch => t,
            // A new epoch: its first write starts the wait.
            _ => Written {
                epoch,
                until: Instant::now() + self.wait,
                written: BTreeMap::new(),
            },
        };
        f(tenure.insert(current))
    }

    /// Records windows of `period` written under `epoch`, while an older write may still land.
    pub fn wrote(&self, epoch: i64, period: Period, windows: &[Window]) {
        self.with(epoch, |t| {
            if Instant::now() < t.until {
                let written = t.written.entry(period).or_default();
                written.extend(windows.iter().map(|w| (w.start, *w)));
            }
        });
    }

    /// The windows of `period` to rewrite now: those written early in the tenure, once no older
    /// write can land. Empty before then, and after [`Redo::done`].
    pub fn due(&self, epoch: i64, period: Period) -> Vec<Window> {
        self.with(epoch, |t| {
            if Instant::now() < t.until {
                return Vec::new();
            }
            t.written
                .get(&period)
                .map(|w| w.values().copied().collect())
                .unwrap_or_default()
        })
    }

    /// The windows [`Redo::due`] gave for `period` were rewritten.
    pub fn done(&self, epoch: i64, period: Period, windows: &[Window]) {
        self.with(epoch, |t| {
            if let Some(written) = t.written.get_mut(&period) {
                for w in windows {
                    written.remove(&w.start);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn window(hour: u32) -> Window {
        let start: DateTime<Utc> = format!("2026-03-10T{hour:02}:00:00Z").parse().unwrap();
        Window {
            start,
            end: start + chrono::Duration::hours(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn windows_written_early_in_a_tenure_are_due_once_older_writes_cannot_land() {
        let redo = Redo::new(Duration::from_secs(600));
        redo.wrote(3, Period::Hourly, &[window(10), window(11)]);
        redo.wrote(3, Period::Daily, &[window(0)]);
        assert!(
            redo.due(3, Period::Hourly).is_empty(),
            "not before the wait"
        );
        tokio::time::advance(Duration::from_secs(300)).await;
        redo.wrote(3, Period::Hourly, &[window(11), window(12)]);
        tokio::time::advance(Duration::from_secs(305)).await;
        // Written after the wait: an older write cannot overtake it.
        redo.wrote(3, Period::Hourly, &[window(13)]);
        let due = redo.due(3, Period::Hourly);
        assert_eq!(due, vec![window(10), window(11), window(12)]);
        redo.done(3, Period::Hourly, &due);
        assert!(redo.due(3, Period::Hourly).is_empty());
        assert_eq!(redo.due(3, Period::Daily), vec![window(0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_epoch_starts_a_new_wait_and_forgets_the_old_tenure() {
        let redo = Redo::new(Duration::from_secs(60));
        redo.wrote(1, Period::Hourly, &[window(10)]);
        tokio::time::advance(Duration::from_secs(120)).await;
        redo.wrote(2, Period::Hourly, &[window(11)]);
        assert!(redo.due(2, Period::Hourly).is_empty());
        tokio::time::advance(Duration::from_secs(70)).await;
        assert_eq!(redo.due(2, Period::Hourly), vec![window(11)]);
    }
}
