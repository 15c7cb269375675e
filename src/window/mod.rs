//! Periods and their windows in a configured time zone: the only place that does time arithmetic.
//!
//! A window of period P is `[start, next start)`, where `start` is an instant truncated to P in the
//! configured IANA time zone. Everything else (pipelines, the store, recompute) receives window
//! boundaries as UTC instants from here and never truncates time itself — neither the MongoDB
//! server's time-zone database nor `$dateTrunc` decides which window an event falls in.
//!
//! This module does no I/O.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone,
    Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

mod instant;
mod quantum;
mod schedule;

pub use instant::{parse_instant, BadInstant};
pub use quantum::{QuantumTable, MAX_QUANTA};
pub use schedule::Schedule;

/// The aggregation periods the platform's `videocallmetrics` schema knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    pub const ALL: [Period; 4] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
    ];

    /// The position in [`Period::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The value stored in the metrics document's `period` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown period {0:?} (expected hourly, daily, weekly or monthly)")]
pub struct UnknownPeriod(pub String);

impl FromStr for Period {
    type Err = UnknownPeriod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPeriod(s.to_owned()))
    }
}

/// One window: `[start, end)`, both UTC instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// A window is closed once its end has passed; only then are its numbers final (up to late events).
    pub fn is_closed_at(&self, now: DateTime<Utc>) -> bool {
        self.end <= now
    }
}

/// `windows` (in order) cut where one does not start at the previous one's end: runs of
/// consecutive windows, each rolled up as a batch of its own.
pub fn consecutive(windows: &[Window]) -> Vec<&[Window]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=windows.len() {
        if i == windows.len() || windows[i].start != windows[i - 1].end {
            out.push(&windows[start..i]);
            start = i;
        }
    }
    out
}

/// The calendar the windows are cut from: a time zone and the first day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    tz: Tz,
    week_start: Weekday,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar::new(Tz::UTC, Weekday::Mon)
    }
}

impl Calendar {
    pub fn new(tz: Tz, week_start: Weekday) -> Self {
        Calendar { tz, week_start }
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    pub fn week_start(&self) -> Weekday {
        self.week_start
    }

    /// The start of the window of `period` that contains `t`.
    pub fn window_start(&self, period: Period, t: DateTime<Utc>) -> DateTime<Utc> {
        let local = t.with_timezone(&self.tz).naive_local();
        match period {
            Period::Hourly => self.hour_start(t),
            Period::Daily => self.resolve_local_start(local.date()),
            Period::Weekly => {
                let days_back = local.weekday().days_since(self.week_start);
                self.resolve_local_start(local.date() - Duration::days(i64::from(days_back)))
            }
            Period::Monthly => self.resolve_local_start(first_of_month(local.date())),
        }
    }

    /// The start of the window that follows the window starting at `start`.
    pub fn next_window_start(&self, period: Period, start: DateTime<Utc>) -> DateTime<Utc> {
        let local_date = start.with_timezone(&self.tz).date_naive();
        match period {
            // Truncating one hour later lands on the next boundary, unless an offset change cuts
            // the hour in between (Australia/Lord_Howe's 30 minutes; Pacific/Chatham's jump from
            // 02:45 to 03:45 cuts 02:00 at 02:45): then the window before that boundary starts at
            // the cut. An hour holds at most one change, so there is at most one cut.
            Period::Hourly => {
                let next = self.hour_start(start + Duration::hours(1));
                let cut = self.hour_start(next - Duration::milliseconds(1));
                if cut > start {
                    cut
                } else {
                    next
                }
            }
            Period::Daily => self.resolve_local_start(local_date + Duration::days(1)),
            Period::Weekly => self.resolve_local_start(local_date + Duration::days(7)),
            Period::Monthly => {
                let first = first_of_month(local_date);
                let next = if first.month() == 12 {
                    NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
                };
                // chrono's date range ends in the year 262143; no audit log gets there.
                self.resolve_local_start(next.unwrap_or(first))
            }
        }
    }

    /// The window that ends where the window starting at `start` begins.
    pub fn previous_window_start(&self, period: Period, start: DateTime<Utc>) -> DateTime<Utc> {
        self.window_start(period, start - Duration::milliseconds(1))
    }

    /// The window of `period` that contains `t`.
    pub fn window_containing(&self, period: Period, t: DateTime<Utc>) -> Window {
        let start = self.window_start(period, t);
        Window {
            start,
            end: self.next_window_start(period, start),
        }
    }

    /// The whole windows that cover `[from, to)`: `from` is widened down to its window's start and
    /// `to` up to the next window boundary (a daily range "from 10:00" starts at that midnight).
    /// Empty when `from >= to`.
    pub fn windows_covering(
        &self,
        period: Period,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Window> {
        let mut windows = Vec::new();
        if from >= to {
            return windows;
        }
        let mut start = self.window_start(period, from);
        while start < to {
            let end = self.next_window_start(period, start);
            windows.push(Window { start, end });
            start = end;
        }
        windows
    }

    /// Truncates `t` to the hour of its own UTC offset. An instant keeps its offset, so the two
    /// 02:00 hours of an autumn night in Berlin are two windows, and Kolkata's hours start at :30 UTC.
    fn hour_start(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let offset = self.offset_seconds(t);
        let local = t.naive_utc() + Duration::seconds(offset);
        let into_hour = i64::from(local.minute() * 60 + local.second());
        let candidate = t
            .with_nanosecond(0)
            .expect("0 is a valid nanosecond of every instant")
            - Duration::seconds(into_hour);
        if self.offset_seconds(candidate) == offset {
            candidate
        } else {
            // The offset changed inside this local hour (a 30-minute shift): the window starts at
            // the change.
            self.first_instant_where(candidate, t, |c| self.offset_seconds(c) == offset)
        }
    }

    /// The UTC instant at which the local calendar reaches `date` 00:00: the start of that day's
    /// window (at the transition where a clock change skips midnight).
    pub fn day_start(&self, date: NaiveDate) -> DateTime<Utc> {
        self.resolve_local_start(date)
    }

    fn resolve_local_start(&self, date: NaiveDate) -> DateTime<Utc> {
        let midnight = date
            .and_hms_opt(0, 0, 0)
            .expect("00:00:00 is a valid time of every date");
        match self.tz.from_local_datetime(&midnight) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            // Midnight happens twice (clocks set back at midnight): the day starts at the first.
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            // Midnight is skipped (clocks set forward at midnight, e.g. America/Havana): the day
            // starts at the first instant whose local time is past it, i.e. at the transition.
            LocalResult::None => self.first_local_at_or_after(midnight),
        }
    }

    fn first_local_at_or_after(&self, local: NaiveDateTime) -> DateTime<Utc> {
        // Every UTC offset in use lies within ±1 day, so the instant is in this interval.
        let as_utc = local.and_utc();
        self.first_instant_where(
            as_utc - Duration::days(1),
            as_utc + Duration::days(1),
            |c| c.with_timezone(&self.tz).naive_local() >= local,
        )
    }

    /// Binary search, to the second, for the first instant in `(lo, hi]` where `reached` holds,
    /// given that it does not hold at `lo` and holds at `hi`. Time-zone transitions happen on
    /// whole seconds.
    fn first_instant_where(
        &self,
        lo: DateTime<Utc>,
        hi: DateTime<Utc>,
        reached: impl Fn(DateTime<Utc>) -> bool,
    ) -> DateTime<Utc> {
        // Both ends are instants chrono represents, so is every second between them.
        let at = |s: i64| {
            DateTime::from_timestamp(s, 0).expect("a second between two representable instants")
        };
        let (mut lo, mut hi) = (
            lo.timestamp(),
            hi.timestamp() + i64::from(hi.timestamp_subsec_nanos() > 0),
        );
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if reached(at(mid)) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        at(hi)
    }

    fn offset_seconds(&self, t: DateTime<Utc>) -> i64 {
        i64::from(
            self.tz
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    }
}

fn first_of_month(date: NaiveDate) -> NaiveDate {
    date.with_day(1).expect("every month has a first day")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cal(tz: &str) -> Calendar {
        Calendar::new(tz.parse().unwrap(), Weekday::Mon)
    }

    fn window(c: &Calendar, p: Period, t: &str) -> (DateTime<Utc>, DateTime<Utc>) {
        let w = c.window_containing(p, utc(t));
        (w.start, w.end)
    }

    #[test]
    fn utc_windows_are_plain_calendar_units() {
        let c = Calendar::default();
        assert_eq!(
            window(&c, Period::Hourly, "2026-03-05T10:59:59.999Z"),
            (utc("2026-03-05T10:00:00Z"), utc("2026-03-05T11:00:00Z"))
        );
        assert_eq!(
            window(&c, Period::Daily, "2026-03-05T23:59:59Z"),
            (utc("2026-03-05T00:00:00Z"), utc("2026-03-06T00:00:00Z"))
        );
        // 2026-03-05 is a Thursday; weeks start on Monday by default.
        assert_eq!(
            window(&c, Period::Weekly, "2026-03-05T12:00:00Z"),
            (utc("2026-03-02T00:00:00Z"), utc("2026-03-09T00:00:00Z"))
        );
        assert_eq!(
            window(&c, Period::Monthly, "2026-03-31T23:59:59Z"),
            (utc("2026-03-01T00:00:00Z"), utc("2026-04-01T00:00:00Z"))
        );
    }

    #[test]
    fn berlin_spring_forward_day_is_23_hours_and_hours_skip_local_two() {
        let c = cal("Europe/Berlin");
        // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        assert_eq!(
            window(&c, Period::Daily, "2026-03-29T12:00:00Z"),
            (utc("2026-03-28T23:00:00Z"), utc("2026-03-29T22:00:00Z"))
        );
        // Local 01:00-02:00 CET is followed directly by local 03:00 CEST.
        assert_eq!(
            window(&c, Period::Hourly, "2026-03-29T00:30:00Z"),
            (utc("2026-03-29T00:00:00Z"), utc("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            window(&c, Period::Hourly, "2026-03-29T01:00:00Z"),
            (utc("2026-03-29T01:00:00Z"), utc("2026-03-29T02:00:00Z"))
        );
    }

    #[test]
    fn berlin_fall_back_day_is_25_hours_and_local_two_happens_twice() {
        let c = cal("Europe/Berlin");
        // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC).
        assert_eq!(
            window(&c, Period::Daily, "2026-10-25T12:00:00Z"),
            (utc("2026-10-24T22:00:00Z"), utc("2026-10-25T23:00:00Z"))
        );
        // 02:30 CEST and 02:30 CET are in two different one-hour windows.
        assert_eq!(
            window(&c, Period::Hourly, "2026-10-25T00:30:00Z"),
            (utc("2026-10-25T00:00:00Z"), utc("2026-10-25T01:00:00Z"))
        );
        assert_eq!(
            window(&c, Period::Hourly, "2026-10-25T01:30:00Z"),
            (utc("2026-10-25T01:00:00Z"), utc("2026-10-25T02:00:00Z"))
        );
        let day = c.windows_covering(
            Period::Hourly,
            utc("2026-10-24T22:00:00Z"),
            utc("2026-10-25T23:00:00Z"),
        );
        assert_eq!(day.len(), 25);
    }

    #[test]
    fn new_york_spring_and_autumn() {
        let c = cal("America/New_York");
        // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
        assert_eq!(
            window(&c, Period::Daily, "2026-03-08T15:00:00Z"),
            (utc("2026-03-08T05:00:00Z"), utc("2026-03-09T04:00:00Z"))
        );
        // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC).
        assert_eq!(
            window(&c, Period::Daily, "2026-11-01T15:00:00Z"),
            (utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z"))
        );
        let hours = c.windows_covering(
            Period::Hourly,
            utc("2026-11-01T04:00:00Z"),
            utc("2026-11-02T05:00:00Z"),
        );
        assert_eq!(hours.len(), 25);
        // The week containing the autumn change (Mon 2026-10-26 .. Mon 2026-11-02) is 169 hours.
        let (start, end) = window(&c, Period::Weekly, "2026-10-30T12:00:00Z");
        assert_eq!(start, utc("2026-10-26T04:00:00Z"));
        assert_eq!(end, utc("2026-11-02T05:00:00Z"));
        assert_eq!((end - start).num_hours(), 169);
    }

    #[test]
    fn kolkata_hours_start_at_half_past_utc() {
        let c = cal("Asia/Kolkata");
        assert_eq!(
            window(&c, Period::Hourly, "2026-06-01T10:15:00Z"),
            (utc("2026-06-01T09:30:00Z"), utc("2026-06-01T10:30:00Z"))
        );
        assert_eq!(
            window(&c, Period::Daily, "2026-06-01T20:00:00Z"),
            (utc("2026-06-01T18:30:00Z"), utc("2026-06-02T18:30:00Z"))
        );
    }

    #[test]
    fn lord_howe_half_hour_shift_cuts_a_local_hour_in_two() {
        // 2026-04-05 02:00 LHDT (+11) becomes 01:30 LHST (+10:30) at 15:00 UTC.
        let c = cal("Australia/Lord_Howe");
        let hours = c.windows_covering(
            Period::Hourly,
            utc("2026-04-04T13:30:00Z"),
            utc("2026-04-04T17:00:00Z"),
        );
        let starts: Vec<_> = hours.iter().map(|w| w.start).collect();
        assert_eq!(
            starts,
            vec![
                utc("2026-04-04T13:00:00Z"), // 00:00 LHDT
                utc("2026-04-04T14:00:00Z"), // 01:00 LHDT
                utc("2026-04-04T15:00:00Z"), // 01:30 LHST: the rest of local hour 01
                utc("2026-04-04T15:30:00Z"), // 02:00 LHST
                utc("2026-04-04T16:30:00Z"), // 03:00 LHST
            ]
        );
    }

    #[test]
    fn a_skipped_midnight_starts_the_day_at_the_transition() {
        // Havana sets clocks from 00:00 to 01:00 on 2026-03-08 (05:00 UTC).
        let c = cal("America/Havana");
        assert_eq!(
            window(&c, Period::Daily, "2026-03-08T12:00:00Z"),
            (utc("2026-03-08T05:00:00Z"), utc("2026-03-09T04:00:00Z"))
        );
    }

    #[test]
    fn month_ends_and_leap_day() {
        let c = Calendar::default();
        assert_eq!(
            window(&c, Period::Monthly, "2028-02-29T23:00:00Z"),
            (utc("2028-02-01T00:00:00Z"), utc("2028-03-01T00:00:00Z"))
        );
        assert_eq!(
            window(&c, Period::Daily, "2028-02-29T23:00:00Z"),
            (utc("2028-02-29T00:00:00Z"), utc("2028-03-01T00:00:00Z"))
        );
        assert_eq!(
            window(&c, Period::Monthly, "2026-12-31T23:59:59Z"),
            (utc("2026-12-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"))
        );
        // A Berlin month starts at local midnight: 23:00 UTC the day before in winter.
        assert_eq!(
            window(
                &cal("Europe/Berlin"),
                Period::Monthly,
                "2026-12-31T23:30:00Z"
            ),
            (utc("2026-12-31T23:00:00Z"), utc("2027-01-31T23:00:00Z"))
        );
    }

    #[test]
    fn iso_weeks_across_a_year_boundary() {
        let c = Calendar::default();
        // 2026-12-31 is a Thursday: its ISO week (2026-W53) runs Mon 2026-12-28 .. Mon 2027-01-04.
        assert_eq!(
            window(&c, Period::Weekly, "2027-01-03T23:59:59Z"),
            (utc("2026-12-28T00:00:00Z"), utc("2027-01-04T00:00:00Z"))
        );
        let sunday = Calendar::new(Tz::UTC, Weekday::Sun);
        assert_eq!(
            window(&sunday, Period::Weekly, "2027-01-03T00:00:00Z"),
            (utc("2027-01-03T00:00:00Z"), utc("2027-01-10T00:00:00Z"))
        );
    }

    #[test]
    fn ranges_are_widened_to_whole_windows() {
        let c = cal("Europe/Berlin");
        let w = c.windows_covering(
            Period::Daily,
            utc("2026-06-10T08:00:00Z"), // 10:00 local
            utc("2026-06-12T08:00:00Z"),
        );
        assert_eq!(
            w.iter().map(|w| w.start).collect::<Vec<_>>(),
            vec![
                utc("2026-06-09T22:00:00Z"),
                utc("2026-06-10T22:00:00Z"),
                utc("2026-06-11T22:00:00Z")
            ]
        );
        // A `to` on a boundary is not widened further.
        let w = c.windows_covering(
            Period::Daily,
            utc("2026-06-09T22:00:00Z"),
            utc("2026-06-10T22:00:00Z"),
        );
        assert_eq!(w.len(), 1);
        assert!(c
            .windows_covering(
                Period::Daily,
                utc("2026-06-10T22:00:00Z"),
                utc("2026-06-09T22:00:00Z")
            )
            .is_empty());
    }

    /// Every instant lies in exactly one window, windows tile time without gaps, and boundaries are
    /// fixed points — checked every 17 minutes through a whole year in zones with odd rules.
    #[test]
    fn windows_tile_time_in_every_zone() {
        for tz in [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kolkata",
            "Australia/Lord_Howe",
            "America/Havana",
            "Pacific/Chatham",
        ] {
            let c = cal(tz);
            for period in Period::ALL {
                let mut t = utc("2026-01-01T00:00:00Z");
                while t < utc("2027-01-01T00:00:00Z") {
                    let w = c.window_containing(period, t);
                    assert!(w.contains(t), "{tz} {period} {t}: {w:?}");
                    assert_eq!(
                        c.window_start(period, w.start),
                        w.start,
                        "{tz} {period} {t}"
                    );
                    assert_eq!(c.window_start(period, w.end), w.end, "{tz} {period} {t}");
                    let len = (w.end - w.start).num_minutes();
                    let expected = match period {
                        // Chatham jumps from 02:45 to 03:45: local hour 03 lasts 15 minutes.
                        Period::Hourly => 15..=60,
                        Period::Daily => 23 * 60..=25 * 60,
                        Period::Weekly => (7 * 24 - 1) * 60..=(7 * 24 + 1) * 60,
                        Period::Monthly => (28 * 24 - 1) * 60..=(31 * 24 + 1) * 60,
                    };
                    assert!(expected.contains(&len), "{tz} {period} {w:?} is {len} min");
                    t += Duration::minutes(17);
                }
                // Stepping from window to window meets exactly the windows that contain instants.
                for w in c.windows_covering(
                    period,
                    utc("2026-01-01T00:00:00Z"),
                    utc("2027-01-01T00:00:00Z"),
                ) {
                    assert_eq!(c.window_containing(period, w.start), w, "{tz} {period}");
                    let last = w.end - Duration::milliseconds(1);
                    assert_eq!(c.window_containing(period, last), w, "{tz} {period}");
                }
            }
        }
    }

    #[test]
    fn periods_parse_case_insensitively_and_reject_others() {
        assert_eq!("Daily".parse::<Period>(), Ok(Period::Daily));
        assert_eq!(
            "yearly".parse::<Period>().unwrap_err().to_string(),
            "unknown period \"yearly\" (expected hourly, daily, weekly or monthly)"
        );
    }

    #[test]
    fn consecutive_windows_are_batched_together() {
        let cal = Calendar::default();
        let w = |t: &str| cal.window_containing(Period::Hourly, utc(t));
        let windows = [
            w("2026-03-09T01:00:00Z"),
            w("2026-03-09T02:00:00Z"),
            w("2026-03-09T05:00:00Z"),
        ];
        let runs = consecutive(&windows);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].len(), 2);
        assert!(consecutive(&[]).is_empty());
    }
}
