//! Sections 6 and 7 of the MongoDB benchmark (`BENCH_SECTIONS=scale`, or `all`): how the cost
//! grows, and how fresh the open window is under live load.
//!
//! 6. On one node, at `BENCH_SCALE_SIZES` (default 1000000 and 10000000) events over 30 days:
//!    `vcmetrics recompute` of each period (time, events/s, peak RSS), the engine's floor, and —
//!    at the smallest size — the client-side stream. Recompute and floor run alternately
//!    `BENCH_SCALE_SAMPLES` times (default 3); the figures are their medians (one run of either
//!    varies by about 10% on the 2-core machine), and the spread is printed beside them. Then
//!    the ratio of events/s between the largest and the smallest size (linear growth is at
//!    least 0.8), the ratio to the floor at both (target <= 1.5) and the peak RSS at both
//!    (flat). With `BENCH_CLUSTER_URI` (a sharded cluster; its audit log is sharded on
//!    `{sessionId: "hashed"}` before it is loaded) the same figures at the smallest size
//!    there, and the ratio of its times to the single node's, measured in the same run on the
//!    same machine.
//! 7. On the largest single-node audit log (`BENCH_FRESHNESS_SECONDS`, default 660, 0 skips):
//!    `vcmetrics run` with the default schedules while a writer inserts `BENCH_LIVE_RATE`
//!    (default 500) events a second stamped with their write time, their users drawn from a pool
//!    of `BENCH_LIVE_USERS` (default 50000, as many as the history's; 0: every event a new
//!    user); how long after its write each event is counted in its open hourly window's document
//!    (p50, p99), and the hourly runs' durations. Target: p99 within the hourly schedule's
//!    interval plus 10 s, runs under 1 s.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use chrono::{DateTime, DurationRound, Utc};
use vcmetrics::rollup::plan_range;
use vcmetrics::store::MarkStore;
use vcmetrics::window::Period;

use super::{client_side, env_number, floor, generate_into, recompute, scratch};

/// The size of the histories' user pool (`vcmetrics generate --users`).
pub const HISTORY_USERS: usize = 50_000;

/// Per hourly window (its start), what happened in it, in order.
type ByHour<T> = BTreeMap<DateTime<Utc>, Vec<T>>;

/// One period's figures at one size on one deployment: the medians of its samples.
#[derive(Debug, Clone, Copy)]
struct Figures {
    events: u64,
    seconds: f64,
    floor_seconds: f64,
    peak_kib: u64,
    /// The fastest and the slowest recompute, and the same of the floor.
    spread: [(f64, f64); 2],
}

/// The median of some samples (the mean of the middle two of an even number), and the
/// smallest and largest.
fn median_and_spread(mut samples: Vec<f64>) -> (f64, (f64, f64)) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    (median, (samples[0], samples[n - 1]))
}

impl Figures {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
    fn x_floor(&self) -> f64 {
        self.seconds / self.floor_seconds
    }
}

/// A loaded audit log: its database name and the range the events span.
struct Loaded {
    name: String,
    stored: u64,
}

/// Generates `events` over 30 days into a fresh database (sharded first when asked), then
/// creates the indexes and reads the range once (the first read after a load costs extra).
async fn load(
    uri: &str,
    label: &str,
    events: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sharded: bool,
) -> anyhow::Result<Loaded> {
    let name = format!("vcm_scale_{}_{label}_{events}", std::process::id());
    let (config, store, db) = scratch(uri, &name, false).await?;
    if sharded {
        mongodb::Client::with_uri_str(uri)
            .await?
            .database("admin")
            .run_command(doc! {
                "shardCollection": format!("{name}.videocallauditlogs"),
                "key": {"sessionId": "hashed"},
            })
            .await?;
    }
    let generated = generate_into(uri, &name, events, from, to)?;
    let started = Instant::now();
    super::create_indexes(&config, &store).await?;
    let indexed = started.elapsed();
    let audit = db.collection::<Document>("videocallauditlogs");
    let started = Instant::now();
    let _: Vec<Document> = futures_util::TryStreamExt::try_collect(
        audit
            .aggregate(vec![
                doc! {"$match": {"timestamp": {"$gte": bson::DateTime::from_chrono(from), "$lt": bson::DateTime::from_chrono(to)}}},
                doc! {"$group": {"_id": null, "d": {"$sum": "$duration"}}},
            ])
            .max_time(Duration::from_secs(3600))
            .await?,
    )
    .await?;
    let stored = audit.count_documents(doc! {}).await?;
    println!(
        "   {label} {events}: generated in {:.0} s ({:.0} events/s), indexed in {:.0} s, first read {:.0} s; {stored} stored",
        generated.as_secs_f64(),
        events as f64 / generated.as_secs_f64(),
        indexed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    store.shutdown().await;
    Ok(Loaded { name, stored })
}

/// Recompute and floor of every period on a loaded audit log.
async fn measure(
    uri: &str,
    loaded: &Loaded,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<BTreeMap<Period, Figures>> {
    let config = super::config(uri, &loaded.name)?;
    let db = mongodb::Client::with_uri_str(uri)
        .await?
        .database(&loaded.name);
    let audit = db.collection::<Document>("videocallauditlogs");
    let mut out = BTreeMap::new();
    for period in Period::ALL {
        let plan = plan_range(&config, period, from, to, now);
        let (Some(first), Some(last)) = (plan.windows.first(), plan.windows.last()) else {
            continue;
        };
        let events = audit
            .count_documents(doc! {"timestamp": {"$gte": bson::DateTime::from_chrono(first.start), "$lt": bson::DateTime::from_chrono(last.end)}})
            .await?;
        let (mut took, mut floor_took, mut peak_kib) = (Vec::new(), Vec::new(), 0);
        for _ in 0..env_number("BENCH_SCALE_SAMPLES", 3).max(1) {
            let (seconds, peak) = recompute(uri, &loaded.name, period, from, to)?;
            took.push(seconds.as_secs_f64());
            peak_kib = peak_kib.max(peak);
            floor_took.push(
                floor(&db, period, first.start, last.end)
                    .await?
                    .0
                    .as_secs_f64(),
            );
        }
        let (seconds, recompute_spread) = median_and_spread(took);
        let (floor_seconds, floor_spread) = median_and_spread(floor_took);
        out.insert(
            period,
            Figures {
                events,
                seconds,
                floor_seconds,
                peak_kib,
                spread: [recompute_spread, floor_spread],
            },
        );
    }
    Ok(out)
}

fn print_table(label: &str, figures: &BTreeMap<Period, Figures>, client: Option<(f64, u64)>) {
    println!(
        "   {label} (medians)\n   {:>8}  {:>9}  {:>9}  {:>13}  {:>10}  {:>9}  {:>13}  {:>8}  {:>9}  {:>9}",
        "period",
        "events",
        "seconds",
        "spread",
        "events/s",
        "floor s",
        "spread",
        "x floor",
        "x client",
        "peak RSS"
    );
    for (period, f) in figures {
        let x_client = client.map_or_else(
            || "skipped".to_owned(),
            |(took, stored)| {
                format!(
                    "{:.1}",
                    took * f.events as f64 / stored.max(1) as f64 / f.seconds
                )
            },
        );
        let [(fastest, slowest), (floor_fastest, floor_slowest)] = f.spread;
        println!(
            "   {:>8}  {:>9}  {:>9.2}  {:>13}  {:>10.0}  {:>9.2}  {:>13}  {:>8.2}  {:>9}  {:>5.1} MiB",
            period.as_str(),
            f.events,
            f.seconds,
            format!("{fastest:.2}-{slowest:.2}"),
            f.rate(),
            f.floor_seconds,
            format!("{floor_fastest:.2}-{floor_slowest:.2}"),
            f.x_floor(),
            x_client,
            f.peak_kib as f64 / 1024.0
        );
    }
}

pub async fn run(uri: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    let (from, to) = (now - chrono::Duration::days(30), now);
    let sizes: Vec<usize> = std::env::var("BENCH_SCALE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1_000_000, 10_000_000]);
    println!("\n6. how cost grows: recompute of 30 days at {sizes:?} events, one node");
    let mut by_size = Vec::new();
    let mut largest = None;
    for (i, &events) in sizes.iter().enumerate() {
        let loaded = load(uri, "node", events, from, to, false).await?;
        let client = if i == 0 {
            let db = mongodb::Client::with_uri_str(uri)
                .await?
                .database(&loaded.name);
            let (took, _) = client_side(&db, from, to).await?;
            Some((took.as_secs_f64(), loaded.stored))
        } else {
            None
        };
        let figures = measure(uri, &loaded, from, to, now).await?;
        print_table(
            &format!("one node, {} events", loaded.stored),
            &figures,
            client,
        );
        by_size.push((loaded.stored, figures));
        if i + 1 == sizes.len() {
            largest = Some(loaded);
        } else {
            drop_database(uri, &loaded.name).await?;
        }
    }
    if let [(small_n, small), .., (large_n, large)] = &by_size[..] {
        println!("   growth from {small_n} to {large_n} events (events/s ratio; linear >= 0.8), x floor (target <= 1.5) and peak RSS at both:");
        for (period, s) in small {
            let Some(l) = large.get(period) else { continue };
            println!(
                "   {:>8}: events/s ratio {:.2}; x floor {:.2} -> {:.2}; peak RSS {:.1} -> {:.1} MiB",
                period.as_str(),
                l.rate() / s.rate(),
                s.x_floor(),
                l.x_floor(),
                s.peak_kib as f64 / 1024.0,
                l.peak_kib as f64 / 1024.0
            );
        }
    }

    if let Ok(cluster) = std::env::var("BENCH_CLUSTER_URI") {
        let events = sizes[0];
        println!("\n   the sharded cluster (audit log sharded on {{sessionId: \"hashed\"}}), {events} events:");
        let loaded = load(&cluster, "cluster", events, from, to, true).await?;
        let figures = measure(&cluster, &loaded, from, to, now).await?;
        print_table(
            &format!("cluster, {} events", loaded.stored),
            &figures,
            None,
        );
        if let Some((_, single)) = by_size.first() {
            for (period, c) in &figures {
                let Some(s) = single.get(period) else {
                    continue;
                };
                println!(
                    "   {:>8}: cluster time / one node time {:.2}; floor {:.2}",
                    period.as_str(),
                    c.seconds / s.seconds,
                    c.floor_seconds / s.floor_seconds
                );
            }
        }
        drop_database(&cluster, &loaded.name).await?;
    }

    if let Some(loaded) = largest {
        let seconds = env_number("BENCH_FRESHNESS_SECONDS", 660);
        if seconds > 0 {
            freshness(uri, &loaded, now, Duration::from_secs(seconds as u64)).await?;
        }
        drop_database(uri, &loaded.name).await?;
    }
    Ok(())
}

/// Section 7 alone (`BENCH_SECTIONS=freshness`), on a history of `BENCH_FRESHNESS_EVENTS` events.
pub async fn freshness_alone(uri: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    let events = env_number("BENCH_FRESHNESS_EVENTS", 10_000_000);
    let (from, to) = (now - chrono::Duration::days(30), now);
    let loaded = load(uri, "node", events, from, to, false).await?;
    let seconds = env_number("BENCH_FRESHNESS_SECONDS", 660).max(1);
    let measured = freshness(uri, &loaded, now, Duration::from_secs(seconds as u64)).await;
    drop_database(uri, &loaded.name).await?;
    measured
}

async fn drop_database(uri: &str, name: &str) -> anyhow::Result<()> {
    mongodb::Client::with_uri_str(uri)
        .await?
        .database(name)
        .drop()
        .await?;
    Ok(())
}

/// Section 7: freshness of the open hourly window under live writes, on `loaded`'s history.
async fn freshness(
    uri: &str,
    loaded: &Loaded,
    history_end: DateTime<Utc>,
    length: Duration,
) -> anyhow::Result<()> {
    let rate = env_number("BENCH_LIVE_RATE", 500);
    // Whose events: drawn at random from a pool as large as the history's (the generator's
    // --users), or with BENCH_LIVE_USERS=0 every event a new user (the user sets' worst case).
    let pool = env_number("BENCH_LIVE_USERS", HISTORY_USERS);
    let users: Vec<bson::oid::ObjectId> = (0..pool).map(|_| bson::oid::ObjectId::new()).collect();
    println!(
        "\n7. freshness under live load: {rate} events/s for {} s on {} events of history, `vcmetrics run` with the default schedules; {}",
        length.as_secs(),
        loaded.stored,
        if pool == 0 {
            "every event a new user".to_owned()
        } else {
            format!("users drawn at random from a pool of {pool}")
        }
    );
    let config = super::config(uri, &loaded.name)?;
    // The target: the hourly schedule's interval plus 10 s.
    let schedule = &config.period(Period::Hourly).schedule;
    let tz = config.calendar.time_zone();
    let interval = schedule
        .next_after(tz, Utc::now())
        .and_then(|first| Some((first, schedule.next_after(tz, first)?)))
        .and_then(|(first, second)| (second - first).to_std().ok())
        .ok_or_else(|| anyhow::anyhow!("the hourly schedule never fires twice"))?;
    let target = interval + Duration::from_secs(10);
    let store = vcmetrics::store::MongoStore::connect(&config).await?;
    // Section 6 computed the history: the daemon starts from the current windows.
    for period in Period::ALL {
        let start = config.calendar.window_start(period, history_end);
        store.advance_watermark(period, start, Utc::now()).await?;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcmetrics"))
        .arg("run")
        .env("MONGODB_URI", uri)
        .env("VCMETRICS_DATABASE", &loaded.name)
        .env("VCMETRICS_LISTEN", "127.0.0.1:0")
        // The incremental runs' debug lines say where each hourly run's time went.
        .env(
            "VCMETRICS_LOG",
            "info,vcmetrics::daemon::incremental=debug,vcmetrics::store::mongo=debug",
        )
        .env("VCMETRICS_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Every period's runs as (period, finished, duration in ms): the other periods' regular
    // runs share the machine with the hourly ones.
    let runs: Arc<Mutex<Vec<(String, Instant, u64)>>> = Arc::default();
    // Each incremental run's parts, in order, from its "writes kept" and "incremental run" lines.
    let parts: Arc<Mutex<Vec<RunParts>>> = Arc::default();
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let sink = runs.clone();
    let parts_sink = parts.clone();
    std::thread::spawn(move || {
        let mut kept = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "writes kept" {
                kept = Some((millis(&v["slices_ms"]), millis(&v["users_ms"])));
            } else if v["message"] == "incremental run" {
                let (slices, users) = kept.take().unwrap_or_default();
                parts_sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(RunParts {
                        slices,
                        users,
                        keep: millis(&v["keep_ms"]),
                        finish: millis(&v["finish_ms"]),
                        late_scan: millis(&v["late_scan_ms"]),
                    });
            } else if v["message"] == "run finished" {
                if let (Some(period), Some(ms)) = (v["period"].as_str(), v["duration_ms"].as_u64())
                {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push((
                        period.to_owned(),
                        Instant::now(),
                        ms,
                    ));
                }
            }
        }
    });

    // The start-up is apart from the measured steady state: every period's first run, the
    // hourly one reading the history as the writes of its open hour (a bulk load gives every
    // event a write time of now, unlike a platform writing as events happen).
    let up = Instant::now();
    let first_runs = loop {
        let finished: Vec<(String, u64)> = runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, _, ms)| (p.clone(), *ms))
            .collect();
        if Period::ALL
            .iter()
            .all(|p| finished.iter().any(|(q, _)| q == p.as_str()))
        {
            break finished;
        }
        if up.elapsed() > Duration::from_secs(900) {
            anyhow::bail!("the daemon's first runs did not all finish within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "   start-up, not measured: every period's first run done after {:.1} s (period: ms {:?})",
        up.elapsed().as_secs_f64(),
        first_runs
    );
    let db = mongodb::Client::with_uri_str(uri)
        .await?
        .database(&loaded.name);
    let audit = db.collection::<Document>("videocallauditlogs");
    let metrics = db.collection::<Document>("videocallmetrics");
    // Each hour's writes in order, by write time: the k-th is counted once the hour's
    // totalAttempts reaches k (the history has no event in these hours).
    let writes: Arc<Mutex<ByHour<Instant>>> = Arc::default();
    let seen: Arc<Mutex<ByHour<(usize, Instant)>>> = Arc::default();
    let deadline = Instant::now() + length;
    let batch = (rate / 10).max(1);
    let writer = {
        let writes = writes.clone();
        async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while Instant::now() < deadline {
                tick.tick().await;
                let at = Utc::now();
                let hour = at.duration_trunc(chrono::Duration::hours(1))?;
                let docs: Vec<Document> = (0..batch)
                    .map(|_| doc! {"sessionId": bson::oid::ObjectId::new(),
                        "userId": if users.is_empty() { bson::oid::ObjectId::new() } else { users[rng.random_range(0..users.len())] },
                        "action": "join_attempt", "timestamp": bson::DateTime::from_chrono(at), "metadata": {}})
                    .collect();
                audit.insert_many(docs).ordered(false).await?;
                let written = Instant::now();
                writes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(hour)
                    .or_default()
                    .extend(std::iter::repeat_n(written, batch));
            }
            anyhow::Ok(())
        }
    };
    let poller = {
        let seen = seen.clone();
        let writes = writes.clone();
        async move {
            // Past the deadline by one schedule interval and a run, so the last writes count.
            while Instant::now() < deadline + target + Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let hours: Vec<DateTime<Utc>> = writes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .copied()
                    .collect();
                for hour in hours {
                    let doc = metrics
                        .find_one(
                            doc! {"period": "hourly", "date": bson::DateTime::from_chrono(hour)},
                        )
                        .await?;
                    let counted = doc
                        .as_ref()
                        .and_then(|d| vcmetrics::metrics_document::number(d.get("totalAttempts")?))
                        .unwrap_or(0.0) as usize;
                    seen.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(hour)
                        .or_default()
                        .push((counted, Instant::now()));
                }
                let all_counted = {
                    let w = writes.lock().unwrap_or_else(|p| p.into_inner());
                    let s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    Instant::now() > deadline
                        && w.iter().all(|(h, v)| {
                            s.get(h)
                                .and_then(|obs| obs.last())
                                .is_some_and(|(n, _)| *n >= v.len())
                        })
                };
                if all_counted {
                    break;
                }
            }
            anyhow::Ok(())
        }
    };
    let (written, polled) = tokio::join!(writer, poller);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    written?;
    polled?;

    let writes = writes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut latencies = Vec::new();
    let mut missing = 0;
    for (hour, times) in &writes {
        let observed = seen.get(hour).cloned().unwrap_or_default();
        for (k, written) in times.iter().enumerate() {
            match observed.iter().find(|(n, at)| *n > k && *at >= *written) {
                Some((_, at)) => latencies.push(at.duration_since(*written).as_secs_f64()),
                None => missing += 1,
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let runs = runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "   {} events written ({:.0}/s), {} counted: write to counted p50 {:.1} s, p99 {:.1} s, max {:.1} s (target p99 <= {} s); not counted by the end: {missing}",
        writes.values().map(Vec::len).sum::<usize>(),
        writes.values().map(Vec::len).sum::<usize>() as f64 / length.as_secs_f64(),
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        target.as_secs()
    );
    // The first hourly run is the start-up's; the steady state is what the target is for.
    let hourly: Vec<(Instant, u64)> = runs
        .iter()
        .filter(|(p, _, _)| p == "hourly")
        .map(|(_, at, ms)| (*at, *ms))
        .collect();
    let others: Vec<(String, Instant, Instant)> = runs
        .iter()
        .filter(|(p, _, _)| p != "hourly")
        .map(|(p, at, ms)| (p.clone(), *at - Duration::from_millis(*ms), *at))
        .collect();
    let mut steady: Vec<u64> = hourly.iter().skip(1).map(|(_, ms)| *ms).collect();
    steady.sort_unstable();
    let at = |q: f64| {
        steady
            .get(((steady.len() as f64 * q) as usize).min(steady.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let alone: Vec<u64> = hourly
        .iter()
        .skip(1)
        .filter(|(end, ms)| {
            let start = *end - Duration::from_millis(*ms);
            !others.iter().any(|(_, a, b)| *a < *end && start < *b)
        })
        .map(|(_, ms)| *ms)
        .collect();
    println!(
        "   hourly runs: {} (ms: {:?}); after the first: p50 {} ms, p99 {} ms, max {} ms, {} of {} under 1000 ms (target < 1000 ms each); those that overlapped no other period's run (ms): {:?}",
        hourly.len(),
        hourly.iter().map(|(_, ms)| *ms).collect::<Vec<_>>(),
        at(0.5),
        at(0.99),
        steady.last().copied().unwrap_or(0),
        steady.iter().filter(|ms| **ms < 1000).count(),
        steady.len(),
        alone
    );
    let parts = parts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let steady_parts = parts.get(1..).unwrap_or_default();
    let spread = |part: fn(&RunParts) -> u64| {
        let mut ms: Vec<u64> = steady_parts.iter().map(part).collect();
        ms.sort_unstable();
        match (ms.first(), ms.get(ms.len() / 2), ms.last()) {
            (Some(min), Some(p50), Some(max)) => format!("{min}/{p50}/{max}"),
            _ => "-".to_owned(),
        }
    };
    println!(
        "   the incremental runs' parts after the first, min/p50/max ms: keeping {} (the slices {}, beside them the users {}), then writing the windows {}; the late-event scan, after the keeping and beside the writing, {}",
        spread(|p| p.keep),
        spread(|p| p.slices),
        spread(|p| p.users),
        spread(|p| p.finish),
        spread(|p| p.late_scan)
    );
    let started = hourly
        .first()
        .map(|(at, ms)| *at - Duration::from_millis(*ms));
    println!(
        "   the other periods' runs (s from the first run's start: duration ms): {:?}",
        others
            .iter()
            .map(|(p, a, b)| format!(
                "{p} {:.0}: {}",
                started.map_or(0.0, |s| a.saturating_duration_since(s).as_secs_f64()),
                b.duration_since(*a).as_millis()
            ))
            .collect::<Vec<_>>()
    );
    store.shutdown().await;
    Ok(())
}

/// Where one incremental run's time went, from the daemon's debug lines (ms).
#[derive(Debug, Clone, Copy, Default)]
struct RunParts {
    slices: u64,
    users: u64,
    keep: u64,
    finish: u64,
    late_scan: u64,
}

/// A duration the daemon logged in ms: a number, or the string its JSON log writes a `u128` as.
fn millis(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}
