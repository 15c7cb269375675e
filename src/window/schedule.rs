//! Cron schedules, evaluated in the configured time zone.
//!
//! Six fields (`sec min hour day-of-month month day-of-week`, seconds required, `dom_and_dow`),
//! parsed with croner and evaluated in the zone's real, DST-aware local time: the daemon sleeps
//! until [`Schedule::next_after`] and fires the period then (see `daemon`).

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Parses a 6-field cron expression: `sec min hour day-of-month month day-of-week`.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(text)
            .map_err(|e| {
                format!(
                    "{text:?} is not a 6-field cron expression (sec min hour dom month dow, \
                     e.g. \"0 */5 * * * *\"): {e}"
                )
            })?;
        Ok(Schedule {
            text: text.to_owned(),
            cron,
        })
    }

    /// The first fire time strictly after `t`, in `tz`'s real (DST-aware) local time.
    ///
    /// Asked from inside the second pass of an autumn change's repeated hour, croner answers a
    /// local time of that hour as its *first* pass, which is before `t`; a scheduler taking that
    /// answer would fire at once, forever, without time moving (found by `tests/simulation.rs`).
    /// Such answers are stepped over: in the repeated hour a schedule fires in its first pass
    /// only, as documented.
    pub fn next_after(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = t;
        // A minute's steps through one repeated hour at most; more is a bug, not a schedule.
        for _ in 0..MAX_STEPS_BACK {
            let next = self
                .cron
                .find_next_occurrence(&from.with_timezone(&tz), false)
                .ok()?
                .with_timezone(&Utc);
            if next > t {
                return Some(next);
            }
            from = next.max(from) + chrono::Duration::seconds(1);
        }
        None
    }
}

/// How many answers at or before `t` [`Schedule::next_after`] steps over: every second of one
/// repeated hour, for a schedule firing every second.
const MAX_STEPS_BACK: usize = 3_700;

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Schedule, String> {
        Schedule::parse(text)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(schedule: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(schedule).unwrap();
        let tz: Tz = tz.parse().unwrap();
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = s.next_after(tz, t).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn a_local_time_schedule_follows_the_zone_across_dst() {
        // 04:00 Berlin: 03:00 UTC before the spring change (2026-03-29), 02:00 UTC after.
        assert_eq!(
            fires("0 0 4 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
            vec![
                "2026-03-28T03:00:00+00:00",
                "2026-03-29T02:00:00+00:00",
                "2026-03-30T02:00:00+00:00"
            ]
        );
        // In autumn (2026-10-25) back to 03:00 UTC.
        assert_eq!(
            fires("0 0 4 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            vec!["2026-10-25T03:00:00+00:00", "2026-10-26T03:00:00+00:00"]
        );
    }

    #[test]
    fn croner_skips_the_repeated_local_hour_when_clocks_go_back() {
        // Berlin's local 02:00-03:00 happens twice on 2026-10-25; croner fires only in the first
        // (00:00-01:00 UTC), so a `*/5` schedule is silent from 01:00 to 02:00 UTC. Nothing
        // depends on it: the 01:00 UTC window is refreshed by the next run's lookback, and the
        // daemon's watermark, not the tick count, decides what is complete.
        let times = fires("0 */5 * * * *", "Europe/Berlin", "2026-10-25T00:50:00Z", 3);
        assert_eq!(
            times,
            vec![
                "2026-10-25T00:55:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T02:05:00+00:00"
            ]
        );
    }

    #[test]
    fn the_defaults_parse_and_nonsense_is_rejected() {
        for text in [
            "0 */5 * * * *",
            "30 */15 * * * *",
            "0 7 * * * *",
            "0 9 * * * *",
        ] {
            assert_eq!(Schedule::parse(text).unwrap().to_string(), text);
        }
        let err = Schedule::parse("*/5 * * * *").unwrap_err();
        assert!(err.contains("not a 6-field cron expression"), "{err}");
    }

    #[test]
    fn asked_from_the_second_pass_of_a_repeated_hour_the_next_fire_is_still_later() {
        // 2026-10-25, Berlin: 02:00-03:00 local twice, 00:00-01:00 UTC (CEST) then 01:00-02:00
        // UTC (CET). From 02:10 CET (01:10 UTC) croner names 02:20 of the first pass.
        let s = Schedule::parse("0 */20 * * * *").unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        for from in [
            "2026-10-25T01:10:00Z",
            "2026-10-25T01:40:00Z",
            "2026-10-25T01:59:59Z",
        ] {
            let next = s.next_after(tz, utc(from)).unwrap();
            assert_eq!(next, utc("2026-10-25T02:00:00Z"), "from {from}");
        }
        assert_eq!(
            fires("0 */20 * * * *", "Europe/Berlin", "2026-10-25T00:30:00Z", 5),
            [
                "2026-10-25T00:40:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T02:20:00+00:00",
                "2026-10-25T02:40:00+00:00",
                "2026-10-25T03:00:00+00:00",
            ]
        );
    }
}
