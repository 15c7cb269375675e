//! Instants as people write them on the command line, resolved in the configured time zone.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use super::Calendar;

/// An instant that could not be read, with the flag it came from and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadInstant(pub String);

/// Parses an instant given on the command line: RFC 3339, `now`, `now-<duration>` (`now-30d`), or
/// a date or date-time without offset, which is local time in `tz`.
pub fn parse_instant(flag: &str, s: &str, tz: Tz) -> Result<DateTime<Utc>, BadInstant> {
    if let Some(rest) = s.strip_prefix("now") {
        let ago = match rest.strip_prefix('-') {
            Some(d) => humantime::parse_duration(d)
                .ok()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .ok_or_else(|| {
                    BadInstant(format!(
                        "{flag} {s:?}: {d:?} is not a duration (e.g. now-30d)"
                    ))
                })?,
            None if rest.is_empty() => chrono::Duration::zero(),
            None => {
                return Err(BadInstant(format!(
                    "{flag} {s:?} is not a time (try now or now-30d)"
                )))
            }
        };
        return Utc::now()
            .checked_sub_signed(ago)
            .ok_or_else(|| BadInstant(format!("{flag} {s:?} is too far in the past")));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        // A date means that day's start, also where a clock change skips its midnight.
        return Ok(Calendar::new(tz, Weekday::Mon).day_start(date));
    }
    let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .map_err(|_| {
            BadInstant(format!(
                "{flag} {s:?} is not a time (expected 2026-03-01T10:00:00Z, 2026-03-01T10:00 or 2026-03-01)"
            ))
        })?;
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            BadInstant(format!(
                "{flag} {s:?} does not exist in {tz} (skipped by a clock change)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_in_three_forms() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let expect = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_instant("--from", "2026-03-01T10:00:00Z", berlin).unwrap(),
            expect("2026-03-01T10:00:00Z")
        );
        assert_eq!(
            parse_instant("--from", "2026-03-01T10:00", berlin).unwrap(),
            expect("2026-03-01T09:00:00Z")
        );
        assert_eq!(
            parse_instant("--from", "2026-07-01", berlin).unwrap(),
            expect("2026-06-30T22:00:00Z")
        );
        let err = parse_instant("--from", "yesterday", berlin).unwrap_err();
        assert_eq!(crate::error::Error::from(err.clone()).exit_code(), 2);
        assert!(err
            .to_string()
            .starts_with("--from \"yesterday\" is not a time"));
        assert!(parse_instant("--to", "2026-03-29T02:30", berlin).is_err());
        let ago = Utc::now() - parse_instant("--from", "now-2h", berlin).unwrap();
        assert!((ago - chrono::Duration::hours(2)).num_seconds().abs() <= 1);
        assert!(parse_instant("--from", "now-soon", berlin).is_err());
        // Havana skips midnight on 2026-03-08: the day starts at the transition.
        let havana: Tz = "America/Havana".parse().unwrap();
        assert_eq!(
            parse_instant("--from", "2026-03-08", havana).unwrap(),
            expect("2026-03-08T05:00:00Z")
        );
    }
}
