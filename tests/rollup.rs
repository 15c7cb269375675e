//! `rollup::process` against the shared in-memory store: chunking, chunks in flight, and what
//! each window's report says. The MongoDB side of a roll-up is covered by the pipeline
//! conformance suite and the `MONGODB_URI` tests.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use support::fake_store::{window_document, FakeStore};
use vcmetrics::config::{from_toml, Config};
use vcmetrics::metrics_document::FieldDiff;
use vcmetrics::rollup::{process, Batch, Mode, Outcome, Summary};
use vcmetrics::window::{Period, Window};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn config() -> Config {
    from_toml("", &[]).unwrap()
}

fn batch(windows: &[Window], mode: Mode) -> Batch<'_> {
    Batch {
        period: Period::Hourly,
        windows,
        now: utc("2026-01-02T00:00:00Z"),
        mode,
        chunk_windows: 2,
        fence: None,
    }
}

fn hours(from: &str, to: &str) -> Vec<Window> {
    config()
        .calendar
        .windows_covering(Period::Hourly, utc(from), utc(to))
}

/// Stores a window's document as if an earlier run had written it with `calls` calls.
fn stored(store: &FakeStore, start: &str, calls: i32) {
    store.with(|s| {
        s.docs.insert(
            ("hourly".to_owned(), utc(start)),
            window_document("hourly", utc(start), calls),
        )
    });
}

fn calls(store: &FakeStore, at: &[&str]) {
    store.with(|s| s.calls.extend(at.iter().map(|t| utc(t))));
}

#[tokio::test]
async fn write_mode_rolls_up_bounded_chunks_in_order_and_reports_changes() {
    let store = FakeStore::default();
    calls(&store, &["2026-01-01T00:10:00Z"]);
    calls(&store, &["2026-01-01T01:01:00Z"; 5]);
    stored(&store, "2026-01-01T01:00:00Z", 4);
    stored(&store, "2026-01-01T02:00:00Z", 0);
    let windows = hours("2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z");
    let mut progress = Vec::new();
    let reports = process(&store, &config(), batch(&windows, Mode::Write), |n| {
        progress.push(n)
    })
    .await
    .unwrap();
    let chunks: Vec<usize> = store.with(|s| s.aggregates.iter().map(|a| a.windows.len()).collect());
    assert_eq!(chunks, [2, 1]);
    assert_eq!(progress, [2, 3]);
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

#[tokio::test(start_paused = true)]
async fn chunks_in_flight_overlap_and_reports_stay_in_window_order() {
    let store = FakeStore::default();
    store.with(|s| s.aggregate_time = Duration::from_secs(10));
    let windows = hours("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z");
    let started = tokio::time::Instant::now();
    let reports = process(&store, &config(), batch(&windows, Mode::Write), |_| {})
        .await
        .unwrap();
    // Three chunks of two, two at a time: 20 s, not 30 s.
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    let starts: Vec<DateTime<Utc>> = reports.iter().map(|r| r.window.start).collect();
    assert_eq!(starts, windows.iter().map(|w| w.start).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_chunk_fails_the_batch() {
    let store = FakeStore::default();
    store.with(|s| s.failing_aggregates = 1);
    let windows = hours("2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z");
    let err = process(&store, &config(), batch(&windows, Mode::Write), |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("aggregate"), "{err}");
}

#[tokio::test]
async fn preview_writes_nothing_and_zero_fills_windows_without_events() {
    let store = FakeStore::default();
    calls(&store, &["2026-01-01T00:10:00Z", "2026-01-01T00:20:00Z"]);
    stored(&store, "2026-01-01T01:00:00Z", 3);
    let windows = hours("2026-01-01T00:00:00Z", "2026-01-01T02:00:00Z");
    let reports = process(&store, &config(), batch(&windows, Mode::Preview), |_| {})
        .await
        .unwrap();
    assert_eq!(store.with(|s| s.previews.len()), 1);
    assert!(store.with(|s| s.aggregates.is_empty()), "nothing rolled up");
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
    assert_eq!(store.total_calls("hourly", "2026-01-01T01:00:00Z"), Some(3));
}

/// Issue 12: a chunk that starts before the archive's reach reads the archive too; one that
/// starts after it does not (the double counts archived calls only when read).
#[tokio::test]
async fn chunks_before_the_archive_reach_count_archived_events() {
    let store = FakeStore::default();
    calls(&store, &["2026-01-01T02:30:00Z"]);
    store.with(|s| {
        s.archive = vec![utc("2026-01-01T00:30:00Z"), utc("2026-01-01T00:40:00Z")];
        s.archive_state.reach = Some(utc("2026-01-01T01:00:00Z"));
    });
    let windows = hours("2026-01-01T00:00:00Z", "2026-01-01T03:00:00Z");
    process(&store, &config(), batch(&windows, Mode::Write), |_| {})
        .await
        .unwrap();
    assert_eq!(store.total_calls("hourly", "2026-01-01T00:00:00Z"), Some(2));
    assert_eq!(store.total_calls("hourly", "2026-01-01T02:00:00Z"), Some(1));
    // The second chunk (02:00) starts after the reach: it never reads the archive.
    store.with(|s| s.archive.push(utc("2026-01-01T02:10:00Z")));
    process(&store, &config(), batch(&windows, Mode::Write), |_| {})
        .await
        .unwrap();
    assert_eq!(store.total_calls("hourly", "2026-01-01T02:00:00Z"), Some(1));
}

/// A chunk read while the archive moved events (its `seq` changed) is read again, after a
/// growing wait; a chunk that kept meeting a moving archive ends the command as busy (exit 5).
#[tokio::test(start_paused = true)]
async fn a_chunk_read_while_the_archive_moved_events_is_read_again_then_busy() {
    let store = FakeStore::default();
    calls(&store, &["2026-01-01T00:10:00Z"]);
    store.with(|s| {
        s.archive_state.reach = Some(utc("2026-01-02T00:00:00Z"));
        s.archive_moves_during_reads = 2;
    });
    let windows = hours("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z");
    let started = tokio::time::Instant::now();
    let reports = process(&store, &config(), batch(&windows, Mode::Preview), |_| {})
        .await
        .unwrap();
    assert_eq!(store.with(|s| s.previews.len()), 3, "read twice more");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1 + 2),
        "waits of 1 s, then 2 s"
    );
    assert_eq!(reports[0].outcome, Outcome::Created);

    // A chunk after the reach is not concerned by moves: one read.
    store.with(|s| {
        s.previews.clear();
        s.archive_state.reach = Some(utc("2026-01-01T00:00:00Z"));
        s.archive_moves_during_reads = 1;
    });
    process(&store, &config(), batch(&windows, Mode::Preview), |_| {})
        .await
        .unwrap();
    assert_eq!(store.with(|s| s.previews.len()), 1);

    store.with(|s| {
        s.archive_state.reach = Some(utc("2026-01-02T00:00:00Z"));
        s.archive_moves_during_reads = 100;
    });
    let err = process(&store, &config(), batch(&windows, Mode::Write), |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 5);
    assert!(err.to_string().contains("8 attempts"), "{err}");
}
