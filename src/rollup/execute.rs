//! Rolling a batch of windows up chunk by chunk through the store, and comparing each window's
//! document before and after.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt, TryStreamExt};

use super::commands::{Fence, Target};
use super::pipeline::Chunk;
use super::plan::chunks;
use super::report::{Outcome, WindowReport};
use super::storage::RollupStore;
use crate::archive::state::ArchiveRead;
use crate::archive::storage::RetentionStore;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics_document::WindowMetrics;
use crate::window::{Period, Window};

/// Write the documents, or only compute and compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Preview,
}

/// What to roll up: consecutive windows of one period, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub period: Period,
    pub windows: &'a [Window],
    /// The run's pinned "now": `updatedAt`, and `createdAt` of new documents.
    pub now: DateTime<Utc>,
    pub mode: Mode,
    /// At most this many windows per chunk.
    pub chunk_windows: usize,
    /// The lease the writes are fenced by (the daemon's runs); `None` for the command line.
    pub fence: Option<&'a Fence>,
}

/// Runs the rollup for a batch chunk by chunk, up to `chunks_in_flight` chunks at once, calling
/// `progress` with the number of windows finished after each chunk (in window order).
pub async fn process(
    store: &(impl RollupStore + RetentionStore),
    config: &Config,
    batch: Batch<'_>,
    mut progress: impl FnMut(usize),
) -> Result<Vec<WindowReport>> {
    let Batch {
        period,
        windows,
        now,
        mode,
        chunk_windows,
        fence,
    } = batch;
    let mut target = Target::of(config);
    target.fence = fence.cloned();
    // The futures are made before they go into the stream: a closure mapping inside it would
    // make the spawned run's future not provably `Send`.
    let pending: Vec<_> = chunks(windows, chunk_windows)
        .into_iter()
        .map(|chunk_windows| report(store, &target, period, chunk_windows, now, mode))
        .collect();
    let mut finished = stream::iter(pending).buffered(config.chunks_in_flight.max(1));
    let mut reports = Vec::with_capacity(windows.len());
    while let Some(chunk_reports) = finished.try_next().await? {
        reports.extend(chunk_reports);
        progress(reports.len());
    }
    Ok(reports)
}

/// The chunks of consecutive windows, each with its bound commands: what recompute, verify, the
/// daemon's runs send (reading the archive as its state says at the time), and what
/// `vcmetrics pipelines` prints.
pub fn plan_chunks(
    config: &Config,
    period: Period,
    windows: &[Window],
    chunk_windows: usize,
    now: DateTime<Utc>,
    archive: Option<&ArchiveRead>,
) -> Result<Vec<Chunk>> {
    let target = Target::of(config);
    let planned = chunks(windows, chunk_windows)
        .into_iter()
        .map(|w| Chunk::new(&target, period, w, now, archive))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(planned)
}

/// How many times a chunk is read while the archive keeps moving its events, and the longest
/// wait between two reads.
const ARCHIVE_ATTEMPTS: u32 = 8;
const ARCHIVE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Rolls one chunk up (or computes it) so that it counts every event once while the archive
/// may be moving events: the chunk is built from the archive's state read before (reading the
/// archive too when some of its events may have moved, leaving out the moving batch where it is
/// not whole), and is done again when that state changed during the read in a way that concerns
/// it. Returns the computed documents in preview mode.
async fn settled(
    store: &(impl RollupStore + RetentionStore),
    target: &Target<'_>,
    period: Period,
    windows: &[Window],
    now: DateTime<Utc>,
    mode: Mode,
) -> Result<Vec<bson::Document>> {
    let from = windows.first().map_or(now, |w| w.start);
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ARCHIVE_ATTEMPTS {
        let state = store.archive_state().await?;
        let chunk = Chunk::new(target, period, windows, now, state.read_for(from).as_ref())?;
        let computed = match mode {
            Mode::Write => {
                store.roll_up(&chunk).await?;
                Vec::new()
            }
            Mode::Preview => store.compute(&chunk).await?,
        };
        // Events move only below the reach, and only between two changes of `seq`.
        let after = store.archive_state().await?;
        if after.seq == state.seq || after.read_for(from).is_none() {
            return Ok(computed);
        }
        tracing::info!(period = %period, from = %from.to_rfc3339(), attempt,
            "the archive moved events while this chunk was read; reading it again");
        if attempt < ARCHIVE_ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(ARCHIVE_WAIT_MAX);
        }
    }
    Err(Error::Busy(format!(
        "a running archive kept moving events of the {period} windows {} while they were read \
         ({ARCHIVE_ATTEMPTS} attempts); run this again once `vcmetrics archive` has finished",
        super::plan::describe(windows)
    )))
}

/// Rolls one chunk up (or computes it) and compares each window with what was stored before.
async fn report(
    store: &(impl RollupStore + RetentionStore),
    target: &Target<'_>,
    period: Period,
    windows: &[Window],
    now: DateTime<Utc>,
    mode: Mode,
) -> Result<Vec<WindowReport>> {
    let starts: Vec<DateTime<Utc>> = windows.iter().map(|w| w.start).collect();
    let before = by_date(store.stored_windows(period, &starts).await?)?;
    let computed = settled(store, target, period, windows, now, mode).await?;
    let after = match mode {
        Mode::Write => by_date(store.stored_windows(period, &starts).await?)?,
        Mode::Preview => by_date(computed)?,
    };
    let mut reports = Vec::with_capacity(windows.len());
    for window in windows {
        let computed = match after.get(&window.start) {
            Some(doc) => doc.clone(),
            // A preview returns only windows that had events or a stored document.
            None if mode == Mode::Preview => WindowMetrics::zero(period, window.start),
            None => {
                return Err(Error::MongoWrite {
                    operation: "aggregate ($merge)",
                    message: format!(
                        "no {period} document at {} after the rollup",
                        window.start.to_rfc3339()
                    ),
                })
            }
        };
        let outcome = match before.get(&window.start) {
            // A seed document without metrics counts as no document.
            Some(stored) if !stored.values.is_empty() => {
                let diffs = stored.diff(&computed);
                if diffs.is_empty() {
                    Outcome::Unchanged
                } else {
                    Outcome::Changed(diffs)
                }
            }
            _ => Outcome::Created,
        };
        reports.push(WindowReport {
            window: *window,
            outcome,
        });
    }
    Ok(reports)
}

fn by_date(docs: Vec<bson::Document>) -> Result<BTreeMap<DateTime<Utc>, WindowMetrics>> {
    docs.iter()
        .map(|d| WindowMetrics::from_document(d).map(|m| (m.date, m)))
        .collect::<Result<_, _>>()
        .map_err(Error::from)
}
