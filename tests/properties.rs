//! Property tests (#23) of the pure parts where a counterexample is cheap to find: windows of
//! every period in every IANA zone tile time without gap or overlap; `redact_uri` never returns
//! a password; the configuration parser never panics, whatever TOML it is given.
//!
//! `PROPTEST_CASES=<n>` runs more cases than the default 256 per property.

use chrono::{DateTime, Duration, Utc, Weekday};
use chrono_tz::{Tz, TZ_VARIANTS};
use proptest::prelude::*;
use vcmetrics::config::{from_toml, redact_uri};
use vcmetrics::window::{Calendar, Period};

/// Any IANA zone chrono-tz knows.
fn zone() -> impl Strategy<Value = Tz> {
    (0..TZ_VARIANTS.len()).prop_map(|i| TZ_VARIANTS[i])
}

fn weekday() -> impl Strategy<Value = Weekday> {
    (0u8..7).prop_map(|d| Weekday::try_from(d).unwrap())
}

fn period() -> impl Strategy<Value = Period> {
    (0..Period::ALL.len()).prop_map(|i| Period::ALL[i])
}

/// Any millisecond from 1900 to 2200 (zones' histories begin and end in it).
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (-2_208_988_800_000i64..7_258_118_400_000)
        .prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap())
}

proptest! {
    /// The window containing `t` contains it, its successor starts where it ends and contains
    /// its own start, and its predecessor ends where it starts: no gap, no overlap.
    #[test]
    fn windows_tile_time_in_every_zone(
        tz in zone(),
        week_start in weekday(),
        period in period(),
        t in instant(),
    ) {
        let calendar = Calendar::new(tz, week_start);
        let w = calendar.window_containing(period, t);
        prop_assert!(w.start <= t && t < w.end, "{tz} {period}: {t} not in {w:?}");
        let next = calendar.window_containing(period, w.end);
        prop_assert_eq!(next.start, w.end, "{} {}: gap or overlap after {:?}", tz, period, w);
        let before = calendar.window_containing(period, w.start - Duration::milliseconds(1));
        prop_assert_eq!(before.end, w.start, "{} {}: gap or overlap before {:?}", tz, period, w);
        prop_assert_eq!(calendar.previous_window_start(period, w.start), before.start);
        // Every instant of the window belongs to it.
        let inside = w.start + (w.end - w.start) / 2;
        prop_assert_eq!(calendar.window_containing(period, inside), w);
    }

    /// Whatever the URI looks like, the password between the user's `:` and the `@` is gone.
    #[test]
    fn redact_uri_never_returns_the_password(
        scheme in prop_oneof![Just("mongodb".to_owned()), Just("mongodb+srv".to_owned()), "[a-z+]{0,12}"],
        user in "[^:@]{0,12}",
        password in "[^@]{1,24}",
        hosts in ".{0,40}",
    ) {
        // A marker no generated part can contain, so finding it means the password leaked.
        let secret = format!("\u{1F511}{password}");
        let uri = format!("{scheme}://{user}:{secret}@{hosts}");
        let redacted = redact_uri(&uri);
        prop_assert!(!redacted.contains('\u{1F511}'), "{uri} -> {redacted}");
    }

    /// Any text at all: an error or a configuration, never a panic.
    #[test]
    fn the_configuration_parser_never_panics_on_any_text(text in ".{0,200}") {
        let _ = from_toml(&text, &[]);
    }

    /// TOML built from the real keys with values of every type: an error naming a key, or a
    /// configuration, never a panic.
    #[test]
    fn the_configuration_parser_never_panics_on_any_value_of_any_key(
        entries in prop::collection::vec((key(), value()), 0..8),
    ) {
        let mut text = String::new();
        for (key, value) in entries {
            text.push_str(&format!("{key} = {value}\n"));
        }
        let _ = from_toml(&text, &[]);
    }
}

/// Every key of the configuration, dotted as TOML allows, and one that does not exist.
fn key() -> impl Strategy<Value = String> {
    use vcmetrics::config::{ARCHIVE_KEYS, LATE_EVENTS_KEYS, PERIOD_KEYS, TOP_LEVEL_KEYS};
    let mut keys: Vec<String> = TOP_LEVEL_KEYS.iter().map(|k| (*k).to_owned()).collect();
    keys.extend(LATE_EVENTS_KEYS.iter().map(|k| format!("late_events.{k}")));
    keys.extend(ARCHIVE_KEYS.iter().map(|k| format!("archive.{k}")));
    for period in ["hourly", "daily", "weekly", "monthly", "yearly"] {
        keys.extend(PERIOD_KEYS.iter().map(|k| format!("periods.{period}.{k}")));
    }
    keys.push("no_such_key".to_owned());
    (0..keys.len()).prop_map(move |i| keys[i].clone())
}

/// TOML values of every type, including extreme numbers and odd strings.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("TOML has no NaN literal here", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,30}".prop_map(|s| format!("{s:?}")),
        "[0-9]{1,12}(ms|s|m|h|d|w|y|x)?".prop_map(|s| format!("{s:?}")),
        Just("\"*/0 * * * * *\"".to_owned()),
        Just("\"9999-12-31T23:59:59Z\"".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ]
}
