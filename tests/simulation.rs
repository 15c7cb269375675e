//! A deterministic simulation of the daemon (#23), in the spirit of FoundationDB's simulator and
//! TigerBeetle's VOPR: one seed drives a whole scenario under paused tokio time — replicas of
//! the real `Daemon` sharing the in-memory store double, started, killed at whatever await point
//! they are at, stopped with SIGTERM's path and restarted; the store down, hanging, failing single
//! operations, roll-ups stalling past the lease between their read and their write; a replica
//! cut off from the lease; live writes, late writes inside and far beyond every lookback and
//! beyond the retention; the archive moving events older than 40 hours (also while chunks are
//! read) and the audit log's TTL deleting those older than 60, so the retention horizon passes
//! the first windows since `start_from` during the scenario; in Europe/Berlin, across DST
//! changes. Then the faults stop and the system gets time to settle, and the
//! invariants are checked:
//!
//! - every window of every period since `start_from` that the retention allows and that its
//!   schedule has closed equals a plain recount of the events (audit log and archive);
//! - every watermark is at the end of the newest closed window, and every late-event mark past
//!   every event written;
//! - never two replicas leading at once.
//!
//! A violation prints the seed and the scenario's trace; `SIM_SEED=<n>` replays that seed alone,
//! `SIM_SEEDS=<n>` runs that many (default 500, over the test threads), `SIM_SEEDS=<from>..<to>`
//! those seeds.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use support::fake_store::FakeStore;
use support::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vcmetrics::clock::Clock;
use vcmetrics::config::{from_toml, Config};
use vcmetrics::daemon::run_plan::{initial_watermark, respect_retention};
use vcmetrics::daemon::status::Status;
use vcmetrics::daemon::Daemon;
use vcmetrics::rollup::late_scan::object_id_at;
use vcmetrics::window::Period;

/// Wall-clock time that moves with tokio's paused clock.
#[derive(Clone)]
struct SimClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(self.start.elapsed()).unwrap()
    }
}

/// How long the audit log keeps events in the simulation: short enough that the retention
/// horizon passes the first windows since `start_from` during a scenario, and the archive
/// (events older than 40 hours) moves events of the windows the check recounts.
const TTL_HOURS: i64 = 60;

/// The configuration of every replica of a scenario. `aggregate_timeout` is how long a roll-up
/// may run on the server: the longer it is, the longer a stalled roll-up can land after the
/// lease has moved on (past the new leader's next ticks).
fn sim_config(instance: &str, start_from: DateTime<Utc>, aggregate_timeout: Duration) -> Config {
    let text = format!(
        "timezone = \"Europe/Berlin\"\nstart_from = \"{}\"\naudit_ttl = \"{TTL_HOURS}h\"\n\
         lease_ttl = \"2m\"\naggregate_timeout = \"{}s\"\nmetrics_refresh = \"10m\"\n\
         shutdown_grace = \"20s\"\n\
         [late_events]\nsettle = \"1m\"\nscan_limit = 400\n\
         [periods.hourly]\nschedule = \"0 */20 * * * *\"\nlookback = 2\nmax_windows_per_run = 12\n\
         [periods.daily]\nschedule = \"0 5 * * * *\"\nlookback = 1\nmax_windows_per_run = 4\n\
         [periods.weekly]\nschedule = \"0 7 */4 * * *\"\nlookback = 1\n\
         [periods.monthly]\nschedule = \"0 9 */4 * * *\"\nlookback = 1\n\
         [archive]\nafter = \"40h\"\nschedule = \"0 30 */6 * * *\"\nbatch_size = 40\n",
        start_from.to_rfc3339(),
        aggregate_timeout.as_secs()
    );
    from_toml(&text, &[("VCMETRICS_INSTANCE_ID", instance)]).unwrap()
}

struct Replica {
    name: String,
    status: Arc<Status>,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<vcmetrics::error::Result<()>>,
    _ticks: mpsc::Sender<Period>,
}

fn start_replica(store: &Arc<FakeStore>, config: Config, clock: SimClock) -> Replica {
    let status = Arc::new(Status::new().unwrap());
    let (ticks, tick_rx) = mpsc::channel(4);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let name = config.instance_id.clone();
    let daemon = Daemon::new(store.clone(), Arc::new(config), clock, status.clone());
    let handle = tokio::spawn(daemon.run(tick_rx, shutdown_rx));
    Replica {
        name,
        status,
        shutdown,
        handle,
        _ticks: ticks,
    }
}

/// What happened, for the report of a failing seed.
#[derive(Default, Clone)]
struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    fn say(&self, clock: &SimClock, what: String) {
        let at = clock.now().format("%m-%d %H:%M:%S");
        self.0.lock().unwrap().push(format!("{at} {what}"));
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.0.lock().unwrap();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Where a scenario starts: near one of Berlin's DST changes, or anywhere in the year.
fn start_instant(rng: &mut Rng) -> DateTime<Utc> {
    let anchors = [
        "2026-03-27T08:00:00Z",
        "2026-10-23T08:00:00Z",
        "2026-06-10T08:00:00Z",
    ];
    let anchor: DateTime<Utc> = anchors[rng.below(anchors.len() as u64) as usize]
        .parse()
        .unwrap();
    anchor + chrono::Duration::minutes(rng.below(3 * 24 * 60) as i64) - chrono::Duration::days(1)
}

/// One scenario; `Err` with the reason when an invariant broke.
async fn scenario(seed: u64, trace: &Trace) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let start = start_instant(&mut rng);
    let clock = SimClock {
        base: start,
        start: tokio::time::Instant::now(),
    };
    let start_from = start - chrono::Duration::days(2);
    // Mostly the default-like 3 minutes; sometimes long enough that a stalled roll-up lands
    // after the new leader's next tick has written the same windows.
    let aggregate_timeout = if rng.chance(60) {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(1800)
    };
    let store = Arc::new(FakeStore::default());
    store.with(|s| {
        s.audit_ttl = Some(Duration::from_secs(TTL_HOURS as u64 * 3600));
        s.flaky_state = seed;
    });
    // History since `start_from`, written on time.
    let mut t = start_from;
    while t < start {
        store.write_call(t, t + chrono::Duration::seconds(2));
        t += chrono::Duration::minutes(10 + rng.below(80) as i64);
    }
    trace.say(
        &clock,
        format!(
            "seed {seed}: start, history from {start_from}, aggregate_timeout {}s",
            aggregate_timeout.as_secs()
        ),
    );

    // The audit log's TTL monitor: every minute, deletes what is older than the TTL.
    let ttl_monitor = {
        let (store, clock) = (store.clone(), clock.clone());
        tokio::spawn(async move {
            loop {
                store.expire(clock.now() - chrono::Duration::hours(TTL_HOURS));
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        })
    };

    let mut generation = 0;
    let mut replicas: Vec<Option<Replica>> = Vec::new();
    let replica_count = 2 + usize::from(rng.chance(25));
    for _ in 0..replica_count {
        generation += 1;
        let name = format!("r{generation}");
        replicas.push(Some(start_replica(
            &store,
            sim_config(&name, start_from, aggregate_timeout),
            clock.clone(),
        )));
    }

    let fault_time = chrono::Duration::hours(6 + rng.below(6) as i64);
    let faults_end = clock.now() + fault_time;
    let mut leaders_seen = BTreeMap::new();
    // When late events were stamped: later late events land in the same windows.
    let mut late: Vec<DateTime<Utc>> = Vec::new();
    while clock.now() < faults_end {
        tokio::time::sleep(rng.seconds(20, 1200)).await;
        check_one_leader(&replicas, &mut leaders_seen)?;
        let now = clock.now();
        match rng.below(21) {
            // Live writes, the bulk of the traffic.
            0..=6 => {
                for _ in 0..1 + rng.below(5) {
                    let at = now - chrono::Duration::seconds(rng.below(30) as i64);
                    store.write_call(at, now);
                }
            }
            // Late writes: inside the lookback, beyond it, beyond the retention.
            7 | 8 => {
                let back = match rng.below(10) {
                    0..=4 => chrono::Duration::minutes(30 + rng.below(150) as i64),
                    5..=8 => chrono::Duration::hours(3 + rng.below(TTL_HOURS as u64) as i64),
                    _ => chrono::Duration::hours(TTL_HOURS + 1 + rng.below(120) as i64),
                };
                store.write_call(now - back, now);
                late.push(now - back);
                trace.say(&clock, format!("late write {} back", back.num_minutes()));
            }
            9 => {
                let i = rng.below(replicas.len() as u64) as usize;
                if let Some(r) = replicas[i].take() {
                    r.handle.abort();
                    let _ = r.handle.await;
                    trace.say(&clock, format!("kill {}", r.name));
                }
            }
            10 => {
                let i = rng.below(replicas.len() as u64) as usize;
                if let Some(r) = replicas[i].take() {
                    let _ = r.shutdown.send(true);
                    let stopped = tokio::time::timeout(Duration::from_secs(60), r.handle).await;
                    trace.say(&clock, format!("sigterm {}", r.name));
                    match stopped {
                        Ok(Ok(Ok(()))) => {}
                        other => {
                            return Err(format!(
                                "{} did not stop cleanly on SIGTERM: {other:?}",
                                r.name
                            ))
                        }
                    }
                }
            }
            11 => {
                if let Some(slot) = replicas.iter_mut().find(|r| r.is_none()) {
                    generation += 1;
                    let name = format!("r{generation}");
                    trace.say(&clock, format!("start {name}"));
                    *slot = Some(start_replica(
                        &store,
                        sim_config(&name, start_from, aggregate_timeout),
                        clock.clone(),
                    ));
                }
            }
            12 => {
                let down = rng.seconds(10, 900);
                trace.say(&clock, format!("store down {}s", down.as_secs()));
                store.with(|s| s.down = true);
                tokio::time::sleep(down).await;
                store.with(|s| s.down = false);
            }
            13 => {
                let hang = rng.seconds(5, 300);
                trace.say(&clock, format!("store hangs {}s", hang.as_secs()));
                store.with(|s| s.hang = true);
                tokio::time::sleep(hang).await;
                store.with(|s| s.hang = false);
            }
            14 => {
                let n = 1 + rng.below(3) as usize;
                trace.say(&clock, format!("{n} roll-ups fail"));
                store.with(|s| s.failing_aggregates += n);
            }
            15 => {
                trace.say(&clock, "a late-mark write fails".into());
                store.with(|s| s.failing_late_marks += 1);
            }
            // A roll-up that stalls between its read and its write, past the lease, while its
            // replica is cut off from the lease (a stalled network, a paused VM).
            16 | 17 => {
                // Within the time limit: the server stops a command that runs longer.
                let stall = rng.seconds(60, aggregate_timeout.as_secs() - 10);
                let slow_merge = rng.chance(50);
                // The next few roll-ups: the regular windows' and the late windows' alike.
                let count = 1 + rng.below(8);
                store.with(|s| {
                    for _ in 0..count {
                        if slow_merge {
                            s.slow_merges.push_back(stall);
                        } else {
                            s.stalled_roll_ups.push_back(stall);
                        }
                    }
                });
                let leader = replicas
                    .iter()
                    .flatten()
                    .find(|r| r.status.is_leader())
                    .map(|r| r.name.clone());
                if let Some(leader) = leader.filter(|_| rng.chance(70)) {
                    let cut = rng.seconds(60, 600);
                    trace.say(
                        &clock,
                        format!(
                            "next {count} roll-up(s) {} {}s; {leader} cut off the lease for {}s",
                            if slow_merge { "merge for" } else { "stall" },
                            stall.as_secs(),
                            cut.as_secs()
                        ),
                    );
                    store.with(|s| s.cut_off.push(leader.clone()));
                    // Meanwhile, late events land in windows the stalled reads may cover.
                    tokio::time::sleep(rng.seconds(1, 90)).await;
                    for _ in 0..1 + rng.below(3) {
                        let at = match late.len() {
                            0 => {
                                clock.now()
                                    - chrono::Duration::minutes(200 + rng.below(2880) as i64)
                            }
                            n => late[rng.below(n as u64) as usize],
                        };
                        store.write_call(at, clock.now());
                    }
                    tokio::time::sleep(cut).await;
                    store.with(|s| s.cut_off.retain(|h| *h != leader));
                }
            }
            // Archive moves are read by chunks while they happen.
            18 => {
                store.with(|s| s.archive_moves_during_reads += 1);
            }
            // For a while, single operations fail at random.
            19 => {
                let percent = 5 + rng.below(30);
                let length = rng.seconds(600, 7200);
                trace.say(
                    &clock,
                    format!("{percent}% of operations fail for {}s", length.as_secs()),
                );
                store.with(|s| s.flaky_percent = percent);
                tokio::time::sleep(length).await;
                store.with(|s| s.flaky_percent = 0);
            }
            _ => {
                trace.say(&clock, "quiet".into());
            }
        }
    }

    // The faults stop: every replica that is down comes back, and the system settles.
    trace.say(&clock, "faults stop".into());
    store.with(|s| {
        s.down = false;
        s.hang = false;
        s.failing_aggregates = 0;
        s.failing_late_marks = 0;
        s.stalled_roll_ups.clear();
        s.slow_merges.clear();
        s.cut_off.clear();
        s.flaky_percent = 0;
    });
    for slot in replicas.iter_mut().filter(|r| r.is_none()) {
        generation += 1;
        let name = format!("r{generation}");
        *slot = Some(start_replica(
            &store,
            sim_config(&name, start_from, aggregate_timeout),
            clock.clone(),
        ));
    }
    let last_write = clock.now();
    let settle_end = clock.now() + chrono::Duration::hours(9);
    while clock.now() < settle_end {
        tokio::time::sleep(Duration::from_secs(600)).await;
        check_one_leader(&replicas, &mut leaders_seen)?;
    }
    let now = clock.now();
    let settled = sim_config("check", start_from, aggregate_timeout);
    let result = check_windows(&store, &settled, now)
        .and_then(|()| check_marks(&store, &settled, now, last_write));
    for r in replicas.into_iter().flatten() {
        let _ = r.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(60), r.handle).await;
    }
    ttl_monitor.abort();
    result
}

fn check_one_leader(
    replicas: &[Option<Replica>],
    seen: &mut BTreeMap<String, usize>,
) -> Result<(), String> {
    let leaders: Vec<&str> = replicas
        .iter()
        .flatten()
        .filter(|r| r.status.is_leader())
        .map(|r| r.name.as_str())
        .collect();
    for l in &leaders {
        *seen.entry((*l).to_owned()).or_default() += 1;
    }
    if leaders.len() > 1 {
        return Err(format!("two replicas lead at once: {leaders:?}"));
    }
    Ok(())
}

/// How long after a window closes its period's schedule has surely fired (hourly at the
/// boundary, daily 5, weekly 7 and monthly 9 minutes past it) and its roll-up has landed.
const SCHEDULE_SLACK_MINUTES: i64 = 10;

/// Every window since `start_from` that the retention allows and that closed a schedule's slack
/// before `now` equals a recount. (A window that closes at the very instant of the check has
/// its tick due at that instant too: seed 91017 ended exactly on an hour.)
fn check_windows(store: &FakeStore, config: &Config, now: DateTime<Utc>) -> Result<(), String> {
    let horizon = now - chrono::Duration::hours(TTL_HOURS);
    let written_by = now - chrono::Duration::minutes(SCHEDULE_SLACK_MINUTES);
    let start_from = config.start_from.unwrap();
    let (calls, archived) = store.with(|s| (s.calls.clone(), s.archive.clone()));
    let events: Vec<DateTime<Utc>> = calls.into_iter().chain(archived).collect();
    let mut problems = Vec::new();
    for period in Period::ALL {
        let windows = config.calendar.windows_covering(period, start_from, now);
        for w in windows.iter().filter(|w| w.is_closed_at(written_by)) {
            if w.start < horizon || w.start < start_from {
                continue;
            }
            let want = events.iter().filter(|t| w.contains(**t)).count() as i32;
            let got = store.with(|s| {
                s.docs
                    .get(&(period.as_str().to_owned(), w.start))
                    .map(|d| d.get_i32("totalCalls").unwrap_or(-1))
            });
            if got != Some(want) {
                problems.push(format!(
                    "{period} {}: stored {got:?}, recount {want}",
                    w.start.to_rfc3339()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} window(s) differ from a recount:\n{}",
            problems.len(),
            problems[..problems.len().min(10)].join("\n")
        ))
    }
}

/// Every watermark at the end of the newest closed window (up to the period's schedule), every
/// late-event mark past every event written.
fn check_marks(
    store: &FakeStore,
    config: &Config,
    now: DateTime<Utc>,
    last_write: DateTime<Utc>,
) -> Result<(), String> {
    let (watermarks, marks) = store.with(|s| (s.watermarks.clone(), s.late_marks.clone()));
    for period in Period::ALL {
        let open = config.calendar.window_start(period, now);
        // The newest window closed by the period's last run (its schedule fires at least every
        // 4 hours).
        let newest_closed_then = config
            .calendar
            .window_start(period, now - chrono::Duration::hours(4));
        // Where the period stands, as a run would take it: the stored watermark, else where it
        // starts (`start_from`'s window); never before the retention horizon, since the windows
        // before it are left alone (a watermark is stored only when it moves).
        let horizon = Some(now - chrono::Duration::hours(TTL_HOURS));
        let watermark = watermarks.get(&period).copied();
        let effective = match watermark {
            Some(w) => respect_retention(&config.calendar, period, w, horizon),
            None => initial_watermark(&config.calendar, period, now, config.start_from, horizon),
        };
        // (In effect past the open window when the horizon is inside it.)
        let fine = effective >= newest_closed_then && watermark.is_none_or(|w| w <= open);
        if !fine {
            return Err(format!(
                "{period} watermark {watermark:?} (in effect {effective}), want between \
                 {newest_closed_then} and {open}"
            ));
        }
        let mark = marks.get(&period).copied();
        if mark.is_none_or(|m| m <= object_id_at(last_write)) {
            return Err(format!(
                "{period} late-event mark {:?} is not past the last write at {last_write}",
                mark.map(|m| m.timestamp().to_chrono())
            ));
        }
    }
    Ok(())
}

/// The seeds to run: `SIM_SEED` alone, or `SIM_SEEDS` (a count from 0, default 500, or a range
/// `<from>..<to>`), split between this test's `part` of `parts`.
fn seeds(part: u64, parts: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        return if part == 0 {
            vec![seed.parse().expect("SIM_SEED is a number")]
        } else {
            Vec::new()
        };
    }
    let range = match std::env::var("SIM_SEEDS") {
        Err(_) => 0..500,
        Ok(text) => match text.split_once("..") {
            Some((from, to)) => {
                from.parse().expect("SIM_SEEDS=<from>..<to>")
                    ..to.parse().expect("SIM_SEEDS=<from>..<to>")
            }
            None => 0..text.parse().expect("SIM_SEEDS is a number or <from>..<to>"),
        },
    };
    range.filter(|s| s % parts == part).collect()
}

fn run_seeds(part: u64, parts: u64) {
    // SIM_LOG=1: the daemons' own log lines, for replaying one seed.
    if std::env::var("SIM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
    let watchdog = Watchdog::start();
    let mut failures = Vec::new();
    for seed in seeds(part, parts) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let trace = Trace::default();
        watchdog.watch(seed, &trace);
        if let Err(why) = runtime.block_on(scenario(seed, &trace)) {
            failures.push(failure(seed, &why, &trace));
            if failures.len() >= 3 {
                break;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn failure(seed: u64, why: &str, trace: &Trace) -> String {
    let lines = if std::env::var("SIM_SEED").is_ok() {
        usize::MAX
    } else {
        40
    };
    format!(
        "seed {seed} (replay: SIM_SEED={seed} cargo test --test simulation): {why}\n\
         --- trace ---\n{}",
        trace.tail(lines)
    )
}

/// A seed that does not finish within a minute of real time is stuck: simulated time stopped
/// moving (a loop that never awaits a timer) or a lock is held. It is reported like any other
/// failure, and the process ends, since the stuck thread cannot be stopped.
struct Watchdog(std::sync::mpsc::Sender<(u64, Trace)>);

impl Watchdog {
    const LIMIT: Duration = Duration::from_secs(60);

    fn start() -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, Trace)>();
        std::thread::spawn(move || {
            let mut current: Option<(u64, Trace)> = None;
            loop {
                match rx.recv_timeout(Self::LIMIT) {
                    Ok(next) => current = Some(next),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if let Some((seed, trace)) = &current {
                            let why = "stuck: no progress within a minute of real time";
                            eprintln!("{}", failure(*seed, why, trace));
                            std::process::exit(101);
                        }
                    }
                }
            }
        });
        Watchdog(tx)
    }

    fn watch(&self, seed: u64, trace: &Trace) {
        let _ = self.0.send((seed, trace.clone()));
    }
}

#[test]
fn simulated_weeks_of_faults_leave_every_window_exact_part_0() {
    run_seeds(0, 2);
}

#[test]
fn simulated_weeks_of_faults_leave_every_window_exact_part_1() {
    run_seeds(1, 2);
}
