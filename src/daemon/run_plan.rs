//! Which windows one scheduled run of a period refreshes, given the time and the watermark.
//!
//! A run covers one contiguous range of windows, so it is one chunk:
//! - every closed window after the watermark (the end of the newest closed window known
//!   complete) — after downtime, exactly the windows that were missed;
//! - the last `lookback` closed windows again, for late events;
//! - the open window, unless switched off.
//!
//! A backlog longer than `max_windows_per_run` closed windows is worked off oldest first, that
//! many per run, without the open window until it is gone. Pure: no I/O, no clock.

use chrono::{DateTime, Utc};

use crate::config::PeriodConfig;
use crate::window::{Calendar, Period, Window};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPlan {
    /// Consecutive windows, oldest first.
    pub windows: Vec<Window>,
    /// The watermark after this run succeeds: the end of its newest closed window (or the old
    /// watermark if that is later).
    pub watermark_after: DateTime<Utc>,
    /// Closed windows after the watermark that this run leaves for the next ones.
    pub backlog_after: usize,
}

pub fn plan_run(
    calendar: &Calendar,
    period: Period,
    config: &PeriodConfig,
    now: DateTime<Utc>,
    watermark: DateTime<Utc>,
) -> RunPlan {
    let open = calendar.window_containing(period, now);
    let mut lookback_start = open.start;
    for _ in 0..config.lookback {
        lookback_start = calendar.previous_window_start(period, lookback_start);
    }
    // A watermark that is not a boundary (the time zone was reconfigured) is widened down.
    let catch_up_start = calendar.window_start(period, watermark.min(open.start));
    let closed = calendar.windows_covering(period, lookback_start.min(catch_up_start), open.start);

    if closed.len() > config.max_windows_per_run {
        let windows = closed[..config.max_windows_per_run].to_vec();
        let end = windows.last().map_or(watermark, |w| w.end);
        return RunPlan {
            backlog_after: closed.iter().filter(|w| w.start >= end).count(),
            watermark_after: watermark.max(end),
            windows,
        };
    }
    let watermark_after = watermark.max(open.start);
    let mut windows = closed;
    if config.include_open {
        windows.push(open);
    }
    RunPlan {
        windows,
        watermark_after,
        backlog_after: 0,
    }
}

/// Where a period starts when no watermark is stored: `start_from` if configured, else the
/// start of the current month's first window; never before the retention horizon.
pub fn initial_watermark(
    calendar: &Calendar,
    period: Period,
    now: DateTime<Utc>,
    start_from: Option<DateTime<Utc>>,
    retention_horizon: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let month_start = calendar.window_start(Period::Monthly, now);
    let start = calendar.window_start(period, start_from.unwrap_or(month_start));
    respect_retention(calendar, period, start, retention_horizon)
}

/// Moves a watermark up to the first whole window after the retention horizon: the TTL has
/// deleted part of the events of earlier windows, and a document computed from what is left
/// would claim an undercount as fact. Such never-aggregated windows stay without a document
/// ("no data"); `recompute --force` can still build them deliberately.
pub fn respect_retention(
    calendar: &Calendar,
    period: Period,
    watermark: DateTime<Utc>,
    retention_horizon: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    match retention_horizon {
        Some(horizon) if watermark < horizon => {
            let first = calendar.window_start(period, horizon);
            if first < horizon {
                calendar.next_window_start(period, first)
            } else {
                first
            }
        }
        _ => watermark,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hourly() -> PeriodConfig {
        from_toml("", &[]).unwrap().period(Period::Hourly).clone()
    }

    fn starts(plan: &RunPlan) -> Vec<String> {
        plan.windows
            .iter()
            .map(|w| w.start.format("%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn a_current_watermark_refreshes_lookback_and_the_open_window() {
        let plan = plan_run(
            &Calendar::default(),
            Period::Hourly,
            &hourly(),
            utc("2026-03-10T12:07:00Z"),
            utc("2026-03-10T12:00:00Z"),
        );
        assert_eq!(
            starts(&plan),
            ["10 09:00", "10 10:00", "10 11:00", "10 12:00"]
        );
        assert_eq!(plan.watermark_after, utc("2026-03-10T12:00:00Z"));
        assert_eq!(plan.backlog_after, 0);
    }

    #[test]
    fn a_three_day_outage_is_caught_up_oldest_first_within_the_run_limit() {
        let config = hourly(); // max 48 windows per run
        let now = utc("2026-03-13T12:07:00Z");
        let plan = plan_run(
            &Calendar::default(),
            Period::Hourly,
            &config,
            now,
            utc("2026-03-10T12:00:00Z"),
        );
        assert_eq!(plan.windows.len(), 48);
        assert_eq!(plan.windows[0].start, utc("2026-03-10T12:00:00Z"));
        assert_eq!(plan.watermark_after, utc("2026-03-12T12:00:00Z"));
        assert_eq!(plan.backlog_after, 24);
        // The next run finishes the backlog and returns to lookback + open.
        let next = plan_run(
            &Calendar::default(),
            Period::Hourly,
            &config,
            now,
            plan.watermark_after,
        );
        assert_eq!(
            next.windows.first().unwrap().start,
            utc("2026-03-12T12:00:00Z")
        );
        assert_eq!(next.windows.len(), 25);
        assert_eq!(next.watermark_after, utc("2026-03-13T12:00:00Z"));
    }

    #[test]
    fn the_open_window_can_be_switched_off() {
        let mut config = hourly();
        config.include_open = false;
        config.lookback = 1;
        let plan = plan_run(
            &Calendar::default(),
            Period::Hourly,
            &config,
            utc("2026-03-10T12:07:00Z"),
            utc("2026-03-10T12:00:00Z"),
        );
        assert_eq!(starts(&plan), ["10 11:00"]);
    }

    #[test]
    fn daily_runs_follow_the_zone_across_dst() {
        let berlin = Calendar::new(chrono_tz::Europe::Berlin, chrono::Weekday::Mon);
        let mut config = from_toml("", &[]).unwrap().period(Period::Daily).clone();
        config.lookback = 2;
        // Just after local midnight on 2026-03-30, the first day after the spring change.
        let plan = plan_run(
            &berlin,
            Period::Daily,
            &config,
            utc("2026-03-29T22:05:00Z"),
            utc("2026-03-29T22:00:00Z"),
        );
        let spans: Vec<i64> = plan
            .windows
            .iter()
            .map(|w| (w.end - w.start).num_hours())
            .collect();
        assert_eq!(plan.windows[0].start, utc("2026-03-27T23:00:00Z"));
        assert_eq!(spans, [24, 23, 24]); // the 28th, the 23-hour 29th, the open 30th
    }

    #[test]
    fn a_watermark_older_than_the_retention_horizon_moves_past_it() {
        let c = Calendar::default();
        let horizon = Some(utc("2026-02-01T06:30:00Z"));
        assert_eq!(
            respect_retention(&c, Period::Hourly, utc("2026-01-01T00:00:00Z"), horizon),
            utc("2026-02-01T07:00:00Z")
        );
        assert_eq!(
            respect_retention(&c, Period::Hourly, utc("2026-03-01T00:00:00Z"), horizon),
            utc("2026-03-01T00:00:00Z")
        );
        assert_eq!(
            respect_retention(&c, Period::Hourly, utc("2026-01-01T00:00:00Z"), None),
            utc("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_fresh_deployment_starts_at_the_month_but_not_before_retention() {
        let c = Calendar::default();
        let now = utc("2026-03-10T12:00:00Z");
        assert_eq!(
            initial_watermark(&c, Period::Hourly, now, None, None),
            utc("2026-03-01T00:00:00Z")
        );
        // The week containing March 1st (a Sunday) starts on Monday February 23rd.
        assert_eq!(
            initial_watermark(&c, Period::Weekly, now, None, None),
            utc("2026-02-23T00:00:00Z")
        );
        assert_eq!(
            initial_watermark(
                &c,
                Period::Daily,
                now,
                Some(utc("2026-01-15T10:00:00Z")),
                None
            ),
            utc("2026-01-15T00:00:00Z")
        );
        // A horizon inside a window starts at the next whole window.
        assert_eq!(
            initial_watermark(
                &c,
                Period::Daily,
                now,
                Some(utc("2026-01-01T00:00:00Z")),
                Some(utc("2026-02-01T06:00:00Z"))
            ),
            utc("2026-02-02T00:00:00Z")
        );
    }
}
