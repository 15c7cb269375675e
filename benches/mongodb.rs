//! MongoDB-side cost of vcmetrics: `MONGODB_URI=... cargo bench --bench mongodb` prints a report.
//! Without `MONGODB_URI` it says so and exits 1 (under `cargo test --benches` it only prints a
//! `skipped:` line). Everything happens in a scratch database that is dropped at the end.
//!
//! 1. Recompute throughput: `BENCH_EVENTS` (default `1000000,10000000`) generated events over 30
//!    days; `vcmetrics recompute` runs as a child process per period; events/s and the child's
//!    peak resident memory (polled from /proc; it must not grow with the event count).
//! 2. The obvious alternative at the first size: stream the same range to the client and
//!    aggregate hourly windows in the process; time side by side and the ratio (target ≥ 10×).
//! 3. Steady-state tick: `explain` (executionStats) of one hourly run (lookback + open window)
//!    with 1 and with 6 months of history (`BENCH_MONTH_EVENTS`, default 300000 a month): time,
//!    documents examined, and whether the timestamp range is an index scan (target: within 20%).
//! 4. Distinct users: one monthly window with `BENCH_DISTINCT_USERS` (default 1000000) distinct
//!    users must complete and count them all (no 100 MB per-stage memory error).

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document};
use chrono::{DateTime, DurationRound, Utc};
use futures_util::TryStreamExt;
use vcmetrics::config::{validate, Config, RawConfig};
use vcmetrics::generate::{generate, Plan};
use vcmetrics::migrate::wanted_indexes;
use vcmetrics::pipeline::{chunk_commands, Target};
use vcmetrics::refresh::plan_run;
use vcmetrics::store::MongoStore;
use vcmetrics::window::Period;

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let Ok(uri) = std::env::var("MONGODB_URI") else {
        if bench_mode {
            eprintln!("the MongoDB benchmarks need a MongoDB server: set MONGODB_URI (a scratch database is created and dropped)");
            std::process::exit(1);
        }
        eprintln!(
            "skipped: MongoDB benchmarks (set MONGODB_URI and run cargo bench --bench mongodb)"
        );
        return;
    };
    if !bench_mode {
        eprintln!("skipped: MongoDB benchmarks run only under cargo bench");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if let Err(e) = runtime.block_on(run(uri)) {
        eprintln!("benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn config(uri: &str, database: &str) -> anyhow::Result<Config> {
    Ok(validate(
        RawConfig::default(),
        &[("MONGODB_URI", uri), ("VCMETRICS_DATABASE", database)],
    )?)
}

async fn scratch(uri: &str, name: &str) -> anyhow::Result<(Config, MongoStore, mongodb::Database)> {
    let config = config(uri, name)?;
    let store = MongoStore::connect(&config).await?;
    for w in wanted_indexes(&config) {
        store
            .create_index(&w.collection, &w.name, w.keys, w.unique, w.expire_after)
            .await?;
    }
    let db = mongodb::Client::with_uri_str(uri).await?.database(name);
    Ok((config, store, db))
}

/// Inserts `events` generated events spread over `[from, to)`, a day at a time to bound memory.
async fn fill(
    store: &MongoStore,
    events: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    users: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let days = (to - from).num_days().max(1) as usize;
    for day in 0..days {
        let day_from = from + chrono::Duration::days(day as i64);
        let n = events / days + usize::from(day < events % days);
        let batch = generate(&Plan {
            events: n,
            from: day_from,
            to: day_from + chrono::Duration::days(1),
            users,
            seed: day as u64 + 1,
        });
        for chunk in batch.chunks(10_000) {
            store
                .insert_audit_events(chunk.iter().map(|g| g.document.clone()).collect())
                .await?;
        }
    }
    Ok(started.elapsed())
}

/// Runs `vcmetrics recompute` for one period; returns its wall time and peak RSS (KiB).
fn recompute(
    uri: &str,
    database: &str,
    period: Period,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcmetrics"))
        .args([
            "recompute",
            "--period",
            period.as_str(),
            "--from",
            &from.to_rfc3339(),
            "--to",
            &to.to_rfc3339(),
        ])
        .env("MONGODB_URI", uri)
        .env("VCMETRICS_DATABASE", database)
        .env("VCMETRICS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let proc =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        if let Some(kib) = proc
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
        {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    anyhow::ensure!(
        status.success(),
        "vcmetrics recompute --period {period} failed: {status}"
    );
    Ok((started.elapsed(), peak))
}

/// One hourly window as the client-side alternative keeps it.
#[derive(Default)]
struct ClientWindow {
    actions: BTreeMap<String, u64>,
    users: HashSet<String>,
    duration: f64,
}

/// What a user would write without vcmetrics: stream the events and aggregate in the process.
async fn client_side_hourly(
    db: &mongodb::Database,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let mut cursor = db
        .collection::<Document>("videocallauditlogs")
        .find(doc! {"timestamp": {"$gte": bson::DateTime::from_chrono(from), "$lt": bson::DateTime::from_chrono(to)}})
        .batch_size(10_000)
        .await?;
    let mut windows: BTreeMap<i64, ClientWindow> = BTreeMap::new();
    while let Some(e) = cursor.try_next().await? {
        let Ok(t) = e.get_datetime("timestamp") else {
            continue;
        };
        let hour = t.timestamp_millis().div_euclid(3_600_000);
        let w = windows.entry(hour).or_default();
        *w.actions
            .entry(e.get_str("action").unwrap_or("invalid").to_owned())
            .or_default() += 1;
        if let Some(u) = e.get("userId") {
            w.users.insert(u.to_string());
        }
        if let Ok(d) = e.get_i64("duration") {
            w.duration += d as f64;
        }
    }
    Ok((started.elapsed(), windows.len()))
}

/// `explain` of the hourly run a tick at `now` would send: time, documents examined, IXSCAN.
async fn explain_tick(
    config: &Config,
    db: &mongodb::Database,
    now: DateTime<Utc>,
) -> anyhow::Result<(i64, i64, bool)> {
    let watermark = now.duration_trunc(chrono::Duration::hours(1))?;
    let plan = plan_run(
        &config.calendar,
        Period::Hourly,
        config.period(Period::Hourly),
        now,
        watermark,
    );
    let target = Target {
        database: &config.database,
        audit_collection: &config.audit_collection,
        metrics_collection: &config.metrics_collection,
    };
    let command = chunk_commands(&target, Period::Hourly, &plan.windows, now)?
        .rollup
        .preview()
        .to_command();
    let explained = db
        .run_command(doc! {"explain": command, "verbosity": "executionStats"})
        .await?;
    let text = explained.to_string();
    fn find(d: &Bson, key: &str) -> Option<i64> {
        match d {
            Bson::Document(doc) => doc.iter().find_map(|(k, v)| {
                if k == key {
                    v.as_i64().or(v.as_i32().map(i64::from))
                } else {
                    find(v, key)
                }
            }),
            Bson::Array(a) => a.iter().find_map(|v| find(v, key)),
            _ => None,
        }
    }
    let explained = Bson::Document(explained);
    Ok((
        find(&explained, "executionTimeMillis").unwrap_or(-1),
        find(&explained, "totalDocsExamined").unwrap_or(-1),
        text.contains("IXSCAN"),
    ))
}

async fn run(uri: String) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let client = mongodb::Client::with_uri_str(&uri).await?;
    let version = client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await?;
    println!(
        "vcmetrics MongoDB benchmarks — server {} — client machine: {cores} cores",
        version.get_str("version").unwrap_or("?")
    );
    let now = Utc::now().duration_trunc(chrono::Duration::hours(1))?;
    let (from, to) = (now - chrono::Duration::days(30), now);

    println!(
        "\n1. recompute throughput (30 days of events; vcmetrics recompute as a child process)"
    );
    println!(
        "   {:>10}  {:>8}  {:>10}  {:>14}  {:>10}",
        "events", "period", "seconds", "events/s", "peak RSS"
    );
    let sizes = env_list("BENCH_EVENTS", "1000000,10000000");
    for (i, &events) in sizes.iter().enumerate() {
        let name = format!("vcm_bench_{}_{events}", std::process::id());
        let (_, store, db) = scratch(&uri, &name).await?;
        let insert = fill(&store, events, from, to, 50_000).await?;
        println!(
            "   ({events} events inserted in {:.1} s)",
            insert.as_secs_f64()
        );
        let mut hourly_server = Duration::ZERO;
        for period in Period::ALL {
            let (took, peak) = recompute(&uri, &name, period, from, to)?;
            if period == Period::Hourly {
                hourly_server = took;
            }
            println!(
                "   {events:>10}  {:>8}  {:>10.2}  {:>14.0}  {:>7.1} MiB",
                period.as_str(),
                took.as_secs_f64(),
                events as f64 / took.as_secs_f64(),
                peak as f64 / 1024.0
            );
        }
        if i == 0 {
            let (client_took, windows) = client_side_hourly(&db, from, to).await?;
            println!("\n2. the obvious alternative at {events} events, hourly windows:");
            println!(
                "   server-side (vcmetrics recompute)  {:>8.2} s",
                hourly_server.as_secs_f64()
            );
            println!(
                "   client-side (stream + aggregate)   {:>8.2} s  ({windows} windows)",
                client_took.as_secs_f64()
            );
            println!(
                "   ratio                              {:>8.1}x  (target >= 10x)",
                client_took.as_secs_f64() / hourly_server.as_secs_f64()
            );
        }
        db.drop().await?;
        store.shutdown().await;
    }

    println!("\n3. steady-state hourly tick vs history (explain executionStats)");
    let month = env_list("BENCH_MONTH_EVENTS", "300000")
        .first()
        .copied()
        .unwrap_or(300_000);
    let name = format!("vcm_bench_{}_history", std::process::id());
    let (config, store, db) = scratch(&uri, &name).await?;
    fill(&store, month, now - chrono::Duration::days(30), now, 50_000).await?;
    let one = explain_tick(&config, &db, now + chrono::Duration::minutes(7)).await?;
    fill(
        &store,
        5 * month,
        now - chrono::Duration::days(180),
        now - chrono::Duration::days(30),
        50_000,
    )
    .await?;
    let six = explain_tick(&config, &db, now + chrono::Duration::minutes(7)).await?;
    for (label, (ms, examined, ixscan)) in [("1 month", one), ("6 months", six)] {
        println!("   {label:>8} of history: {ms:>6} ms, {examined:>8} documents examined, index scan: {ixscan}");
    }
    println!(
        "   time ratio {:.2}, documents ratio {:.2} (target: within 1.2)",
        six.0 as f64 / one.0.max(1) as f64,
        six.1 as f64 / one.1.max(1) as f64
    );
    db.drop().await?;
    store.shutdown().await;

    let users = env_list("BENCH_DISTINCT_USERS", "1000000")
        .first()
        .copied()
        .unwrap_or(1_000_000);
    println!("\n4. one monthly window with {users} distinct users");
    let name = format!("vcm_bench_{}_users", std::process::id());
    let (_, store, db) = scratch(&uri, &name).await?;
    let month_start = vcmetrics::window::Calendar::default()
        .window_start(Period::Monthly, now - chrono::Duration::days(40));
    for chunk in (0..users).collect::<Vec<_>>().chunks(10_000) {
        let docs = chunk
            .iter()
            .map(|i| doc! {"userId": bson::oid::ObjectId::new(), "action": "join_attempt",
                "timestamp": bson::DateTime::from_chrono(month_start + chrono::Duration::seconds(*i as i64 % 2_000_000))})
            .collect();
        store.insert_audit_events(docs).await?;
    }
    let (took, peak) = recompute(
        &uri,
        &name,
        Period::Monthly,
        month_start,
        month_start + chrono::Duration::days(1),
    )?;
    let doc = db
        .collection::<Document>("videocallmetrics")
        .find_one(doc! {"period": "monthly"})
        .await?;
    let counted = doc
        .as_ref()
        .and_then(|d| vcmetrics::metrics::number(d.get("uniqueUsers")?))
        .unwrap_or(-1.0);
    println!(
        "   completed in {:.1} s, peak RSS {:.1} MiB, uniqueUsers = {counted} (expected {users})",
        took.as_secs_f64(),
        peak as f64 / 1024.0
    );
    anyhow::ensure!(
        counted as usize == users,
        "uniqueUsers {counted} != {users}"
    );
    db.drop().await?;
    store.shutdown().await;
    Ok(())
}
