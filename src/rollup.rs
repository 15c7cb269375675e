//! Rolling up a range of windows: windows → chunks → the store rolls each up (or computes it) → what changed.
//!
//! Used by `recompute` and `verify` (and the daemon's runs). It decides which windows a range
//! covers, refuses windows the audit log's TTL has already thinned, and compares documents before
//! and after. It does no time arithmetic of its own (that is `window`) and builds no pipeline text
//! (that is `pipeline`).

use chrono::{DateTime, Utc};
use futures_util::{stream, StreamExt, TryStreamExt};
use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{FieldDiff, WindowMetrics};
use crate::pipeline::{Chunk, Target};
use crate::store::Store;
use crate::window::{Period, QuantumTable, Window, MAX_QUANTA};

/// The windows of one period that a command-line range covers.
#[derive(Debug, Clone, PartialEq)]
pub struct RangePlan {
    pub period: Period,
    /// Closed windows, oldest first: the ones that will be processed.
    pub windows: Vec<Window>,
    /// Windows of the widened range that have not closed yet; the daemon owns those.
    pub not_closed: usize,
}

/// Widens `[from, to)` to whole windows and keeps the closed ones.
pub fn plan_range(
    config: &Config,
    period: Period,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> RangePlan {
    let all = config.calendar.windows_covering(period, from, to);
    let total = all.len();
    let windows: Vec<Window> = all.into_iter().filter(|w| w.is_closed_at(now)).collect();
    RangePlan {
        period,
        not_closed: total - windows.len(),
        windows,
    }
}

/// The oldest instant whose audit events are all still stored: `now - retention`, where the
/// retention is the configured override or else the audit log's TTL. `None` when neither exists.
pub async fn retention_horizon(
    store: &impl Store,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let retention = match config.audit_retention {
        Some(r) => Some(r),
        None => store.audit_ttl().await?,
    };
    // A retention reaching before chrono's calendar keeps every event: no horizon.
    Ok(retention.and_then(|r| {
        chrono::Duration::from_std(r)
            .ok()
            .and_then(|r| now.checked_sub_signed(r))
    }))
}

/// Refuses a plan whose first window starts before the retention horizon, unless forced:
/// rebuilding it would replace correct history with undercounts.
pub fn check_retention(
    plan: &RangePlan,
    horizon: Option<DateTime<Utc>>,
    force: bool,
) -> Result<()> {
    let (Some(first), Some(horizon)) = (plan.windows.first(), horizon) else {
        return Ok(());
    };
    if first.start >= horizon || force {
        return Ok(());
    }
    let thinned = plan.windows.iter().filter(|w| w.start < horizon).count();
    Err(Error::Refused(format!(
        "{thinned} {} window(s) start before the audit log's retention horizon {} \
         (the TTL has deleted part of their events, so rebuilding them would undercount); \
         narrow --from or pass --force",
        plan.period,
        horizon.to_rfc3339()
    )))
}

/// Write the documents, or only compute and compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Preview,
}

/// What happened (or would happen) to one window's document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// There was no document with metrics for this window.
    Created,
    Unchanged,
    Changed(Vec<FieldDiff>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowReport {
    pub window: Window,
    pub outcome: Outcome,
}

/// Counts for the end-of-run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub windows: usize,
    pub created: usize,
    pub changed: usize,
    pub unchanged: usize,
}

impl Summary {
    pub fn of(reports: &[WindowReport]) -> Summary {
        let mut s = Summary {
            windows: reports.len(),
            ..Summary::default()
        };
        for r in reports {
            match r.outcome {
                Outcome::Created => s.created += 1,
                Outcome::Unchanged => s.unchanged += 1,
                Outcome::Changed(_) => s.changed += 1,
            }
        }
        s
    }
}

/// What to roll up: consecutive windows of one period, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub period: Period,
    pub windows: &'a [Window],
    /// The run's pinned "now": `updatedAt`, and `createdAt` of new documents.
    pub now: DateTime<Utc>,
    pub mode: Mode,
    /// At most this many windows per aggregate command.
    pub chunk_windows: usize,
}

/// Runs the rollup for a batch chunk by chunk, up to `chunks_in_flight` chunks at once, calling
/// `progress` with the number of windows finished after each chunk (in window order).
pub async fn process(
    store: &impl Store,
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
    } = batch;
    let target = Target::of(config);
    let planned = chunks(windows, chunk_windows)
        .into_iter()
        .map(|w| Chunk::new(&target, period, w, now))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // The futures are made before they go into the stream: a closure mapping inside it would
    // make the spawned run's future not provably `Send`.
    let pending: Vec<_> = planned
        .iter()
        .map(|chunk| report(store, chunk, mode))
        .collect();
    let mut finished = stream::iter(pending).buffered(config.chunks_in_flight.max(1));
    let mut reports = Vec::with_capacity(windows.len());
    while let Some(chunk_reports) = finished.try_next().await? {
        reports.extend(chunk_reports);
        progress(reports.len());
    }
    Ok(reports)
}

/// Rolls one chunk up (or computes it) and compares each window with what was stored before.
async fn report(store: &impl Store, chunk: &Chunk, mode: Mode) -> Result<Vec<WindowReport>> {
    let period = chunk.period;
    let starts: Vec<DateTime<Utc>> = chunk.windows.iter().map(|w| w.start).collect();
    let before = by_date(store.stored_windows(period, &starts).await?)?;
    let after = match mode {
        Mode::Write => {
            store.roll_up(chunk).await?;
            by_date(store.stored_windows(period, &starts).await?)?
        }
        Mode::Preview => by_date(store.compute(chunk).await?)?,
    };
    let mut reports = Vec::with_capacity(chunk.windows.len());
    for window in &chunk.windows {
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

/// Cuts consecutive windows into the chunks of one aggregate each: at most `chunk_windows`
/// windows, and at most [`MAX_QUANTA`] entries in the chunk's window lookup table. The one chunk
/// planner of recompute, verify, the daemon's runs and `vcmetrics pipelines`.
pub fn chunks(windows: &[Window], chunk_windows: usize) -> Vec<&[Window]> {
    let mut out = Vec::new();
    let mut rest = windows;
    while !rest.is_empty() {
        // The longest prefix within both bounds; the quanta only grow as windows are added, and
        // one window is always a single quantum.
        let (mut fits, mut too_long) = (1, rest.len().min(chunk_windows.max(1)) + 1);
        while too_long - fits > 1 {
            let mid = (fits + too_long) / 2;
            if QuantumTable::len_for(&rest[..mid]) <= MAX_QUANTA {
                fits = mid;
            } else {
                too_long = mid;
            }
        }
        let len = fits;
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        rest = tail;
    }
    out
}

fn by_date(docs: Vec<bson::Document>) -> Result<BTreeMap<DateTime<Utc>, WindowMetrics>> {
    docs.iter()
        .map(|d| WindowMetrics::from_document(d).map(|m| (m.date, m)))
        .collect::<Result<_, _>>()
        .map_err(Error::from)
}

/// The span of a list of windows, for messages.
pub fn describe(windows: &[Window]) -> String {
    match (windows.first(), windows.last()) {
        (Some(first), Some(last)) => {
            format!("{} .. {}", first.start.to_rfc3339(), last.end.to_rfc3339())
        }
        _ => "(no windows)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate, RawConfig};
    use crate::window::Window;
    use bson::{doc, Document};
    use std::sync::Mutex;
    use std::time::Duration;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn config() -> Config {
        validate(RawConfig::default(), &[]).unwrap()
    }

    /// A store that records what it was asked and serves canned documents; the MongoDB-backed
    /// behaviour itself is covered by the conformance and `MONGODB_URI` tests.
    #[derive(Default)]
    struct RecordingStore {
        stored: Mutex<BTreeMap<DateTime<Utc>, Document>>,
        aggregate_result: Vec<Document>,
        calls: Mutex<Vec<String>>,
        ttl: Option<Duration>,
    }

    impl Store for RecordingStore {
        async fn roll_up(&self, chunk: &Chunk) -> Result<()> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("roll up {}", chunk.windows.len()));
            let mut stored = self.stored.lock().unwrap();
            for d in &self.aggregate_result {
                stored.insert(d.get_datetime("date").unwrap().to_chrono(), d.clone());
            }
            Ok(())
        }
        async fn compute(&self, chunk: &Chunk) -> Result<Vec<Document>> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("compute {}", chunk.windows.len()));
            Ok(self.aggregate_result.clone())
        }
        async fn stored_windows(
            &self,
            _: Period,
            starts: &[DateTime<Utc>],
        ) -> Result<Vec<Document>> {
            let stored = self.stored.lock().unwrap();
            Ok(starts
                .iter()
                .filter_map(|s| stored.get(s).cloned())
                .collect())
        }
        async fn audit_ttl(&self) -> Result<Option<Duration>> {
            Ok(self.ttl)
        }
        async fn ping(&self) -> Result<()> {
            Ok(())
        }
        async fn watermark(&self, _: Period) -> Result<Option<DateTime<Utc>>> {
            Ok(None)
        }
        async fn advance_watermark(
            &self,
            _: Period,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<()> {
            Ok(())
        }
        async fn try_lease(&self, _: &str, _: DateTime<Utc>, _: Duration) -> Result<bool> {
            Ok(true)
        }
        async fn release_lease(&self, _: &str) -> Result<()> {
            Ok(())
        }
    }

    fn batch(windows: &[Window], mode: Mode) -> Batch<'_> {
        Batch {
            period: Period::Hourly,
            windows,
            now: utc("2026-01-02T00:00:00Z"),
            mode,
            chunk_windows: 2,
        }
    }

    fn metrics_doc(date: &str, total_calls: i32) -> Document {
        let mut d = doc! {"period": "hourly", "date": bson::DateTime::from_chrono(utc(date)), "errorCounts": {}};
        for f in crate::metrics::FIELDS {
            d.insert(f.name, 0_i32);
        }
        d.insert("totalCalls", total_calls);
        d
    }

    #[test]
    fn chunks_hold_at_most_chunk_windows_and_max_quanta_and_cover_every_window_once() {
        let calendar =
            crate::window::Calendar::new("Europe/Berlin".parse().unwrap(), chrono::Weekday::Mon);
        let windows = calendar.windows_covering(
            Period::Daily,
            utc("2026-01-01T00:00:00Z"),
            utc("2031-06-01T00:00:00Z"),
        );
        for chunk_windows in [0, 1, 7, 1000, usize::MAX] {
            let cut = chunks(&windows, chunk_windows);
            assert_eq!(cut.concat(), windows, "chunk_windows {chunk_windows}");
            for c in &cut {
                assert!(!c.is_empty() && c.len() <= chunk_windows.max(1));
                assert!(
                    QuantumTable::len_for(c) <= MAX_QUANTA,
                    "{} quanta",
                    QuantumTable::len_for(c)
                );
            }
        }
        // Berlin's DST days make the quantum an hour: 1000 days would need 24,000 entries, so
        // chunks hold the 416 days (9,984 hours) that fit.
        let lens: Vec<usize> = chunks(&windows, 1000).iter().map(|c| c.len()).collect();
        assert_eq!(lens, [416, 416, 416, 416, 314]);
        assert!(chunks(&[], 24).is_empty());
    }

    #[test]
    fn a_range_keeps_only_closed_windows() {
        let plan = plan_range(
            &config(),
            Period::Hourly,
            utc("2026-01-01T10:15:00Z"),
            utc("2026-01-01T14:00:00Z"),
            utc("2026-01-01T12:30:00Z"),
        );
        assert_eq!(plan.windows.len(), 2); // 10:00 and 11:00; 12:00 is open, 13:00 future
        assert_eq!(plan.windows[0].start, utc("2026-01-01T10:00:00Z"));
        assert_eq!(plan.not_closed, 2);
    }

    #[tokio::test]
    async fn windows_before_the_ttl_horizon_are_refused_unless_forced() {
        let store = RecordingStore {
            ttl: Some(Duration::from_secs(86_400)),
            ..Default::default()
        };
        let now = utc("2026-01-10T00:00:00Z");
        let horizon = retention_horizon(&store, &config(), now).await.unwrap();
        assert_eq!(horizon, Some(utc("2026-01-09T00:00:00Z")));
        let plan = plan_range(
            &config(),
            Period::Hourly,
            utc("2026-01-08T22:00:00Z"),
            now,
            now,
        );
        let err = check_retention(&plan, horizon, false).unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert!(
            err.to_string().contains("2 hourly window(s) start before"),
            "{err}"
        );
        check_retention(&plan, horizon, true).unwrap();
        let recent = plan_range(
            &config(),
            Period::Hourly,
            utc("2026-01-09T00:00:00Z"),
            now,
            now,
        );
        check_retention(&recent, horizon, false).unwrap();
    }

    #[tokio::test]
    async fn configured_retention_overrides_the_ttl() {
        let store = RecordingStore {
            ttl: Some(Duration::from_secs(86_400)),
            ..Default::default()
        };
        let mut config = config();
        config.audit_retention = Some(Duration::from_secs(3600));
        let now = utc("2026-01-10T00:00:00Z");
        assert_eq!(
            retention_horizon(&store, &config, now).await.unwrap(),
            Some(utc("2026-01-09T23:00:00Z"))
        );
    }

    #[tokio::test]
    async fn write_mode_seeds_then_merges_in_bounded_chunks_and_reports_changes() {
        let store = RecordingStore {
            aggregate_result: vec![
                metrics_doc("2026-01-01T00:00:00Z", 1),
                metrics_doc("2026-01-01T01:00:00Z", 5),
                metrics_doc("2026-01-01T02:00:00Z", 0),
            ],
            ..Default::default()
        };
        store.stored.lock().unwrap().insert(
            utc("2026-01-01T01:00:00Z"),
            metrics_doc("2026-01-01T01:00:00Z", 4),
        );
        store.stored.lock().unwrap().insert(
            utc("2026-01-01T02:00:00Z"),
            metrics_doc("2026-01-01T02:00:00Z", 0),
        );
        let config = config();
        let windows = config.calendar.windows_covering(
            Period::Hourly,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T03:00:00Z"),
        );
        let mut progress = Vec::new();
        let reports = process(&store, &config, batch(&windows, Mode::Write), |n| {
            progress.push(n)
        })
        .await
        .unwrap();
        assert_eq!(*store.calls.lock().unwrap(), vec!["roll up 2", "roll up 1"]);
        assert_eq!(progress, vec![2, 3]);
        assert_eq!(reports[0].outcome, Outcome::Created);
        assert_eq!(
            reports[1].outcome,
            Outcome::Changed(vec![FieldDiff {
                field: "totalCalls".into(),
                stored: Some(4.0),
                computed: Some(5.0)
            }])
        );
        assert_eq!(reports[2].outcome, Outcome::Unchanged);
        assert_eq!(
            Summary::of(&reports),
            Summary {
                windows: 3,
                created: 1,
                changed: 1,
                unchanged: 1
            }
        );
    }

    #[tokio::test]
    async fn preview_writes_nothing_and_zero_fills_windows_without_events() {
        let store = RecordingStore {
            aggregate_result: vec![metrics_doc("2026-01-01T00:00:00Z", 2)],
            ..Default::default()
        };
        store.stored.lock().unwrap().insert(
            utc("2026-01-01T01:00:00Z"),
            metrics_doc("2026-01-01T01:00:00Z", 3),
        );
        let config = config();
        let windows = config.calendar.windows_covering(
            Period::Hourly,
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T02:00:00Z"),
        );
        let reports = process(&store, &config, batch(&windows, Mode::Preview), |_| {})
            .await
            .unwrap();
        assert_eq!(*store.calls.lock().unwrap(), vec!["compute 2"]);
        assert_eq!(reports[0].outcome, Outcome::Created);
        // Stored 3 calls, but the audit log has none in that hour any more.
        assert_eq!(
            reports[1].outcome,
            Outcome::Changed(vec![FieldDiff {
                field: "totalCalls".into(),
                stored: Some(3.0),
                computed: Some(0.0)
            }])
        );
        assert_eq!(
            store
                .stored
                .lock()
                .unwrap()
                .get(&utc("2026-01-01T01:00:00Z")),
            Some(&metrics_doc("2026-01-01T01:00:00Z", 3))
        );
    }
}
