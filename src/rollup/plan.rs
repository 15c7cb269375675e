//! Which windows a command-line range covers, how they are cut into chunks, and the guard that
//! keeps windows the TTL has thinned from being rebuilt.

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::{Error, Result};
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

/// Cuts consecutive windows into chunks: at most `chunk_windows`
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

/// The span of a list of windows, for messages.
pub fn describe(windows: &[Window]) -> String {
    match (windows.first(), windows.last()) {
        (Some(first), Some(last)) => {
            format!("{} .. {}", first.start.to_rfc3339(), last.end.to_rfc3339())
        }
        _ => "(no windows)".to_owned(),
    }
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
        "{thinned} {} window(s) start before the retention horizon {}, from which the audit \
         log (with its archive, once `vcmetrics archive` has run) holds every event: the TTL has \
         deleted part of their events, so rebuilding them would undercount; narrow --from or \
         pass --force",
        plan.period,
        horizon.to_rfc3339()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::retention::horizon;
    use crate::config::from_toml;
    use std::time::Duration;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn config() -> Config {
        from_toml("", &[]).unwrap()
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

    #[test]
    fn windows_before_the_horizon_are_refused_unless_forced() {
        let now = utc("2026-01-10T00:00:00Z");
        let horizon = horizon(Some(Duration::from_secs(86_400)), now);
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
}
