//! Late events found by when they were written, not only by lookback.
//!
//! After its regular windows, a run of a period looks at the audit events written since the
//! period's late-event mark (an `_id`, stored in the state collection beside the watermark): the
//! server groups those timestamped before the run's first window into 15-minute buckets, the
//! daemon maps the buckets to windows and refreshes exactly those, oldest first, in chunks. The
//! mark moves only after the windows are written, so a crash in between repeats the work and
//! never skips it.
//!
//! Bounds: at most `late_events.scan_limit` events and `max_windows_per_run` windows per run; a
//! scan cut short resumes where it stopped. The newest `late_events.settle` of writes are left
//! for the next run (writers' clocks and in-flight inserts). Windows before the retention
//! horizon are not rebuilt: counted and logged as unrepairable.

use std::collections::BTreeMap;

use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing::{info, warn};

use super::records::LateReport;
use super::tenure::{confirm_lease, write_windows, Tenure};
use crate::archive::storage::RetentionStore;
use crate::config::Config;
use crate::error::Result;
use crate::rollup::commands::Target;
use crate::rollup::late_scan::{
    next_object_id, object_id_at, LateScan, LateScanQuery, LateScanResult,
};
use crate::rollup::storage::{LateEventStore, RollupStore};
use crate::store::{LeaseStore, MarkStore};
use crate::window::{Calendar, Period, Window};

/// What one scan's answer means for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatePlan {
    /// Distinct windows to refresh, oldest first.
    pub windows: Vec<Window>,
    /// Windows with late events before the retention horizon (not rebuilt).
    pub unrepairable: Vec<Window>,
    /// Late events in the windows taken (refreshed or unrepairable).
    pub events: u64,
    /// The oldest timestamp among them.
    pub oldest: Option<DateTime<Utc>>,
    /// Where the next scan starts once these windows are written.
    pub next_mark: ObjectId,
}

/// Maps a scan's buckets to `period`'s windows, at most `max_windows` of them. Buckets are taken
/// in the order their first event was written; when the next one would need a window past the
/// cap, the scan is cut there: the next one starts at that bucket's first `_id`, so nothing
/// after the cut is lost (events of windows already taken may be seen again, and refreshed
/// again, which is harmless).
pub fn plan_late_windows(
    calendar: &Calendar,
    period: Period,
    scan: &LateScan,
    result: &LateScanResult,
    horizon: Option<DateTime<Utc>>,
    max_windows: usize,
) -> LatePlan {
    let max_windows = max_windows.max(1);
    let mut buckets = result.buckets.clone();
    buckets.sort_by_key(|b| b.first_id);
    let mut windows = BTreeMap::new();
    let mut unrepairable = BTreeMap::new();
    let (mut events, mut oldest, mut cut) = (0, None::<DateTime<Utc>>, None);
    for bucket in &buckets {
        let window = calendar.window_containing(period, bucket.start);
        if horizon.is_some_and(|h| window.start < h) {
            unrepairable.insert(window.start, window);
        } else if !windows.contains_key(&window.start) {
            if windows.len() == max_windows {
                cut = Some(bucket.first_id);
                break;
            }
            windows.insert(window.start, window);
        }
        events += bucket.events;
        oldest = Some(oldest.map_or(bucket.oldest, |o| o.min(bucket.oldest)));
    }
    let next_mark = match cut {
        Some(id) => id,
        // Cut by the limit: resume after the last event scanned.
        None if result.scanned >= scan.limit as u64 => result
            .last_id
            .and_then(next_object_id)
            .unwrap_or(scan.until),
        None => scan.until,
    };
    LatePlan {
        windows: windows.into_values().collect(),
        unrepairable: unrepairable.into_values().collect(),
        events,
        oldest,
        next_mark,
    }
}

/// The late-event part of a run of `period` whose first window starts at `before`. `None` when
/// switched off.
pub async fn refresh_late_windows(
    store: &(impl LateEventStore + MarkStore + RollupStore + RetentionStore + LeaseStore),
    config: &Config,
    period: Period,
    now: DateTime<Utc>,
    before: DateTime<Utc>,
    horizon: Option<DateTime<Utc>>,
    tenure: &Tenure,
) -> Result<Option<LateReport>> {
    let settings = &config.late_events;
    if !settings.enabled {
        return Ok(None);
    }
    let settle = chrono::Duration::from_std(settings.settle).unwrap_or_default();
    let until = object_id_at(now - settle);
    let Some(since) = store.late_mark(period).await? else {
        // The first run: the regular windows cover what is recent; late events count from here.
        store.advance_late_mark(period, until, now).await?;
        return Ok(Some(LateReport::default()));
    };
    if since >= until {
        return Ok(Some(LateReport::default()));
    }
    let scan = LateScan {
        since,
        until,
        before,
        limit: settings.scan_limit,
    };
    let started = Instant::now();
    let result = store
        .scan_late_events(&LateScanQuery::new(scan, &Target::of(config))?)
        .await?;
    let scan_duration = started.elapsed();
    let plan = plan_late_windows(
        &config.calendar,
        period,
        &scan,
        &result,
        horizon,
        config.period(period).max_windows_per_run,
    );
    write_windows(store, config, period, &plan.windows, now, tenure).await?;
    // The refreshes may have been fenced off: the mark moves only past events counted.
    confirm_lease(store, &tenure.fence).await?;
    if !plan.windows.is_empty() {
        info!(
            period = %period, events = plan.events, windows = plan.windows.len(),
            oldest = %plan.oldest.map(|t| t.to_rfc3339()).unwrap_or_default(),
            "late events: refreshed the windows they fall in"
        );
    }
    if !plan.unrepairable.is_empty() {
        let first = plan.unrepairable.first().map(|w| w.start.to_rfc3339());
        warn!(
            period = %period, windows = plan.unrepairable.len(), first = %first.unwrap_or_default(),
            "late events in windows past the retention horizon: not rebuilt (the TTL has deleted part of their events)"
        );
    }
    store.advance_late_mark(period, plan.next_mark, now).await?;
    Ok(Some(LateReport {
        events: plan.events,
        windows: plan.windows.len(),
        unrepairable: plan.unrepairable.len(),
        oldest_age: plan.oldest.map(|t| (now - t).to_std().unwrap_or_default()),
        scan_duration: Some(scan_duration),
        mark: Some(plan.next_mark.timestamp().to_chrono()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::late_scan::LateBucket;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn id(seconds_after: i64) -> ObjectId {
        object_id_at(utc("2026-03-10T12:00:00Z") + chrono::Duration::seconds(seconds_after))
    }

    fn bucket(start: &str, events: u64, first: i64) -> LateBucket {
        LateBucket {
            start: utc(start),
            events,
            first_id: id(first),
            oldest: utc(start),
        }
    }

    fn scan(limit: usize) -> LateScan {
        LateScan {
            since: id(0),
            until: id(300),
            before: utc("2026-03-10T09:00:00Z"),
            limit,
        }
    }

    fn starts(windows: &[Window]) -> Vec<String> {
        windows
            .iter()
            .map(|w| w.start.format("%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn buckets_become_distinct_windows_and_the_mark_moves_to_the_scan_end() {
        let result = LateScanResult {
            scanned: 40,
            last_id: Some(id(200)),
            buckets: vec![
                bucket("2026-03-09T10:15:00Z", 2, 10),
                bucket("2026-03-09T10:45:00Z", 1, 20),
                bucket("2026-03-08T23:00:00Z", 3, 5),
            ],
        };
        let cal = Calendar::default();
        let plan = plan_late_windows(&cal, Period::Hourly, &scan(1000), &result, None, 48);
        assert_eq!(starts(&plan.windows), ["08 23:00", "09 10:00"]);
        assert_eq!(plan.events, 6);
        assert_eq!(plan.oldest, Some(utc("2026-03-08T23:00:00Z")));
        assert_eq!(plan.next_mark, id(300));
        let daily = plan_late_windows(&cal, Period::Daily, &scan(1000), &result, None, 14);
        assert_eq!(starts(&daily.windows), ["08 00:00", "09 00:00"]);
        // Berlin: 23:00 UTC on the 8th is the 9th's local midnight.
        let berlin = Calendar::new(chrono_tz::Europe::Berlin, chrono::Weekday::Mon);
        let daily = plan_late_windows(&berlin, Period::Daily, &scan(1000), &result, None, 14);
        assert_eq!(starts(&daily.windows), ["08 23:00"]);
    }

    #[test]
    fn the_window_cap_cuts_the_scan_at_the_first_bucket_left_out() {
        let result = LateScanResult {
            scanned: 40,
            last_id: Some(id(200)),
            buckets: vec![
                bucket("2026-03-09T01:00:00Z", 1, 10),
                bucket("2026-03-09T02:00:00Z", 1, 30),
                bucket("2026-03-09T01:30:00Z", 1, 40),
                bucket("2026-03-09T03:00:00Z", 1, 50),
            ],
        };
        let plan = plan_late_windows(
            &Calendar::default(),
            Period::Hourly,
            &scan(1000),
            &result,
            None,
            2,
        );
        // 01:30 falls in a window already taken, 03:00 would be a third.
        assert_eq!(starts(&plan.windows), ["09 01:00", "09 02:00"]);
        assert_eq!(plan.events, 3);
        assert_eq!(plan.next_mark, id(50));
    }

    #[test]
    fn a_scan_cut_by_its_limit_resumes_after_its_last_event() {
        let result = LateScanResult {
            scanned: 10,
            last_id: Some(id(100)),
            buckets: vec![bucket("2026-03-09T01:00:00Z", 1, 10)],
        };
        let plan = plan_late_windows(
            &Calendar::default(),
            Period::Hourly,
            &scan(10),
            &result,
            None,
            48,
        );
        assert_eq!(plan.next_mark, next_object_id(id(100)).unwrap());
        assert!(plan.next_mark > id(100) && plan.next_mark < id(101));
    }

    #[test]
    fn windows_before_the_horizon_are_unrepairable_and_not_refreshed() {
        let result = LateScanResult {
            scanned: 3,
            last_id: Some(id(100)),
            buckets: vec![
                bucket("2026-01-01T01:00:00Z", 2, 10),
                bucket("2026-03-09T01:00:00Z", 1, 20),
            ],
        };
        let plan = plan_late_windows(
            &Calendar::default(),
            Period::Hourly,
            &scan(1000),
            &result,
            Some(utc("2026-02-01T00:00:00Z")),
            1,
        );
        assert_eq!(starts(&plan.windows), ["09 01:00"]);
        assert_eq!(starts(&plan.unrepairable), ["01 01:00"]);
        assert_eq!(plan.events, 3);
        assert_eq!(plan.next_mark, id(300));
    }
}
