//! Equal quanta of a chunk's span: how an event finds its window inside a pipeline.

use chrono::{DateTime, Duration, Utc};

use super::Window;

/// Most entries a [`QuantumTable`] may have: the table travels inside every scan of a chunk
/// (about 15 bytes an entry), so a chunk whose windows need more is split by the planner.
pub const MAX_QUANTA: usize = 10_000;

/// A lookup table from instants to windows that a pipeline can evaluate with arithmetic only:
/// the span of consecutive windows is cut into equal quanta of `quantum_ms` (the greatest
/// common divisor of the window boundaries' offsets from the first start), and `starts[i]` is
/// the start of the window that holds quantum `i`. An instant `t` of the span lies in the window
/// `starts[(t - first start) / quantum_ms]` (integer division).
///
/// Every window boundary is a multiple of the quantum, so no quantum straddles two windows. For
/// an hourly chunk the quantum is an hour, for daily windows in a DST zone an hour, for a single
/// window the whole window; only an odd historical offset (local mean time, seconds) makes it
/// small, and then [`QuantumTable::len_for`] tells the planner to split the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantumTable {
    pub quantum_ms: i64,
    pub starts: Vec<DateTime<Utc>>,
}

impl QuantumTable {
    /// How many quanta `windows` (consecutive, oldest first) need; 0 for none.
    pub fn len_for(windows: &[Window]) -> usize {
        match Self::quantum_ms(windows) {
            Some((quantum, span)) => usize::try_from(span / quantum).unwrap_or(usize::MAX),
            None => 0,
        }
    }

    /// The table of consecutive windows; `None` for no windows.
    pub fn of(windows: &[Window]) -> Option<QuantumTable> {
        let (quantum_ms, _) = Self::quantum_ms(windows)?;
        let first = windows.first()?.start;
        let mut starts = Vec::with_capacity(Self::len_for(windows));
        for w in windows {
            let quanta = (w.end - w.start).num_milliseconds() / quantum_ms;
            starts.extend(std::iter::repeat_n(w.start, usize::try_from(quanta).ok()?));
        }
        debug_assert_eq!(
            first + Duration::milliseconds(quantum_ms * starts.len() as i64),
            windows.last()?.end
        );
        Some(QuantumTable { quantum_ms, starts })
    }

    /// True when every window is one quantum (all windows equally long): an event's window start
    /// is then `first + floor((t - first) / quantum) * quantum`, without the table.
    pub fn is_uniform(&self) -> bool {
        self.starts.windows(2).all(|pair| pair[0] != pair[1])
    }

    /// The quantum and the whole span, in milliseconds.
    fn quantum_ms(windows: &[Window]) -> Option<(i64, i64)> {
        let first = windows.first()?.start;
        let span = (windows.last()?.end - first).num_milliseconds();
        let quantum = windows
            .iter()
            .fold(span, |g, w| gcd(g, (w.end - first).num_milliseconds()));
        // Windows are at least a second long, so the gcd is positive.
        Some((quantum.max(1), span))
    }
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{Calendar, Period};
    use chrono::Weekday;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cal(tz: &str) -> Calendar {
        Calendar::new(tz.parse().unwrap(), Weekday::Mon)
    }

    #[test]
    fn a_quantum_table_maps_every_instant_of_its_span_to_its_window() {
        let cases = [
            (
                "UTC",
                Period::Hourly,
                "2026-03-01T00:00:00Z",
                "2026-03-08T00:00:00Z",
                3_600_000,
            ),
            (
                "UTC",
                Period::Monthly,
                "2026-01-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
                86_400_000,
            ),
            (
                "Europe/Berlin",
                Period::Daily,
                "2026-03-20T00:00:00Z",
                "2026-04-05T00:00:00Z",
                3_600_000,
            ),
            (
                "Europe/Berlin",
                Period::Hourly,
                "2026-10-24T00:00:00Z",
                "2026-10-27T00:00:00Z",
                3_600_000,
            ),
            (
                "Asia/Kolkata",
                Period::Daily,
                "2026-03-01T00:00:00Z",
                "2026-03-10T00:00:00Z",
                86_400_000,
            ),
            (
                "Australia/Lord_Howe",
                Period::Daily,
                "2026-03-30T00:00:00Z",
                "2026-04-10T00:00:00Z",
                1_800_000,
            ),
            (
                "Pacific/Chatham",
                Period::Hourly,
                "2026-09-26T00:00:00Z",
                "2026-09-28T00:00:00Z",
                900_000,
            ),
        ];
        for (tz, period, from, to, quantum) in cases {
            let c = cal(tz);
            let windows = c.windows_covering(period, utc(from), utc(to));
            let table = QuantumTable::of(&windows).unwrap();
            assert_eq!(table.quantum_ms, quantum, "{tz} {period}");
            // Uniform exactly when every window is as long as the first.
            let equal = windows
                .iter()
                .all(|w| w.end - w.start == windows[0].end - windows[0].start);
            assert_eq!(table.is_uniform(), equal, "{tz} {period}");
            assert_eq!(table.starts.len(), QuantumTable::len_for(&windows));
            let first = windows[0].start;
            let mut t = first;
            while t < windows.last().unwrap().end {
                let i = ((t - first).num_milliseconds() / table.quantum_ms) as usize;
                assert_eq!(
                    table.starts[i],
                    c.window_start(period, t),
                    "{tz} {period} {t}"
                );
                if table.is_uniform() {
                    let arithmetic = first + Duration::milliseconds(i as i64 * table.quantum_ms);
                    assert_eq!(arithmetic, table.starts[i], "{tz} {period} {t}");
                }
                t += Duration::minutes(7) + Duration::seconds(13);
            }
            for w in &windows {
                let last_ms = w.end - Duration::milliseconds(1);
                let i = ((last_ms - first).num_milliseconds() / table.quantum_ms) as usize;
                assert_eq!(
                    table.starts[i], w.start,
                    "{tz} {period} last ms of {}",
                    w.start
                );
            }
        }
        assert_eq!(QuantumTable::of(&[]), None);
        let one = cal("Europe/Berlin").windows_covering(
            Period::Monthly,
            utc("2026-03-10T00:00:00Z"),
            utc("2026-03-11T00:00:00Z"),
        );
        assert_eq!(QuantumTable::of(&one).unwrap().starts, vec![one[0].start]);
        assert!(QuantumTable::of(&one).unwrap().is_uniform());
        let berlin = |period, from, to| {
            QuantumTable::of(&cal("Europe/Berlin").windows_covering(period, utc(from), utc(to)))
                .unwrap()
        };
        // Hours are an hour long even on the day of a DST change; that day is 25 hours.
        let autumn = ("2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
        assert!(berlin(Period::Hourly, autumn.0, autumn.1).is_uniform());
        assert!(!berlin(Period::Daily, autumn.0, autumn.1).is_uniform());
    }
}
