//! The daemon under paused tokio time, against a fault-injecting double of the `Store` trait.
//!
//! Time: tokio's clock is paused and advances whenever every task waits, so a test "sleeps"
//! through days in milliseconds; the daemon's wall clock is derived from it (`TestClock`).
//! The double records which windows every aggregate covered and computes `totalCalls` from the
//! call events it holds, so late events and catch-up are visible in the documents.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use support::fake_store::FakeStore;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vcmetrics::clock::Clock;
use vcmetrics::config::{from_toml, Config};
use vcmetrics::daemon::records::{RunOutcome, SkipReason};
use vcmetrics::daemon::status::Status;
use vcmetrics::daemon::Daemon;
use vcmetrics::error::Result;
use vcmetrics::window::Period;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Wall-clock time that moves with tokio's (paused) clock.
#[derive(Clone)]
struct TestClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TestClock {
    fn starting_at(t: &str) -> Self {
        TestClock {
            base: utc(t),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(self.start.elapsed()).unwrap()
    }
}

/// A configuration where only the periods a test names have a real schedule.
fn config(instance: &str, toml_text: &str) -> Config {
    from_toml(toml_text, &[("VCMETRICS_INSTANCE_ID", instance)]).unwrap()
}

const RARE: &str = "0 0 0 1 1 *"; // New Year only: keeps a period out of the way

/// Every schedule rare: ticks come only from the test's extra ticks.
fn ticks_by_hand(extra: &str) -> String {
    format!(
        "{extra}\n[periods.hourly]\nschedule = \"{RARE}\"\n\
         [periods.daily]\nschedule = \"{RARE}\"\n[periods.weekly]\nschedule = \"{RARE}\"\n\
         [periods.monthly]\nschedule = \"{RARE}\"\n"
    )
}

/// As [`ticks_by_hand`], with the hourly period's regular runs (whole windows, lookback) instead
/// of incremental ones: what the longer periods always do, tested on hours.
fn regular_ticks_by_hand(extra: &str) -> String {
    format!(
        "{extra}\n[periods.hourly]\nschedule = \"{RARE}\"\nincremental = false\n\
         [periods.daily]\nschedule = \"{RARE}\"\n[periods.weekly]\nschedule = \"{RARE}\"\n\
         [periods.monthly]\nschedule = \"{RARE}\"\n"
    )
}

struct Running {
    status: Arc<Status>,
    ticks: mpsc::Sender<Period>,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<Result<()>>,
}

fn start(store: &Arc<FakeStore>, config: Config, clock: TestClock) -> Running {
    let status = Arc::new(Status::new().unwrap());
    let (ticks, tick_rx) = mpsc::channel(16);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let daemon = Daemon::new(store.clone(), Arc::new(config), clock, status.clone());
    let handle = tokio::spawn(daemon.run(tick_rx, shutdown_rx));
    Running {
        status,
        ticks,
        shutdown,
        handle,
    }
}

async fn sleep(d: Duration) {
    tokio::time::sleep(d).await;
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// A sample of the daemon's own metrics, as a scrape would read it; 0 when absent.
fn metric(status: &Status, name: &str, labels: &[(&str, &str)]) -> f64 {
    status
        .registry()
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .find(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map_or(0.0, |m| match m.get_counter().as_ref() {
            Some(counter) => counter.value(),
            None => m.get_gauge().value(),
        })
}

fn runs(status: &Status, period: Period, outcome: RunOutcome) -> u64 {
    metric(
        status,
        "vcmetrics_runs_total",
        &[("period", period.as_str()), ("outcome", outcome.as_str())],
    ) as u64
}

fn skipped(status: &Status, period: Period, reason: SkipReason) -> u64 {
    metric(
        status,
        "vcmetrics_ticks_skipped_total",
        &[("period", period.as_str()), ("reason", reason.as_str())],
    ) as u64
}

#[tokio::test(start_paused = true)]
async fn fire_times_follow_the_zone_across_dst_changes() {
    // Daily at 04:00 Berlin, from the schedule alone (no extra ticks).
    let store = Arc::new(FakeStore::default());
    let toml_text = format!(
        "timezone = \"Europe/Berlin\"\nstart_from = \"2026-03-26T23:00:00Z\"\n\
         [periods.daily]\nschedule = \"0 0 4 * * *\"\n[periods.hourly]\nschedule = \"{RARE}\"\n\
         [periods.weekly]\nschedule = \"{RARE}\"\n[periods.monthly]\nschedule = \"{RARE}\"\n"
    );
    let daemon = start(
        &store,
        config("a", &toml_text),
        TestClock::starting_at("2026-03-27T12:00:00Z"),
    );
    drop(daemon.ticks);
    sleep(Duration::from_secs(4 * 86_400)).await;

    let daily = store.aggregates("daily");
    let fired: Vec<String> = daily
        .iter()
        .map(|a| a.at.format("%d %H:%M").to_string())
        .collect();
    // At start, then: 04:00 CET is 03:00 UTC; from 2026-03-29 04:00 CEST is 02:00 UTC: on
    // time, once each.
    let expected = [
        "2026-03-27T12:00:00Z",
        "2026-03-28T03:00:00Z",
        "2026-03-29T02:00:00Z",
        "2026-03-30T02:00:00Z",
        "2026-03-31T02:00:00Z",
    ];
    let at: Vec<DateTime<Utc>> = daily.iter().map(|a| a.at).collect();
    assert_eq!(at, expected.map(utc), "{fired:?}");
    // The run after the change covers the 23-hour day 2026-03-29 as its own window.
    let after_change = &daily[3].windows;
    assert!(after_change.contains(&utc("2026-03-28T23:00:00Z")));
    assert!(after_change.contains(&utc("2026-03-29T22:00:00Z")));
    assert_eq!(
        store.with(|s| s.watermarks[&Period::Daily]),
        utc("2026-03-30T22:00:00Z")
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_schedule_fires_twice_in_the_repeated_hour_of_an_autumn_change() {
    // Berlin's local 02:00-03:00 happens twice on 2026-10-25 (00:00-01:00 and 01:00-02:00 UTC).
    // Hourly at :30 fires at the first 02:30 only; daily at 04:00 moves from 02:00 to 03:00 UTC.
    let store = Arc::new(FakeStore::default());
    let toml_text = format!(
        "timezone = \"Europe/Berlin\"\nstart_from = \"2026-10-23T22:00:00Z\"\n\
         [periods.hourly]\nschedule = \"0 30 * * * *\"\nincremental = false\n[periods.daily]\nschedule = \"0 0 4 * * *\"\n\
         [periods.weekly]\nschedule = \"{RARE}\"\n[periods.monthly]\nschedule = \"{RARE}\"\n"
    );
    let daemon = start(
        &store,
        config("a", &toml_text),
        TestClock::starting_at("2026-10-24T23:45:00Z"),
    );
    sleep(Duration::from_secs(2 * 86_400)).await;
    let at =
        |period| -> Vec<DateTime<Utc>> { store.aggregates(period).iter().map(|a| a.at).collect() };
    let hourly = at("hourly");
    assert_eq!(
        &hourly[..4],
        [
            "2026-10-24T23:45:00Z", // at start
            "2026-10-25T00:30:00Z",
            "2026-10-25T02:30:00Z",
            "2026-10-25T03:30:00Z"
        ]
        .map(utc)
    );
    assert_eq!(
        hourly.len(),
        48,
        "at start, then every hour once, but the repeated one"
    );
    assert_eq!(
        at("daily"),
        [
            "2026-10-24T23:45:00Z",
            "2026-10-25T03:00:00Z",
            "2026-10-26T03:00:00Z"
        ]
        .map(utc)
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// Issue 14, item 5: a daemon that never succeeds still exports what the alerts need: the
/// data lag (from `start_from` until a watermark is known), last success 0, and every error kind.
#[tokio::test(start_paused = true)]
async fn a_daemon_that_never_succeeds_exports_lag_last_success_and_error_kinds() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.down = true);
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    let daemon = start(
        &store,
        config("a", &ticks_by_hand("start_from = \"2026-03-09T00:00:00Z\"")),
        clock.clone(),
    );
    sleep(minutes(10)).await;
    daemon.status.update_gauges(clock.now());
    let lag = |period: &str| {
        metric(
            &daemon.status,
            "vcmetrics_data_lag_seconds",
            &[("period", period)],
        )
    };
    // 2026-03-09T00:00 to 2026-03-10T12:17.
    assert_eq!(lag("hourly"), (36 * 3600 + 17 * 60) as f64);
    assert!(
        lag("monthly") > lag("hourly"),
        "monthly counts from the month's start"
    );
    for period in Period::ALL {
        let last_success = daemon
            .status
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "vcmetrics_last_success_timestamp_seconds")
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.value() == period.as_str()))
            .count();
        assert_eq!(last_success, 1, "{period}: last success exported");
        for kind in vcmetrics::error::Error::METRIC_LABELS {
            let series = daemon
                .status
                .registry()
                .gather()
                .iter()
                .filter(|f| f.name() == "vcmetrics_run_errors_total")
                .flat_map(|f| f.get_metric())
                .filter(|m| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "kind" && l.value() == kind)
                        && m.get_label()
                            .iter()
                            .any(|l| l.name() == "period" && l.value() == period.as_str())
                })
                .count();
            assert_eq!(series, 1, "{period} {kind}");
        }
    }
    // Once the stored watermark is known it replaces the assumed start, even an older one (read
    // by a standby here, so that no run of its own moves it).
    store.with(|s| {
        s.down = false;
        s.lease = Some(("b".to_owned(), utc("2027-01-01T00:00:00Z")));
        s.watermarks
            .insert(Period::Hourly, utc("2026-03-01T00:00:00Z"));
    });
    sleep(minutes(2)).await;
    daemon.status.update_gauges(clock.now());
    assert_eq!(
        daemon.status.watermark(Period::Hourly),
        Some(utc("2026-03-01T00:00:00Z"))
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// Issue 14, item 3: with a MongoDB that never answers, the signal stops every background loop
/// at once (a ping, lease renewal or watermark read in flight is dropped); nothing waits for the
/// server. Before, each waited for its operation (the driver's 10 s server selection).
#[tokio::test(start_paused = true)]
async fn shutdown_with_mongodb_not_answering_stops_every_loop_at_the_signal() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.hang = true);
    let daemon = start(
        &store,
        config("a", &ticks_by_hand("")),
        TestClock::starting_at("2026-03-10T12:07:00Z"),
    );
    sleep(minutes(3)).await;
    let signalled = tokio::time::Instant::now();
    daemon.shutdown.send(true).unwrap();
    tokio::time::timeout(minutes(10), daemon.handle)
        .await
        .expect("the daemon stops without waiting for MongoDB")
        .unwrap()
        .unwrap();
    assert_eq!(signalled.elapsed(), Duration::ZERO, "stopped at the signal");
}

#[tokio::test(start_paused = true)]
async fn catch_up_after_a_three_day_outage_refreshes_exactly_the_missing_windows() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| {
        s.watermarks
            .insert(Period::Hourly, utc("2026-03-10T12:00:00Z"));
    });
    // Down for three days: the daemon starts again at 12:07 on the 13th, and catches up at once,
    // with no tick: two runs back to back.
    let daemon = start(
        &store,
        config("a", &regular_ticks_by_hand("")),
        TestClock::starting_at("2026-03-13T12:07:00Z"),
    );
    sleep(Duration::from_secs(1)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    let runs = store.aggregates("hourly");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0].at, utc("2026-03-13T12:07:00Z"));
    assert_eq!(runs[1].at, utc("2026-03-13T12:07:00Z"));
    // First run: the oldest 48 missing hours, nothing else (max_windows_per_run = 48).
    assert_eq!(runs[0].windows.len(), 48);
    assert_eq!(runs[0].windows[0], utc("2026-03-10T12:00:00Z"));
    assert_eq!(
        *runs[0].windows.last().unwrap(),
        utc("2026-03-12T11:00:00Z")
    );
    // Second: the remaining 24 missing hours and the open one.
    assert_eq!(runs[1].windows.first(), Some(&utc("2026-03-12T12:00:00Z")));
    assert_eq!(runs[1].windows.last(), Some(&utc("2026-03-13T12:00:00Z")));
    assert_eq!(runs[1].windows.len(), 25);
    // Caught up: back to three lookback hours and the open one.
    assert_eq!(
        runs[2].windows,
        [
            "2026-03-13T09:00:00Z",
            "2026-03-13T10:00:00Z",
            "2026-03-13T11:00:00Z",
            "2026-03-13T12:00:00Z"
        ]
        .map(utc)
    );
    assert_eq!(
        store.with(|s| s.watermarks[&Period::Hourly]),
        utc("2026-03-13T12:00:00Z")
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn late_events_inside_lookback_are_picked_up_and_older_ones_without_an_object_id_left_to_recompute(
) {
    let store = Arc::new(FakeStore::default());
    store.with(|s| {
        s.watermarks
            .insert(Period::Hourly, utc("2026-03-10T12:00:00Z"));
        s.calls.push(utc("2026-03-10T10:15:00Z"));
    });
    let daemon = start(
        &store,
        config("a", &regular_ticks_by_hand("")),
        TestClock::starting_at("2026-03-10T12:07:00Z"),
    );
    sleep(Duration::from_secs(1)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(minutes(5)).await;
    assert_eq!(store.total_calls("hourly", "2026-03-10T10:00:00Z"), Some(1));

    // Two events arrive late: one for 10:xx (inside the 3-hour lookback), one for 07:xx, whose
    // `_id` is not an ObjectId: the late-event scan cannot see it.
    store.with(|s| {
        s.calls.push(utc("2026-03-10T10:40:00Z"));
        s.calls.push(utc("2026-03-10T07:30:00Z"));
    });
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(store.total_calls("hourly", "2026-03-10T10:00:00Z"), Some(2));
    assert_eq!(store.total_calls("hourly", "2026-03-10T07:00:00Z"), None);
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_tick_during_a_run_of_the_same_period_is_skipped() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.aggregate_time = minutes(7));
    let daemon = start(
        &store,
        config(
            "a",
            &regular_ticks_by_hand("start_from = \"2026-03-10T00:00:00Z\""),
        ),
        TestClock::starting_at("2026-03-10T12:07:00Z"),
    );
    // The run at start takes seven minutes.
    sleep(minutes(5)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap(); // the first run is still going
    sleep(minutes(5)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap(); // it has finished
    sleep(minutes(10)).await;
    assert_eq!(
        skipped(&daemon.status, Period::Hourly, SkipReason::Overlap),
        1
    );
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Success), 2);
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_run_does_not_advance_the_watermark_nor_stop_other_periods() {
    let store = Arc::new(FakeStore::default());
    let daemon = start(
        &store,
        config("a", &ticks_by_hand("start_from = \"2026-03-10T00:00:00Z\"")),
        TestClock::starting_at("2026-03-10T12:07:00Z"),
    );
    sleep(Duration::from_secs(1)).await; // the runs at start
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Success), 1);
    store.with(|s| {
        s.watermarks
            .insert(Period::Hourly, utc("2026-03-10T09:00:00Z"));
        s.failing_aggregates = 1;
    });
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Failed), 1);
    assert_eq!(
        store.with(|s| s.watermarks[&Period::Hourly]),
        utc("2026-03-10T09:00:00Z")
    );
    let errors = |kind| {
        metric(
            &daemon.status,
            "vcmetrics_run_errors_total",
            &[("period", "hourly"), ("kind", kind)],
        )
    };
    assert_eq!(errors("mongodb"), 1.0);

    // Another period runs meanwhile, and the next hourly tick retries and advances.
    daemon.ticks.send(Period::Daily).await.unwrap();
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&daemon.status, Period::Daily, RunOutcome::Success), 2);
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Success), 2);
    assert_eq!(
        store.with(|s| s.watermarks[&Period::Hourly]),
        utc("2026-03-10T12:00:00Z")
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn two_daemons_share_one_lease_and_only_the_leader_runs() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    let recent = regular_ticks_by_hand("start_from = \"2026-03-10T00:00:00Z\"");
    let a = start(&store, config("a", &recent), clock.clone());
    sleep(Duration::from_secs(1)).await;
    let b = start(&store, config("b", &recent), clock);
    sleep(Duration::from_secs(1)).await;
    for _ in 0..3 {
        a.ticks.send(Period::Hourly).await.unwrap();
        b.ticks.send(Period::Hourly).await.unwrap();
        sleep(minutes(5)).await;
    }
    assert!(a.status.is_leader() && !b.status.is_leader());
    // The leader's run at start, then one per tick; the standby none.
    assert_eq!(runs(&a.status, Period::Hourly, RunOutcome::Success), 4);
    assert_eq!(runs(&b.status, Period::Hourly, RunOutcome::Success), 0);
    assert_eq!(skipped(&b.status, Period::Hourly, SkipReason::Standby), 3);
    assert_eq!(store.aggregates("hourly").len(), 4);
    for d in [a, b] {
        d.shutdown.send(true).unwrap();
        d.handle.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_standby_takes_over_within_a_ttl_when_the_leader_dies() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    let a = start(
        &store,
        config("a", &ticks_by_hand("lease_ttl = \"30s\"")),
        clock.clone(),
    );
    sleep(Duration::from_secs(1)).await;
    let b = start(
        &store,
        config("b", &ticks_by_hand("lease_ttl = \"30s\"")),
        clock.clone(),
    );
    sleep(Duration::from_secs(20)).await;
    assert!(!b.status.is_leader());

    // The leader crashes: no release, its lease runs out at its last renewal + 30 s.
    a.handle.abort();
    let died = clock.now();
    let lease_expiry = store.with(|s| s.lease.clone().unwrap().1);
    assert!(lease_expiry - died <= chrono::Duration::seconds(30));
    while !b.status.is_leader() {
        sleep(Duration::from_secs(1)).await;
    }
    let took_over = clock.now();
    // Within one TTL of the lease expiring, at most TTL + one standby poll (TTL/5) after death.
    assert!(
        took_over >= lease_expiry,
        "took over at {took_over}, lease ran to {lease_expiry}"
    );
    assert!(
        took_over - died <= chrono::Duration::seconds(36),
        "{}",
        took_over - died
    );
    // Taking over starts work at once: every period runs within a second of it, no tick needed.
    sleep(Duration::from_secs(1)).await;
    for period in Period::ALL {
        assert_eq!(runs(&b.status, period, RunOutcome::Success), 1, "{period}");
        let last = store.aggregates(period.as_str()).pop().unwrap();
        assert!(
            last.at - took_over <= chrono::Duration::seconds(1),
            "{period}: {}",
            last.at
        );
    }
    b.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&b.status, Period::Hourly, RunOutcome::Success), 2);
    b.shutdown.send(true).unwrap();
    b.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_scheduling_before_its_lease_expires() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    let a = start(
        &store,
        config("a", &ticks_by_hand("lease_ttl = \"30s\"")),
        clock.clone(),
    );
    sleep(Duration::from_secs(1)).await;
    assert!(a.status.is_leader());
    let lease_expiry = store.with(|s| s.lease.clone().unwrap().1);
    store.with(|s| s.down = true);
    while a.status.is_leader() {
        sleep(Duration::from_millis(500)).await;
    }
    assert!(
        clock.now() < lease_expiry,
        "stopped at {} but the lease ran to {lease_expiry}",
        clock.now()
    );
    a.shutdown.send(true).unwrap();
    a.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn mongodb_down_skips_runs_keeps_running_and_catches_up_when_back() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| {
        s.watermarks
            .insert(Period::Hourly, utc("2026-03-10T12:00:00Z"));
        s.down = true;
    });
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    let daemon = start(&store, config("a", &regular_ticks_by_hand("")), clock);
    for _ in 0..12 {
        sleep(minutes(5)).await;
        daemon.ticks.send(Period::Hourly).await.unwrap();
    }
    sleep(Duration::from_secs(1)).await;
    assert!(!daemon.status.mongodb_up());
    assert_eq!(
        skipped(
            &daemon.status,
            Period::Hourly,
            SkipReason::MongodbUnavailable
        ),
        12
    );
    assert!(!daemon.handle.is_finished());

    store.with(|s| s.down = false);
    sleep(minutes(2)).await; // the backoff is capped at one minute
    assert!(daemon.status.mongodb_up());
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    let last = store.aggregates("hourly").pop().unwrap();
    // 13:09 now: every hour since the watermark (12:00), nothing skipped.
    assert_eq!(last.windows.first(), Some(&utc("2026-03-10T10:00:00Z")));
    assert_eq!(last.windows.last(), Some(&utc("2026-03-10T13:00:00Z")));
    assert_eq!(
        store.with(|s| s.watermarks[&Period::Hourly]),
        utc("2026-03-10T13:00:00Z")
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_run_lets_it_finish_releases_the_lease_and_returns_ok() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.aggregate_time = Duration::from_secs(20));
    let daemon = start(
        &store,
        config("a", &regular_ticks_by_hand("")),
        TestClock::starting_at("2026-03-10T12:07:00Z"),
    );
    // The run at start takes 20 s.
    sleep(Duration::from_secs(5)).await;
    daemon.shutdown.send(true).unwrap();
    let stopped_in = tokio::time::Instant::now();
    // While the run drains, the lease stays taken: no standby may start the same period.
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        store.with(|s| s.lease.clone()).map(|l| l.0),
        Some("a".to_owned())
    );
    daemon.handle.await.unwrap().unwrap();
    let waited = stopped_in.elapsed();
    assert!(
        waited >= Duration::from_secs(15) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Success), 1);
    assert_eq!(store.with(|s| s.lease.clone()), None);
}

#[tokio::test(start_paused = true)]
async fn a_run_longer_than_the_grace_period_is_abandoned_and_the_lease_still_released() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.aggregate_time = minutes(5));
    let daemon = start(
        &store,
        config("a", &ticks_by_hand("shutdown_grace = \"10s\"")),
        TestClock::starting_at("2026-03-10T12:07:00Z"),
    );
    sleep(Duration::from_secs(1)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    daemon.shutdown.send(true).unwrap();
    let stopped_in = tokio::time::Instant::now();
    daemon.handle.await.unwrap().unwrap();
    assert!(stopped_in.elapsed() <= Duration::from_secs(11));
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Success), 0);
    assert_eq!(
        store.with(|s| s.watermarks.get(&Period::Hourly).copied()),
        None
    );
    assert_eq!(store.with(|s| s.lease.clone()), None);
}

#[tokio::test]
async fn a_replica_that_never_ran_exports_the_stored_watermark() {
    // A standby (or a demoted leader) takes the watermark from MongoDB, not from its own runs.
    let store = FakeStore::default();
    store.with(|s| {
        s.watermarks
            .insert(Period::Daily, utc("2026-03-10T00:00:00Z"));
    });
    let status = Status::new().unwrap();
    status.set_watermark(Period::Daily, utc("2026-03-08T00:00:00Z")); // an old leader's view
    vcmetrics::daemon::watermarks::read_stored_watermarks(&store, &status)
        .await
        .unwrap();
    assert_eq!(
        status.watermark(Period::Daily),
        Some(utc("2026-03-10T00:00:00Z"))
    );
    assert_eq!(status.watermark(Period::Hourly), None);
}

#[tokio::test(start_paused = true)]
async fn catch_up_never_writes_windows_past_the_audit_logs_retention() {
    // Down for 200 days with a 180-day TTL: the first 20 days of missed windows have lost events.
    let store = Arc::new(FakeStore::default());
    store.with(|s| {
        s.watermarks
            .insert(Period::Daily, utc("2026-01-01T00:00:00Z"));
    });
    let now = "2026-07-20T12:07:00Z";
    let daemon = start(
        &store,
        config("a", &ticks_by_hand("")),
        TestClock::starting_at(now),
    );
    // The run at start, and the ones that follow it at once until the backlog is gone.
    sleep(Duration::from_secs(1)).await;
    let daily = store.aggregates("daily");
    assert!(daily.iter().all(|a| a.at == utc(now)), "{daily:?}");
    assert_eq!(
        daily.last().unwrap().windows.last(),
        Some(&utc("2026-07-20T00:00:00Z"))
    );
    let run = &daily[0];
    let horizon = utc(now) - chrono::Duration::seconds(15_552_000);
    assert_eq!(
        run.windows[0],
        utc("2026-01-22T00:00:00Z"),
        "first whole day after {horizon}"
    );
    assert!(run.windows[0] >= horizon);
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// Late events by write time: lookback 0, so only the open window is refreshed regularly.
const NO_LOOKBACK: &str = "start_from = \"2026-06-01T00:00:00Z\"\n\
    [periods.hourly]\nschedule = \"0 0 0 1 1 *\"\nlookback = 0\n\
    [periods.daily]\nschedule = \"0 0 0 1 1 *\"\nlookback = 0\n\
    [periods.weekly]\nschedule = \"0 0 0 1 1 *\"\nlookback = 0\n\
    [periods.monthly]\nschedule = \"0 0 0 1 1 *\"\nlookback = 0\n";

async fn tick_all(daemon: &Running) {
    for period in Period::ALL {
        daemon.ticks.send(period).await.unwrap();
    }
    sleep(Duration::from_secs(5)).await;
}

/// The windows each period rolled up since `from` (an index into its aggregates).
fn rolled_up_since(store: &FakeStore, period: Period, from: usize) -> Vec<DateTime<Utc>> {
    store.aggregates(period.as_str())[from..]
        .iter()
        .flat_map(|a| a.windows.clone())
        .collect()
}

/// #13: an event for Sunday 10:20, written on Monday 00:20 (a day late, past every lookback):
/// the next run of each period refreshes exactly the window it falls in, besides its regular
/// open window, and nothing else; the run after that finds nothing more.
#[tokio::test(start_paused = true)]
async fn a_late_event_refreshes_exactly_its_windows_of_every_period() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-06-01T00:10:00Z"); // a Monday, the 1st
    let daemon = start(&store, config("a", NO_LOOKBACK), clock.clone());
    sleep(Duration::from_secs(1)).await;
    tick_all(&daemon).await;
    assert!(
        store.with(|s| s.late_marks.len()) == 4,
        "the first runs set the marks"
    );
    let seen: Vec<usize> = Period::ALL
        .map(|p| store.aggregates(p.as_str()).len())
        .to_vec();

    sleep(minutes(10)).await;
    store.write_call(utc("2026-05-31T10:20:00Z"), clock.now());
    sleep(minutes(10)).await; // past the settling minute
    tick_all(&daemon).await;
    for (period, open, late) in [
        (
            Period::Hourly,
            "2026-06-01T00:00:00Z",
            "2026-05-31T10:00:00Z",
        ),
        (
            Period::Daily,
            "2026-06-01T00:00:00Z",
            "2026-05-31T00:00:00Z",
        ),
        (
            Period::Weekly,
            "2026-06-01T00:00:00Z",
            "2026-05-25T00:00:00Z",
        ),
        (
            Period::Monthly,
            "2026-06-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
        ),
    ] {
        assert_eq!(
            rolled_up_since(&store, period, seen[period.index()]),
            [utc(open), utc(late)],
            "{period}"
        );
        assert_eq!(
            store.total_calls(period.as_str(), late),
            Some(1),
            "{period}"
        );
        let labels = [("period", period.as_str())];
        assert_eq!(
            metric(&daemon.status, "vcmetrics_late_events_total", &labels),
            1.0
        );
        assert_eq!(
            metric(
                &daemon.status,
                "vcmetrics_late_windows_refreshed_total",
                &labels
            ),
            1.0
        );
        let age = metric(
            &daemon.status,
            "vcmetrics_late_event_oldest_age_seconds",
            &labels,
        );
        assert!(
            (14.0 * 3600.0..15.0 * 3600.0).contains(&age),
            "{period}: {age}"
        );
    }

    let seen: Vec<usize> = Period::ALL
        .map(|p| store.aggregates(p.as_str()).len())
        .to_vec();
    sleep(minutes(5)).await;
    tick_all(&daemon).await;
    for period in Period::ALL {
        assert_eq!(
            rolled_up_since(&store, period, seen[period.index()]),
            [utc("2026-06-01T00:00:00Z")],
            "{period}: only the open window again"
        );
    }
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// #13: the mark moves only after the late windows are written: a run that fails in between
/// (here: the mark's update) leaves it, and the next run writes the same windows again.
#[tokio::test(start_paused = true)]
async fn a_failure_before_the_mark_moves_repeats_the_late_windows_never_skips_them() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-06-01T00:10:00Z");
    let daemon = start(&store, config("a", NO_LOOKBACK), clock.clone());
    sleep(Duration::from_secs(1)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(minutes(10)).await;
    let mark = store.with(|s| s.late_marks[&Period::Hourly]);
    store.write_call(utc("2026-05-31T10:20:00Z"), clock.now());
    sleep(minutes(10)).await;
    store.with(|s| s.failing_late_marks = 1);
    let seen = store.aggregates("hourly").len();
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Failed), 1);
    assert_eq!(store.with(|s| s.late_marks[&Period::Hourly]), mark);
    assert!(rolled_up_since(&store, Period::Hourly, seen).contains(&utc("2026-05-31T10:00:00Z")));

    let seen = store.aggregates("hourly").len();
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        rolled_up_since(&store, Period::Hourly, seen),
        [utc("2026-06-01T00:00:00Z"), utc("2026-05-31T10:00:00Z")]
    );
    assert!(store.with(|s| s.late_marks[&Period::Hourly]) > mark);
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// #13: a writer whose clock runs two hours ahead makes an `_id` from the future: the scan
/// leaves it until the daemon's clock passes it (late, never lost), and the mark never jumps
/// ahead of the daemon's own clock. Windows before the retention horizon are counted, not built.
#[tokio::test(start_paused = true)]
async fn a_future_object_id_waits_and_windows_past_retention_are_not_rebuilt() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.audit_ttl = Some(Duration::from_secs(30 * 86_400)));
    let clock = TestClock::starting_at("2026-06-01T00:10:00Z");
    let daemon = start(&store, config("a", NO_LOOKBACK), clock.clone());
    sleep(Duration::from_secs(1)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(minutes(10)).await;
    store.write_call(
        utc("2026-05-31T10:20:00Z"),
        clock.now() + chrono::Duration::hours(2),
    );
    store.write_call(utc("2026-04-01T10:20:00Z"), clock.now()); // past the 30-day TTL
    sleep(minutes(10)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    let labels = [("period", "hourly")];
    assert_eq!(store.total_calls("hourly", "2026-05-31T10:00:00Z"), None);
    assert_eq!(store.total_calls("hourly", "2026-04-01T10:00:00Z"), None);
    assert_eq!(
        metric(
            &daemon.status,
            "vcmetrics_late_windows_unrepairable_total",
            &labels
        ),
        1.0
    );
    assert!(
        store
            .with(|s| s.late_marks[&Period::Hourly])
            .timestamp()
            .to_chrono()
            <= clock.now()
    );

    sleep(minutes(125)).await;
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(store.total_calls("hourly", "2026-05-31T10:00:00Z"), Some(1));
    assert_eq!(
        metric(
            &daemon.status,
            "vcmetrics_late_windows_unrepairable_total",
            &labels
        ),
        1.0,
        "the unrepairable window is counted once"
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// #11: the session gauges are re-read with the call metrics; a failed read is counted and
/// leaves the last values in place, and the endpoint's text never waits on MongoDB.
#[tokio::test(start_paused = true)]
async fn session_gauges_keep_their_last_values_when_a_read_fails() {
    use vcmetrics::exporter::call_metrics_cache::{keep_fresh, CallMetricsCache};
    use vcmetrics::exporter::session_metrics::SessionMetricsCache;
    use vcmetrics::sessions::gauges::SessionGauges;
    let store = Arc::new(FakeStore::default());
    store.with(|s| {
        s.session_gauges = SessionGauges {
            active: 4,
            stuck: 1,
            upcoming: vec![1, 2, 3],
            by_status: vec![0; 7],
            confirmed_without_link: 0,
            rules: vec![0, 0],
        }
    });
    let config = Arc::new(config("a", "metrics_refresh = \"30s\""));
    let status = Arc::new(Status::new().unwrap());
    let sessions = Arc::new(SessionMetricsCache::new().unwrap());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let refresher = tokio::spawn(keep_fresh(
        store.clone(),
        config,
        TestClock::starting_at("2026-03-10T12:00:00Z"),
        status,
        (Arc::new(CallMetricsCache::default()), sessions.clone()),
        shutdown_rx,
    ));
    sleep(Duration::from_secs(1)).await;
    let text = || String::from_utf8(sessions.text().to_vec()).unwrap();
    assert!(
        text().contains("vcmetrics_sessions_active_calls 4"),
        "{}",
        text()
    );
    store.with(|s| {
        s.down = true;
        s.session_gauges.active = 9;
    });
    sleep(Duration::from_secs(61)).await; // two refreshes, both failing
    let now = text();
    assert!(now.contains("vcmetrics_sessions_active_calls 4"), "{now}");
    assert!(
        now.contains("vcmetrics_sessions_read_errors_total 2"),
        "{now}"
    );
    assert!(
        now.contains("vcmetrics_sessions_last_read_timestamp_seconds 1773144000"),
        "{now}"
    );
    store.with(|s| s.down = false);
    sleep(Duration::from_secs(30)).await;
    assert!(
        text().contains("vcmetrics_sessions_active_calls 9"),
        "{}",
        text()
    );
    shutdown.send(true).unwrap();
    refresher.await.unwrap();
}

/// Issue 12: calls every 6 hours over January 1–20 and an archive at 03:00 daily of what is
/// older than 10 days (audit retention 15 days).
fn archiving(instance: &str) -> Config {
    config(
        instance,
        &ticks_by_hand(
            "audit_retention = \"15d\"\n[archive]\nafter = \"10d\"\nschedule = \"0 0 3 * * *\"\n\
             batch_size = 7",
        ),
    )
}

fn calls_every_6_hours(store: &FakeStore) -> usize {
    store.with(|s| {
        let mut t = utc("2026-01-01T00:00:00Z");
        while t < utc("2026-01-21T00:00:00Z") {
            s.calls.push(t);
            t += chrono::Duration::hours(6);
        }
        s.calls.len()
    })
}

#[tokio::test(start_paused = true)]
async fn the_leader_archives_on_schedule_and_every_replica_reports_the_archive() {
    let store = Arc::new(FakeStore::default());
    let total = calls_every_6_hours(&store);
    let clock = TestClock::starting_at("2026-01-25T02:00:00Z");
    let a = start(&store, archiving("a"), clock.clone());
    sleep(Duration::from_secs(1)).await;
    let b = start(&store, archiving("b"), clock.clone());
    // Before 03:00 nothing moves; both replicas already export the audit log's oldest event.
    sleep(minutes(30)).await;
    assert!(store.with(|s| s.archive.is_empty()));
    let jan_1 = utc("2026-01-01T00:00:00Z").timestamp() as f64;
    for d in [&a, &b] {
        assert_eq!(
            metric(
                &d.status,
                "vcmetrics_audit_oldest_event_timestamp_seconds",
                &[]
            ),
            jan_1
        );
        assert_eq!(
            metric(&d.status, "vcmetrics_audit_retention_seconds", &[]),
            15.0 * 86_400.0
        );
    }
    sleep(minutes(45)).await;
    // At 03:00 the leader moved everything before January 15, 03:00 (in batches of 7).
    let cutoff = utc("2026-01-15T03:00:00Z");
    let moved = store.with(|s| s.archive.len());
    assert_eq!(moved, 4 * 14 + 1, "January 1-14 and the 15th's 00:00 call");
    assert!(store.with(|s| s.calls.iter().all(|t| *t >= cutoff)));
    assert_eq!(store.with(|s| s.calls.len()) + moved, total);
    assert_eq!(
        store.with(|s| s.archive_runs.clone()),
        [("a".to_owned(), cutoff)]
    );
    assert_eq!(
        metric(
            &a.status,
            "vcmetrics_archive_runs_total",
            &[("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(
        metric(&a.status, "vcmetrics_archive_events_total", &[]),
        moved as f64
    );
    assert_eq!(
        metric(
            &b.status,
            "vcmetrics_archive_runs_total",
            &[("outcome", "success")]
        ),
        0.0
    );
    // The standby reads where the archive stands at its next refresh.
    sleep(minutes(1)).await;
    for d in [&a, &b] {
        assert_eq!(
            metric(
                &d.status,
                "vcmetrics_archive_archived_before_timestamp_seconds",
                &[]
            ),
            cutoff.timestamp() as f64
        );
        assert_eq!(
            metric(
                &d.status,
                "vcmetrics_audit_oldest_event_timestamp_seconds",
                &[]
            ),
            utc("2026-01-15T06:00:00Z").timestamp() as f64
        );
        assert_eq!(
            metric(&d.status, "vcmetrics_archive_batch_pending", &[]),
            0.0
        );
        // Complete from the audit log's horizon when archiving began: 02:... minus 15 days.
        let complete_from = metric(
            &d.status,
            "vcmetrics_archive_complete_from_timestamp_seconds",
            &[],
        );
        assert_eq!(
            complete_from,
            utc("2026-01-10T03:00:00Z").timestamp() as f64
        );
    }
    for d in [a, b] {
        d.shutdown.send(true).unwrap();
        d.handle.await.unwrap().unwrap();
    }
}

/// Found by the chaos soak on the sharded cluster: the late-event scan reads the audit log, so an
/// event written late into a window the archive takes, and moved before every period's scan saw
/// it, never had its windows refreshed. It now waits in the audit log until they all have.
#[tokio::test(start_paused = true)]
async fn the_archive_leaves_late_events_no_late_scan_has_seen_yet() {
    let store = FakeStore::default();
    let clock = TestClock::starting_at("2026-01-25T03:00:00Z");
    let mark = |t: &str| vcmetrics::rollup::late_scan::object_id_at(utc(t));
    // Written at its time, long seen; then one written just now into the same old day.
    store.write_call(utc("2026-01-10T10:00:00Z"), utc("2026-01-10T10:00:01Z"));
    store.write_call(utc("2026-01-10T11:00:00Z"), utc("2026-01-25T02:59:00Z"));
    // Three periods' scans are past both; the monthly one is not yet past the late one.
    store.with(|s| {
        for period in Period::ALL {
            s.late_marks.insert(period, mark("2026-01-25T03:00:00Z"));
        }
        s.late_marks
            .insert(Period::Monthly, mark("2026-01-24T00:00:00Z"));
    });
    let cutoff = utc("2026-01-15T00:00:00Z");
    let run = |config: Config| {
        let (store, clock) = (&store, &clock);
        async move {
            vcmetrics::archive::archive(store, &config, clock, "t", cutoff, || false, |_| {})
                .await
                .unwrap()
        }
    };
    assert_eq!(run(archiving("a")).await.moved, 1);
    assert_eq!(
        store.with(|s| s.calls.clone()),
        [utc("2026-01-10T11:00:00Z")],
        "the late event waits"
    );
    // Once the monthly scan has passed it, the next run takes it.
    store.with(|s| {
        s.late_marks
            .insert(Period::Monthly, mark("2026-01-25T03:00:00Z"))
    });
    assert_eq!(run(archiving("a")).await.moved, 1);
    assert!(store.with(|s| s.calls.is_empty()));

    // Without late-event scans nothing waits.
    store.write_call(utc("2026-01-10T12:00:00Z"), utc("2026-01-25T02:59:30Z"));
    store.with(|s| {
        s.late_marks
            .insert(Period::Monthly, mark("2026-01-24T00:00:00Z"))
    });
    let mut no_scans = archiving("a");
    no_scans.late_events.enabled = false;
    assert_eq!(run(no_scans).await.moved, 1);
    assert!(store.with(|s| s.calls.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn a_failed_archive_run_is_counted_and_the_next_one_finishes_its_batch() {
    let store = Arc::new(FakeStore::default());
    let total = calls_every_6_hours(&store);
    store.with(|s| s.failing_archive_deletes = 1);
    let clock = TestClock::starting_at("2026-01-25T02:59:00Z");
    let a = start(&store, archiving("a"), clock.clone());
    sleep(minutes(2)).await;
    // The first batch was copied, then its delete failed: recorded, lock given up, counted.
    let batch = store
        .with(|s| s.archive_state.batch.clone())
        .expect("the batch stays recorded");
    assert_eq!(batch.ids.len(), 7);
    assert!(store.with(|s| s.archive_state.holder.is_none()));
    assert_eq!(
        metric(
            &a.status,
            "vcmetrics_archive_runs_total",
            &[("outcome", "failed")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &a.status,
            "vcmetrics_archive_errors_total",
            &[("kind", "mongodb")]
        ),
        1.0
    );
    assert_eq!(
        metric(&a.status, "vcmetrics_archive_batch_pending", &[]),
        1.0
    );
    assert!(store.with(|s| s.archive.is_empty()));
    // The next day's run finishes the batch first, then the rest; nothing lost or doubled.
    sleep(chrono::Duration::days(1).to_std().unwrap()).await;
    assert_eq!(
        metric(
            &a.status,
            "vcmetrics_archive_runs_total",
            &[("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(
        metric(&a.status, "vcmetrics_archive_batch_pending", &[]),
        0.0
    );
    let (left, moved) = store.with(|s| (s.calls.len(), s.archive.len()));
    assert_eq!(left + moved, total);
    assert_eq!(moved, 4 * 15 + 1, "up to January 16, 03:00");
    a.shutdown.send(true).unwrap();
    a.handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_an_archive_run_between_batches() {
    let store = Arc::new(FakeStore::default());
    calls_every_6_hours(&store);
    // Each batch's copy takes a second: the run is long enough to interrupt.
    store.with(|s| s.archive_copy_time = Duration::from_secs(1));
    let clock = TestClock::starting_at("2026-01-25T02:59:59Z");
    let a = start(&store, archiving("a"), clock);
    sleep(Duration::from_secs(3)).await;
    a.shutdown.send(true).unwrap();
    a.handle.await.unwrap().unwrap();
    let state = store.with(|s| s.archive_state.clone());
    assert!(state.holder.is_none(), "the lock is given up");
    assert!(state.finished.is_none(), "a stopped run records no end");
    let moved = store.with(|s| s.archive.len());
    assert!(moved > 0 && moved < 4 * 14 + 1, "{moved} moved");
    assert!(state.batch.is_none(), "stopped between batches");
}

#[tokio::test(start_paused = true)]
async fn an_archive_batch_stuck_on_mongodb_does_not_hold_shutdown_past_its_grace() {
    let store = Arc::new(FakeStore::default());
    calls_every_6_hours(&store);
    store.with(|s| s.archive_copy_time = Duration::from_secs(1));
    let clock = TestClock::starting_at("2026-01-25T02:59:59Z");
    let a = start(&store, archiving("a"), clock);
    sleep(Duration::from_secs(3)).await;
    store.with(|s| s.hang = true);
    let asked = tokio::time::Instant::now();
    a.shutdown.send(true).unwrap();
    a.handle.await.unwrap().unwrap();
    // shutdown_grace (30 s by default), not forever.
    assert!(
        asked.elapsed() <= Duration::from_secs(31),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        store.with(|s| s.archive_state.batch.is_some()),
        "the stuck batch stays recorded"
    );
}

fn daemon_calendar() -> vcmetrics::window::Calendar {
    vcmetrics::window::Calendar::default()
}

/// #21, item 3: with the default schedules (hourly every 5 minutes, weekly and monthly hourly),
/// a daemon that starts runs every period at once, catch-up and the open window included, and
/// then follows its schedule.
#[tokio::test(start_paused = true)]
async fn work_starts_at_start_with_the_default_schedules() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.calls.push(utc("2026-03-10T12:01:00Z")));
    let clock = TestClock::starting_at("2026-03-10T12:02:00Z");
    let daemon = start(&store, config("a", ""), clock.clone());
    sleep(Duration::from_secs(1)).await;
    for period in Period::ALL {
        let done = store.aggregates(period.as_str());
        assert!(!done.is_empty(), "{period} ran at start");
        assert!(
            done.iter().all(|a| a.at == utc("2026-03-10T12:02:00Z")),
            "{period}: {done:?}"
        );
        // Caught up (from the month's start) up to and with the open window.
        let windows: Vec<DateTime<Utc>> = done.iter().flat_map(|a| a.windows.clone()).collect();
        assert!(
            windows[0] <= utc("2026-03-01T00:00:00Z"),
            "{period}: from the month's start"
        );
        let open = daemon_calendar()
            .window_containing(period, clock.now())
            .start;
        assert_eq!(windows.last(), Some(&open), "{period}: to the open window");
        assert_eq!(runs(&daemon.status, period, RunOutcome::Failed), 0);
    }
    let hourly = store.aggregates("hourly");
    assert_eq!(hourly[0].windows[0], utc("2026-03-01T00:00:00Z"));
    assert_eq!(
        store.with(
            |s| s.docs[&("hourly".to_owned(), utc("2026-03-10T12:00:00Z"))]
                .get_i32("totalCalls")
                .unwrap()
        ),
        1,
        "the open hour's event is counted within a second of start"
    );
    // Then the schedule: hourly every minute, at second 5.
    let started = hourly.len();
    sleep(minutes(3)).await;
    let next = &store.aggregates("hourly")[started..];
    assert_eq!(
        next.iter().map(|a| a.at).collect::<Vec<_>>(),
        [
            utc("2026-03-10T12:02:05Z"),
            utc("2026-03-10T12:03:05Z"),
            utc("2026-03-10T12:04:05Z")
        ]
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// #21, item 3: MongoDB answering again after an outage starts the due work at once, not at the
/// next tick.
#[tokio::test(start_paused = true)]
async fn mongodb_answering_again_starts_the_due_work_at_once() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.down = true);
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    let daemon = start(
        &store,
        config(
            "a",
            &regular_ticks_by_hand("start_from = \"2026-03-10T00:00:00Z\""),
        ),
        clock.clone(),
    );
    sleep(minutes(10)).await;
    assert!(store.aggregates("hourly").is_empty());
    store.with(|s| s.down = false);
    while !daemon.status.mongodb_up() {
        sleep(Duration::from_millis(100)).await;
    }
    let back = clock.now();
    sleep(Duration::from_secs(1)).await;
    for period in Period::ALL {
        let done = store.aggregates(period.as_str());
        assert_eq!(done.len(), 1, "{period}: {done:?}");
        assert!(
            done[0].at - back <= chrono::Duration::seconds(1),
            "{period}: {}",
            done[0].at
        );
    }
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// #21, item 1: a database without the indexes runs need is said at start (status, metric,
/// readiness), runs fail with the server's words naming `vcmetrics migrate`, and once someone
/// migrates, the next check clears it.
#[tokio::test(start_paused = true)]
async fn a_database_without_its_indexes_is_named_and_cleared_after_migrate() {
    let store = Arc::new(FakeStore::default());
    store.with(|s| s.absent_indexes = vec!["period_1_date_1".to_owned()]);
    let daemon = start(
        &store,
        config("a", &ticks_by_hand("start_from = \"2026-03-10T00:00:00Z\"")),
        TestClock::starting_at("2026-03-10T12:07:00Z"),
    );
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        daemon.status.missing_indexes(),
        ["videocallmetrics {period: 1, date: 1} (unique)"]
    );
    assert_eq!(
        metric(&daemon.status, "vcmetrics_database_missing_indexes", &[]),
        1.0
    );
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Failed), 1);
    assert_eq!(
        metric(
            &daemon.status,
            "vcmetrics_run_errors_total",
            &[("period", "hourly"), ("kind", "setup")]
        ),
        1.0
    );
    // Someone runs `vcmetrics migrate`: within metrics_refresh (30 s) the daemon sees it.
    store.with(|s| s.absent_indexes.clear());
    sleep(Duration::from_secs(31)).await;
    assert!(daemon.status.missing_indexes().is_empty());
    assert_eq!(
        metric(&daemon.status, "vcmetrics_database_missing_indexes", &[]),
        0.0
    );
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Success), 1);

    // An index dropped later: the next run that fails for it has the check look again at once,
    // not after its five-minute pause.
    store.with(|s| s.absent_indexes = vec!["period_1_date_1".to_owned()]);
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Failed), 2);
    assert_eq!(daemon.status.missing_indexes().len(), 1);
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// Two replicas on one store, leases of 30 s, no lookback, every tick by hand; `a` leads.
async fn leader_and_standby(store: &Arc<FakeStore>, clock: &TestClock) -> (Running, Running) {
    let settings = format!("lease_ttl = \"30s\"\n{NO_LOOKBACK}");
    let a = start(store, config("a", &settings), clock.clone());
    sleep(Duration::from_secs(1)).await;
    let b = start(store, config("b", &settings), clock.clone());
    sleep(Duration::from_secs(5)).await;
    assert!(a.status.is_leader() && !b.status.is_leader());
    (a, b)
}

/// Cuts `a` off the lease and waits until `b` has taken it over.
async fn take_over(store: &FakeStore, a: &Running, b: &Running) {
    store.with(|s| s.cut_off.push("a".to_owned()));
    while !b.status.is_leader() {
        sleep(Duration::from_secs(1)).await;
    }
    assert!(!a.status.is_leader());
}

/// #23: the leader's roll-up of a late window reads its events, then stalls past its lease; the
/// new leader refreshes the window with a later late event and moves the late-event mark; the
/// stalled `$merge` then lands. Fenced by the lease's epoch, it writes nothing: the window keeps
/// the newer count (without the fence it would go back to 1 and no later run would repair it).
#[tokio::test(start_paused = true)]
async fn a_stalled_leader_cannot_overwrite_what_the_new_leader_wrote() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-06-01T00:10:00Z");
    let (a, b) = leader_and_standby(&store, &clock).await;
    let window = "2026-05-31T10:00:00Z";
    store.write_call(utc("2026-05-31T10:20:00Z"), clock.now());
    sleep(minutes(2)).await; // past the settling minute
                             // The regular roll-up goes through; the late window's reads its event, then stalls.
    store.with(|s| s.stalled_roll_ups = [Duration::ZERO, minutes(10)].into());
    a.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    take_over(&store, &a, &b).await;
    store.write_call(utc("2026-05-31T10:40:00Z"), clock.now());
    sleep(minutes(2)).await;
    b.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(store.total_calls("hourly", window), Some(2));
    // `a` reaches the server again (as a standby: `b` holds the lease). Its stalled roll-up
    // ends: fenced off, and its run, finding the lease gone, fails without moving a mark.
    store.with(|s| s.cut_off.clear());
    let mark = store.with(|s| s.late_marks[&Period::Hourly]);
    sleep(minutes(10)).await;
    assert_eq!(
        store.with(|s| s.fenced_off.clone()),
        [("hourly".to_owned(), 1)]
    );
    assert_eq!(store.total_calls("hourly", window), Some(2));
    assert_eq!(runs(&a.status, Period::Hourly, RunOutcome::Failed), 1);
    let lost = [("period", "hourly"), ("kind", "lease")];
    assert_eq!(metric(&a.status, "vcmetrics_run_errors_total", &lost), 1.0);
    assert_eq!(store.with(|s| s.late_marks[&Period::Hourly]), mark);
    for daemon in [a, b] {
        daemon.shutdown.send(true).unwrap();
        daemon.handle.await.unwrap().unwrap();
    }
}

/// Leader `a` refreshes a late hourly window; its `$merge` passes the fence, then takes 5
/// minutes to write. Meanwhile `b` takes the lease over and refreshes the window with a second
/// late event (2 calls). Returns the store, the clock, both replicas and the window's start.
async fn slow_merge_passes_its_fence_before_a_takeover(
) -> (Arc<FakeStore>, TestClock, Running, Running, &'static str) {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-06-01T00:10:00Z");
    let (a, b) = leader_and_standby(&store, &clock).await;
    let window = "2026-05-31T10:00:00Z";
    store.write_call(utc("2026-05-31T10:20:00Z"), clock.now());
    sleep(minutes(2)).await;
    // The late window's `$merge` passes its check, then takes 5 minutes to write.
    store.with(|s| s.slow_merges = [Duration::ZERO, minutes(5)].into());
    a.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    take_over(&store, &a, &b).await;
    store.write_call(utc("2026-05-31T10:40:00Z"), clock.now());
    sleep(minutes(2)).await;
    b.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(store.total_calls("hourly", window), Some(2));
    (store, clock, a, b, window)
}

/// #23: the old leader's `$merge` passed its fence check just before the takeover and was still
/// writing after it, over the window the new leader had just refreshed. Such a write lands
/// within `aggregate_timeout` of the takeover; the new leader rewrites what it wrote until then
/// at its first run after that, so the window ends right.
#[tokio::test(start_paused = true)]
async fn a_write_that_passed_its_fence_before_the_takeover_is_redone_after_the_wait() {
    let (store, _, a, b, window) = slow_merge_passes_its_fence_before_a_takeover().await;
    sleep(minutes(3)).await;
    assert_eq!(
        store.total_calls("hourly", window),
        Some(1),
        "the old leader's write landed over the newer one"
    );
    // Past `aggregate_timeout` (10 minutes) after the new leader's first write: its next run
    // rewrites what it wrote before then.
    sleep(minutes(6)).await;
    b.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(store.total_calls("hourly", window), Some(2));
    for daemon in [a, b] {
        daemon.shutdown.send(true).unwrap();
        daemon.handle.await.unwrap().unwrap();
    }
}

/// #23: the rewrite after a takeover outlives the leader that owes it. As above, the old
/// leader's write lands over the new leader's; then the new leader dies before its wait ends,
/// and a third replica, taking the lease over, rewrites the window once that wait has passed:
/// the windows to rewrite are noted in the database, not in the dead leader's memory.
#[tokio::test(start_paused = true)]
async fn a_rewrite_owed_by_a_leader_that_died_is_done_by_the_next_one() {
    let (store, clock, a, b, window) = slow_merge_passes_its_fence_before_a_takeover().await;
    assert!(
        store.with(|s| s.rewrites.values().any(|(_, starts)| !starts.is_empty())),
        "the new leader noted what it wrote before settledAt"
    );
    // The new leader dies (its lease left to expire); the old leader's write lands.
    b.handle.abort();
    let _ = b.handle.await;
    sleep(minutes(3)).await;
    assert_eq!(store.total_calls("hourly", window), Some(1));
    let settings = format!("lease_ttl = \"30s\"\n{NO_LOOKBACK}");
    let c = start(&store, config("c", &settings), clock.clone());
    while !c.status.is_leader() {
        sleep(Duration::from_secs(1)).await;
    }
    // c took over from b, whose own write may still land: the wait now ends `aggregate_timeout`
    // (10 minutes) and a margin after c's takeover, and c's first run noted what it wrote too.
    sleep(minutes(9)).await;
    c.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        store.total_calls("hourly", window),
        Some(1),
        "nothing is rewritten before the wait ends"
    );
    sleep(minutes(2)).await;
    c.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        store.total_calls("hourly", window),
        Some(2),
        "the window b owed a rewrite was left with the old leader's count"
    );
    assert!(
        store.with(|s| s.rewrites[&Period::Hourly].1.is_empty()),
        "the hourly windows rewritten are forgotten"
    );
    for daemon in [a, c] {
        daemon.shutdown.send(true).unwrap();
        daemon.handle.await.unwrap().unwrap();
    }
}

/// #22 item 6: incremental hourly runs, every minute, while calls are written live, late into
/// closed windows kept incrementally, and late into windows before the origin (the regular
/// late-event scan's): every hourly window equals a recount, written once per write.
#[tokio::test(start_paused = true)]
async fn incremental_hourly_runs_count_every_write_once_live_and_late() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    // History before the daemon starts: two calls in the open hour, one an hour earlier.
    for (at, written) in [
        ("2026-03-10T12:01:00Z", "2026-03-10T12:01:02Z"),
        ("2026-03-10T12:06:30Z", "2026-03-10T12:06:31Z"),
        ("2026-03-10T11:30:00Z", "2026-03-10T11:30:01Z"),
    ] {
        store.write_call(utc(at), utc(written));
    }
    let daemon = start(
        &store,
        config(
            "a",
            "start_from = \"2026-03-10T11:00:00Z\"\n[periods.hourly]\nschedule = \"5 * * * * *\"\n\
             [periods.daily]\nschedule = \"0 0 0 1 1 *\"\n[periods.weekly]\nschedule = \"0 0 0 1 1 *\"\n\
             [periods.monthly]\nschedule = \"0 0 0 1 1 *\"\n",
        ),
        clock.clone(),
    );
    sleep(Duration::from_secs(1)).await;
    // Kept from the open window on: 12:00 is the origin; 11:00 was written whole.
    let mark = store.with(|s| s.tick_marks[&Period::Hourly].clone());
    assert_eq!(mark.origin, utc("2026-03-10T12:00:00Z"));
    assert_eq!(store.total_calls("hourly", "2026-03-10T11:00:00Z"), Some(1));
    assert_eq!(store.total_calls("hourly", "2026-03-10T12:00:00Z"), Some(2));

    // Two hours of live writes, one every 40 s, and late ones.
    let mut late = vec![
        // Into 12:00, closed by then, kept incrementally: found by its slice.
        ("2026-03-10T12:20:00Z", "2026-03-10T13:31:00Z"),
        // Into 11:00, before the origin: the late-event scan's.
        ("2026-03-10T11:10:00Z", "2026-03-10T13:45:00Z"),
    ];
    late.sort_by_key(|(_, written)| *written);
    for _ in 0..180 {
        sleep(Duration::from_secs(40)).await;
        let now = clock.now();
        store.write_call(now - chrono::Duration::seconds(1), now);
        while let Some((at, written)) = late.first().copied() {
            if utc(written) > now {
                break;
            }
            store.write_call(utc(at), utc(written));
            late.remove(0);
        }
    }
    sleep(minutes(3)).await;
    let recount = |start: DateTime<Utc>| {
        store.with(|s| {
            s.calls
                .iter()
                .filter(|t| start <= **t && **t < start + chrono::Duration::hours(1))
                .count() as i32
        })
    };
    for hour in ["11", "12", "13", "14"] {
        let start = utc(&format!("2026-03-10T{hour}:00:00Z"));
        let stored = store.total_calls("hourly", &start.to_rfc3339());
        assert_eq!(stored, Some(recount(start)), "{hour}:00");
    }
    // 12:00 holds the history's two, about 80 live ones and the late one.
    assert!(recount(utc("2026-03-10T12:00:00Z")) > 80);
    // The watermark and the mark follow the writes.
    let now = clock.now();
    assert_eq!(
        store.with(|s| s.watermarks[&Period::Hourly]),
        daemon_calendar().window_start(Period::Hourly, now - chrono::Duration::minutes(1))
    );
    assert!(
        store.with(|s| s.tick_marks[&Period::Hourly].since) >= now - chrono::Duration::minutes(3)
    );
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Failed), 0);
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}

/// A run that kept its slices but could not write its windows (or moved no mark) is repeated
/// whole by the next: the slices are replaced, nothing is counted twice or lost.
#[tokio::test(start_paused = true)]
async fn an_incremental_run_failing_after_keeping_is_repeated_without_double_counting() {
    let store = Arc::new(FakeStore::default());
    let clock = TestClock::starting_at("2026-03-10T12:07:00Z");
    let daemon = start(
        &store,
        config("a", &ticks_by_hand("start_from = \"2026-03-10T12:00:00Z\"")),
        clock.clone(),
    );
    sleep(Duration::from_secs(1)).await;
    for minute in 8..20 {
        store.write_call(
            utc(&format!("2026-03-10T12:{minute:02}:00Z")),
            utc(&format!("2026-03-10T12:{minute:02}:01Z")),
        );
    }
    sleep(minutes(15)).await;
    // The next run keeps the twelve minutes, then its finish fails; so does the mark's move of
    // the one after.
    store.with(|s| s.failing_aggregates = 1);
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&daemon.status, Period::Hourly, RunOutcome::Failed), 1);
    assert!(store.with(|s| !s.kept.is_empty()), "the slices were kept");
    let since = store.with(|s| s.tick_marks[&Period::Hourly].since);
    assert!(
        since <= utc("2026-03-10T12:08:00Z"),
        "the mark did not move"
    );
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.total_calls("hourly", "2026-03-10T12:00:00Z"),
        Some(12)
    );
    daemon.ticks.send(Period::Hourly).await.unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        store.total_calls("hourly", "2026-03-10T12:00:00Z"),
        Some(12)
    );
    daemon.shutdown.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
}
