//! One incremental run of the hourly period (`periods.hourly.incremental`): the writes since the
//! previous run are kept (`rollup::tick`), and the windows they touched, with the recent ones,
//! are written from what is kept. A run reads about one schedule interval of writes, whatever
//! the hour's size.
//!
//! - **The mark** (`{_id: "incremental:hourly", origin, since, reads}` in the state
//!   collection): the first slice not yet kept, the first window kept incrementally, and the
//!   ranges whose users were read ahead of `since`, with their counts of events. The first run sets
//!   `origin` at the open window's start and `since` at the minute `late_events.settle` before
//!   it, so every event of a window from `origin` on is in a slice from `since` on (writers'
//!   clocks within `settle`, as the late-event scan assumes); it keeps the open window's writes
//!   so far, up to [`MAX_SLICES`] minutes of them.
//! - **Windows before the origin** are the regular runs' business: the first runs after a start
//!   write the closed windows between the watermark and the origin whole (no lookback), and the
//!   open one while it is before the origin; the late-event scan (its `before` at the origin)
//!   refreshes them when late events arrive.
//! - **A run** keeps the settled slices of `[since, until)` (at most [`MAX_SLICES`]; more is a
//!   backlog, run again at once), checks their users (a range read ahead is counted again and
//!   merged again only if its count changed; a range never read is merged), reads the users
//!   written since the newest read once (counted, then merged), writes the recent
//!   windows (from the watermark to the open one) and the windows the kept slices touched, then
//!   moves the mark to `until` and the watermark to the window of `until`: windows that ended
//!   before `until` have all their slices kept. The late-event scan of the windows before the
//!   origin runs beside the writing of windows, once the keeping is done: the keeping's users
//!   are the run's longest part, and the engine's cores are shared.
//!
//! A crash anywhere repeats the work: slices are replaced whole, sets only take true members,
//! and the mark moves last.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::late_events::refresh_late_windows;
use super::records::LateReport;
use super::tenure::{confirm_lease, write_windows, Tenure};
use crate::archive::storage::RetentionStore;
use crate::config::Config;
use crate::error::{Chain, Result};
use crate::metrics_document::WindowMetrics;
use crate::rollup::commands::Target;
use crate::rollup::report::{Outcome, WindowReport};
use crate::rollup::storage::{LateEventStore, RollupStore, TickStore};
use crate::rollup::tick::{self, Finish, Keep, TickMark};
use crate::store::{LeaseStore, MarkStore};
use crate::window::{Period, Window};

/// At most this many slices (minutes of writes) are kept per run: two hours. A daemon that was
/// down longer catches up in runs of this size, back to back.
pub const MAX_SLICES: usize = 120;

/// What one incremental run did.
#[derive(Debug, Clone, Default)]
pub struct TickOutcome {
    /// The windows written, oldest first (before the origin: whole; from it: from what is kept).
    pub windows: Vec<Window>,
    pub reports: Vec<WindowReport>,
    /// Work left for the next runs: closed windows before the origin never written, and slices
    /// not yet kept.
    pub backlog: usize,
    pub watermark_after: DateTime<Utc>,
    pub late: Option<LateReport>,
}

/// One incremental run of `period` at `now`, from `watermark` (the end of the newest closed
/// window known complete). `planned` gets the windows the run is about to write, before it
/// writes them, so that a failed run can say which.
#[allow(clippy::too_many_arguments)]
pub async fn run_incremental(
    store: &(impl RollupStore + TickStore + LateEventStore + RetentionStore + MarkStore + LeaseStore),
    config: &Config,
    period: Period,
    now: DateTime<Utc>,
    horizon: Option<DateTime<Utc>>,
    watermark: DateTime<Utc>,
    tenure: &Tenure,
    planned: &mut Vec<Window>,
) -> Result<TickOutcome> {
    let started = std::time::Instant::now();
    let calendar = &config.calendar;
    let max_windows = config.period(period).max_windows_per_run;
    let settle = chrono::Duration::from_std(config.late_events.settle).unwrap_or_default();
    let settled = tick::slice_start(now - settle);
    let open = calendar.window_containing(period, now);
    let mark = match store.tick_mark(period).await? {
        Some(mark) => mark,
        None => {
            // The open window is kept from its start: its events were written from then on.
            let mark = TickMark::new(open.start, tick::slice_start(open.start - settle));
            store.advance_tick_mark(period, &mark, now).await?;
            mark
        }
    };
    let mut outcome = TickOutcome {
        watermark_after: watermark,
        ..TickOutcome::default()
    };

    // Before the origin: the closed windows after the watermark, whole, and the open window
    // while it is before the origin.
    let mut before_origin: Vec<Window> = if watermark < mark.origin {
        calendar.windows_covering(period, watermark, mark.origin.min(open.end))
    } else {
        Vec::new()
    };
    before_origin.retain(|w| w.end <= now || w.start == open.start);
    let closed_before_origin = before_origin.iter().filter(|w| w.end <= now).count();
    outcome.backlog += closed_before_origin.saturating_sub(max_windows);
    before_origin.truncate(max_windows);
    planned.extend(before_origin.iter().copied());
    if !before_origin.is_empty() {
        let reports = written(store, period, &before_origin, || async {
            write_windows(store, config, period, &before_origin, now, tenure).await
        })
        .await?;
        outcome.reports.extend(reports);
        if let Some(end) = before_origin
            .iter()
            .filter(|w| w.end <= now)
            .map(|w| w.end)
            .max()
        {
            outcome.watermark_after = outcome.watermark_after.max(end);
        }
    }

    let before_origin_done = started.elapsed();
    // From the origin, beside the late events of the windows before it (the late-event scan
    // writes only those, and moves a mark of its own). The scan waits for the keeping, whose
    // users are the run's longest part, and runs beside the writing of windows.
    let kept_done = tokio::sync::Notify::new();
    let from_origin = async {
        // Wakes the scan when dropped: after the keeping, or on any way out before it.
        let keeping = KeepingDone(&kept_done);
        // Keep the settled slices, then write windows from what is kept.
        let slices = tick::slices(mark.since, settled);
        let until = slices
            .get(MAX_SLICES)
            .copied()
            .unwrap_or_else(|| settled.max(mark.since));
        let slices_left = slices.len().saturating_sub(MAX_SLICES);
        outcome.backlog += slices_left;
        // The recent windows: from the watermark (or the origin) to the open one, or, while slices
        // are left, to the one they have reached (without reading the writes after them).
        let last = if slices_left > 0 {
            calendar.window_containing(period, until)
        } else {
            open
        };
        let first_recent = outcome.watermark_after.max(mark.origin);
        let mut recent = if first_recent < last.end {
            calendar.windows_covering(period, first_recent, last.end)
        } else {
            Vec::new()
        };
        recent.truncate(max_windows);
        planned.extend(recent.iter().copied());
        // The users are read up to now, for the open window's count, unless slices are left: then
        // up to the kept ones (their check merges them), as the tail is not read either.
        let cut = if slices_left > 0 {
            until
        } else {
            tick::whole_second(now).max(until)
        };
        let kept = store
            .keep(&Keep::new(&Target::of(config), &mark, until, cut, now)?)
            .await;
        drop(keeping);
        let kept = kept?;
        let kept_at = started.elapsed();
        let mut windows: BTreeMap<DateTime<Utc>, Window> =
            recent.iter().map(|w| (w.start, *w)).collect();
        for bucket in &kept.touched {
            let bucket = *bucket;
            let w = calendar.window_containing(period, bucket);
            if w.start >= mark.origin
                && w.start <= open.start
                && horizon.is_none_or(|h| w.start >= h)
            {
                windows.insert(w.start, w);
            }
        }
        let windows: Vec<Window> = windows.into_values().collect();
        planned.extend(windows.iter().filter(|w| !recent.contains(w)).copied());
        planned.sort_by_key(|w| w.start);
        if !windows.is_empty() {
            tenure.note(store, period, &windows, now).await?;
            let mut fenced = Target::of(config);
            fenced.fence = Some(tenure.fence.clone());
            let tail: &[Window] = if slices_left > 0 { &[] } else { &recent };
            let finish = Finish::new(&fenced, &windows, tail, until, now)?;
            let reports = written(store, period, &windows, || async {
                store.finish_windows(&finish).await
            })
            .await?;
            outcome.reports.extend(reports);
        }
        let finished = started.elapsed();
        confirm_lease(store, &tenure.fence).await?;
        store
            .advance_tick_mark(
                period,
                &TickMark {
                    origin: mark.origin,
                    since: until,
                    reads: kept.reads,
                },
                now,
            )
            .await?;
        // Windows from the origin that ended by `until` have all their slices kept; they are
        // complete once the windows before the origin are.
        if outcome.watermark_after >= mark.origin {
            let reached = calendar.window_start(period, until).min(open.start);
            outcome.watermark_after = outcome.watermark_after.max(reached);
        }
        if outcome.watermark_after > watermark {
            store
                .advance_watermark(period, outcome.watermark_after, now)
                .await?;
        }
        let marked = started.elapsed();
        Ok::<_, crate::error::Error>((
            slices.len().min(MAX_SLICES),
            kept_at,
            finished,
            marked,
            kept.merged_again,
        ))
    };
    let late = async {
        kept_done.notified().await;
        let late_started = std::time::Instant::now();
        let late =
            refresh_late_windows(store, config, period, now, mark.origin, horizon, tenure).await;
        (late, late_started.elapsed())
    };
    let (from_origin, (late, late_scan)) = tokio::join!(from_origin, late);
    let (slices, kept_at, finished, marked, merged_again) = match from_origin {
        Ok(done) => done,
        Err(e) => {
            if let Err(late) = &late {
                tracing::warn!(period = %period, error = %Chain(late), "the late-event scan failed too");
            }
            return Err(e);
        }
    };
    outcome.late = late?;
    tracing::debug!(period = %period, slices,
        before_origin_ms = before_origin_done.as_millis(), keep_ms = (kept_at - before_origin_done).as_millis(),
        finish_ms = (finished - kept_at).as_millis(), marks_ms = (marked - finished).as_millis(),
        late_scan_ms = late_scan.as_millis(), users_merged_again = merged_again,
        "incremental run");
    outcome.reports.sort_by_key(|r| r.window.start);
    outcome.windows = outcome.reports.iter().map(|r| r.window).collect();
    Ok(outcome)
}

/// Lets the late-event scan start when dropped: the end of the keeping, whichever way it ends.
struct KeepingDone<'a>(&'a tokio::sync::Notify);

impl Drop for KeepingDone<'_> {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Writes `windows` with `write` and compares each with what was stored before.
async fn written<F, Fut>(
    store: &impl RollupStore,
    period: Period,
    windows: &[Window],
    write: F,
) -> Result<Vec<WindowReport>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let starts: Vec<DateTime<Utc>> = windows.iter().map(|w| w.start).collect();
    let before = by_date(store.stored_windows(period, &starts).await?)?;
    write().await?;
    let after = by_date(store.stored_windows(period, &starts).await?)?;
    Ok(windows
        .iter()
        .map(|w| {
            let outcome = match (before.get(&w.start), after.get(&w.start)) {
                (Some(old), Some(new)) if !old.values.is_empty() => {
                    let diffs = old.diff(new);
                    if diffs.is_empty() {
                        Outcome::Unchanged
                    } else {
                        Outcome::Changed(diffs)
                    }
                }
                _ => Outcome::Created,
            };
            WindowReport {
                window: *w,
                outcome,
            }
        })
        .collect())
}

fn by_date(docs: Vec<bson::Document>) -> Result<BTreeMap<DateTime<Utc>, WindowMetrics>> {
    docs.iter()
        .map(|d| WindowMetrics::from_document(d).map(|m| (m.date, m)))
        .collect::<std::result::Result<_, _>>()
        .map_err(crate::error::Error::from)
}
