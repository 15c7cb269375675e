//! Helpers shared by the process tests (`mod support;`): the server's URI, a scratch database per
//! test, the `vcmetrics` binary as a child process whose stderr is collected, a controllable
//! loopback TCP proxy in front of the server, and small readers for HTTP, Prometheus text and
//! BSON numbers.
//!
//! Tests that need a server are `#[ignore = "needs MONGODB_URI"]` and call [`mongodb_uri`], which
//! panics with a clear message when the variable is missing (they only run with
//! `--include-ignored`).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod fake_store;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::{doc, Bson, Document};
use chrono::{DateTime, DurationRound, Utc};
use mongodb::{Client, Collection, Database};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// The path of the binary under test.
pub const VCMETRICS: &str = env!("CARGO_BIN_EXE_vcmetrics");

/// A schedule that fires every two seconds.
pub const FAST: &str = "*/2 * * * * *";
/// A schedule that does not fire during a test (midnight of January 1st).
pub const IDLE: &str = "0 0 0 1 1 *";

/// `MONGODB_URI`, for tests marked `#[ignore = "needs MONGODB_URI"]`.
pub fn mongodb_uri() -> String {
    match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => panic!(
            "this test needs a MongoDB server: set MONGODB_URI (e.g. \
             mongodb://user:pass@127.0.0.1:27017/?authSource=admin) and run with --include-ignored"
        ),
    }
}

/// Whether `MONGODB_SHARDED` asks for a sharded audit log: set it (to anything but `0`) when
/// `MONGODB_URI` is a sharded cluster, and every scratch database shards its audit log on
/// `{sessionId: "hashed"}` before anything is loaded. The collections vcmetrics `$merge`s into
/// (metrics, staging, archive) and the state stay unsharded, as docs/scaling.md says they must on
/// DocumentDB's cluster, which refuses `$merge` into a sharded collection.
pub fn sharded() -> bool {
    std::env::var("MONGODB_SHARDED").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The shard key the tests (and docs/scaling.md) use for the audit log and the archive.
pub const SHARD_KEY: &str = "sessionId";

/// Shards `database.collection` on the hashed [`SHARD_KEY`] (creating it), as an operator would
/// through mongos or DocumentDB's gateway.
pub async fn shard_collection(client: &Client, database: &str, collection: &str) {
    client
        .database("admin")
        .run_command(doc! {
            "shardCollection": format!("{database}.{collection}"),
            "key": {SHARD_KEY: "hashed"},
        })
        .await
        .unwrap_or_else(|e| panic!("shardCollection {database}.{collection}: {e}"));
}

/// Tests of one binary that start daemons run one at a time: their timing assertions (lease
/// takeover, shutdown grace) must not compete with each other for two cores.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// SplitMix64, for seeded scenarios (the simulation, the chaos soak): small, fast, and the same
/// sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn seconds(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_secs(from + self.below(to - from + 1))
    }
}

// ---------------------------------------------------------------------------------------------
// Scratch database

/// A database of its own for one test, dropped by [`Scratch::finish`] (or, if the test panics
/// first, by `Drop`). Credentials and options come from the URI.
pub struct Scratch {
    pub uri: String,
    pub name: String,
    pub client: Client,
    pub db: Database,
    finished: bool,
}

impl Scratch {
    pub async fn new(purpose: &str) -> Scratch {
        let uri = mongodb_uri();
        let client = Client::with_uri_str(&uri)
            .await
            .expect("MONGODB_URI is a usable connection string");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "vcm_{purpose}_{}_{}",
            std::process::id(),
            nanos % 1_000_000_000
        );
        let db = client.database(&name);
        let build = db
            .run_command(doc! {"buildInfo": 1})
            .await
            .unwrap_or_else(|e| panic!("MONGODB_URI does not answer buildInfo: {e}"));
        eprintln!(
            "{purpose}: MongoDB {} at scratch database {name}{}",
            build.get_str("version").unwrap_or("?"),
            if sharded() {
                " (audit log sharded)"
            } else {
                ""
            }
        );
        if sharded() {
            shard_collection(&client, &name, "videocallauditlogs").await;
        }
        Scratch {
            uri,
            name,
            client,
            db,
            finished: false,
        }
    }

    pub fn audit(&self) -> Collection<Document> {
        self.db.collection("videocallauditlogs")
    }

    pub fn metrics(&self) -> Collection<Document> {
        self.db.collection("videocallmetrics")
    }

    pub fn state(&self) -> Collection<Document> {
        self.db.collection("vcmetricsstate")
    }

    /// Runs `vcmetrics <args>` against this database (the real server, not a proxy) and waits.
    pub async fn vcmetrics(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args, env);
        tokio::task::spawn_blocking(move || cmd.output().expect("vcmetrics runs"))
            .await
            .unwrap()
    }

    /// The command for `vcmetrics <args>` against this database, to spawn it yourself.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(VCMETRICS);
        clean_env(&mut cmd);
        cmd.args(args)
            .env("MONGODB_URI", &self.uri)
            .env("VCMETRICS_DATABASE", &self.name)
            // Fixtures may be old; a 180-day TTL would let the server delete them mid-test.
            .env("VCMETRICS_AUDIT_TTL", "3650d")
            .env("VCMETRICS_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `vcmetrics migrate` (indexes, and so the collections), which must succeed.
    pub async fn migrate(&self) {
        let started = Instant::now();
        let out = self.vcmetrics(&["migrate"], &[]).await;
        assert_success("migrate", &out);
        eprintln!(
            "{}: migrate took {:.1}s",
            self.name,
            started.elapsed().as_secs_f64()
        );
    }

    /// `vcmetrics verify --period <period> --from <from> --to <to>`.
    pub async fn verify(&self, period: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Output {
        self.vcmetrics(
            &[
                "verify",
                "--period",
                period,
                "--from",
                &from.to_rfc3339(),
                "--to",
                &to.to_rfc3339(),
            ],
            &[],
        )
        .await
    }

    /// Asserts that `verify` finds no drift (exit 0) for the range.
    pub async fn assert_verified(&self, period: &str, from: DateTime<Utc>, to: DateTime<Utc>) {
        let out = self.verify(period, from, to).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "verify --period {period} --from {from} --to {to} (exit 3 means drift):\n{}",
            describe(&out)
        );
    }

    /// The metrics document of a window, if any.
    pub async fn window(&self, period: &str, start: DateTime<Utc>) -> Option<Document> {
        self.metrics()
            .find_one(doc! {"period": period, "date": bson_date(start)})
            .await
            .unwrap()
    }

    /// How many windows of `period` in `[from, to)` have a document with computed metrics (not
    /// only the seed's `period`, `date` and `createdAt`).
    pub async fn computed_windows(
        &self,
        period: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> u64 {
        self.metrics()
            .count_documents(doc! {
                "period": period,
                "date": {"$gte": bson_date(from), "$lt": bson_date(to)},
                "totalCalls": {"$exists": true},
            })
            .await
            .unwrap()
    }

    /// The stored watermark of a period (`{_id: "watermark:<period>", watermark}`).
    pub async fn watermark(&self, period: &str) -> Option<DateTime<Utc>> {
        let state = self
            .state()
            .find_one(doc! {"_id": format!("watermark:{period}")})
            .await
            .unwrap()?;
        match state.get("watermark") {
            Some(Bson::DateTime(t)) => Some(t.to_chrono()),
            other => panic!("watermark:{period} has no date watermark: {other:?}"),
        }
    }

    /// Stores a watermark as the daemon does, as if it had last run when it was `at`.
    pub async fn set_watermark(&self, period: &str, at: DateTime<Utc>) {
        self.state()
            .update_one(
                doc! {"_id": format!("watermark:{period}")},
                doc! {"$set": {"watermark": bson_date(at), "period": period, "updatedAt": bson_date(at)}},
            )
            .upsert(true)
            .await
            .unwrap();
    }

    /// The lease document (`{_id: "leader", holder, expiresAt, renewedAt}`), if any.
    pub async fn lease(&self) -> Option<Document> {
        self.state().find_one(doc! {"_id": "leader"}).await.unwrap()
    }

    /// Whether the lease is free because its holder gave it up (it is kept, with its epoch,
    /// marked released and expired), or was never taken.
    pub async fn lease_released(&self) -> bool {
        self.lease()
            .await
            .is_none_or(|l| l.get_bool("released") == Ok(true))
    }

    /// Drops the database and closes the client. The sharded cluster sometimes reports a
    /// deadlock (code 112) when tests drop their databases at the same time: that drop is tried
    /// again, a few times.
    pub async fn finish(mut self) {
        let mut attempts = 0;
        while let Err(e) = self.db.drop().await {
            attempts += 1;
            let deadlock =
                matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 112);
            assert!(deadlock && attempts < 5, "dropping {}: {e}", self.name);
            tokio::time::sleep(Duration::from_millis(500 * attempts)).await;
        }
        self.client.clone().shutdown().await;
        self.finished = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The test failed before `finish`: drop the database anyway, from a runtime of our own
        // (this may run inside the test's runtime, which must not be blocked on).
        let (uri, name) = (self.uri.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(15), async {
                    if let Ok(client) = Client::with_uri_str(&uri).await {
                        let _ = client.database(&name).drop().await;
                        client.shutdown().await;
                    }
                })
                .await;
            });
        })
        .join();
    }
}

/// Removes the variables that configure vcmetrics from a child's environment, so only what the
/// test sets applies.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("VCMETRICS_") || key == "MONGODB_URI" {
            cmd.env_remove(&*key);
        }
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_success(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed: {}", describe(out));
}

/// Writes a configuration file into `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("vcmetrics.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Time and fixtures

pub fn bson_date(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_chrono(t))
}

pub fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

pub fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// The start of the UTC hour containing `t`.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(hours(1)).unwrap()
}

/// The start of the UTC day containing `t`.
pub fn day_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::days(1)).unwrap()
}

/// Waits, if needed, until at least `margin` remains before the next UTC hour, so a test that
/// writes into the open hour does not see it close half-way.
pub async fn away_from_hour_end(margin: chrono::Duration) {
    let now = Utc::now();
    let left = hour_of(now) + hours(1) - now;
    if left < margin {
        let wait = left + chrono::Duration::seconds(2);
        eprintln!("waiting {}s for the next hour", wait.num_seconds());
        tokio::time::sleep(wait.to_std().unwrap()).await;
    }
}

/// A well-formed audit event.
pub fn event(action: &str, at: DateTime<Utc>) -> Document {
    doc! {
        "sessionId": bson::oid::ObjectId::new(),
        "userId": bson::oid::ObjectId::new(),
        "action": action,
        "timestamp": bson_date(at),
        "ipAddress": "203.0.113.9",
        "userAgent": "vcmetrics-test",
        "metadata": {},
    }
}

/// `per_hour` `call_start` events in every hour of `[from, to)`, spread over the hour.
pub fn calls_per_hour(from: DateTime<Utc>, to: DateTime<Utc>, per_hour: i64) -> Vec<Document> {
    let mut events = Vec::new();
    let mut hour = hour_of(from);
    while hour < to {
        for i in 0..per_hour {
            let at = hour + chrono::Duration::seconds(i * 3600 / per_hour.max(1) + 7);
            if at >= from && at < to {
                events.push(event("call_start", at));
            }
        }
        hour += hours(1);
    }
    events
}

/// A number stored as int, long or double (engines differ in which they return).
pub fn number(doc: &Document, key: &str) -> Option<f64> {
    match doc.get(key)? {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        _ => None,
    }
}

/// An integral number stored as int, long or a whole double.
pub fn integer(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key)? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(n) if n.fract() == 0.0 => Some(*n as i64),
        _ => None,
    }
}

/// Polls `check` every 100 ms until it yields a value; panics with `what` after `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    eventually_or(what, within, check, String::new).await
}

/// [`eventually`], with `context()` (a daemon's log, say) appended to the failure message.
async fn eventually_or<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Ports, HTTP and Prometheus text

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET http://127.0.0.1:<port><path>`: status and body, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream =
        StdTcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The value of one series in a Prometheus text exposition: `name` with at least `labels`.
pub fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let have: BTreeMap<&str, &str> = series_labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|(k, v)| have.get(k) == Some(v))
                .then(|| value.parse().ok())?
        })
}

// ---------------------------------------------------------------------------------------------
// The daemon as a child process

/// One `run finished` / `run failed` line of a daemon's JSON log.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLine {
    pub period: String,
    pub outcome: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub windows: u64,
    pub backlog: Option<u64>,
    /// When the run ended (the log line's timestamp) and when it started (minus its duration).
    pub ended: DateTime<Utc>,
    pub started: DateTime<Utc>,
    pub error: Option<String>,
}

/// `vcmetrics run` (or any long-running command) with its stderr collected line by line by a
/// thread, so a test can wait for a line and read the log when an assertion fails.
pub struct Daemon {
    child: Mutex<Child>,
    pid: u32,
    log: Arc<Mutex<Vec<String>>>,
    /// The HTTP port, when the test gave it one (`VCMETRICS_LISTEN`).
    pub port: Option<u16>,
    pub name: String,
}

impl Daemon {
    /// `vcmetrics --config <config> run` with exactly the given environment on top of the
    /// inherited one (minus any `VCMETRICS_*` and `MONGODB_URI`).
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::spawn(&["--config", &config.to_string_lossy(), "run"], env)
    }

    /// `vcmetrics <args>` as a child process.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(VCMETRICS);
        clean_env(&mut cmd);
        cmd.args(args)
            .env("VCMETRICS_LOG", "info,vcmetrics=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let port = env
            .iter()
            .find(|(k, _)| *k == "VCMETRICS_LISTEN")
            .and_then(|(_, v)| v.rsplit_once(':')?.1.parse().ok());
        let name = env
            .iter()
            .find(|(k, _)| *k == "VCMETRICS_INSTANCE_ID")
            .map_or_else(|| "vcmetrics".to_owned(), |(_, v)| (*v).to_owned());
        let mut child = cmd.spawn().expect("vcmetrics starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Daemon {
            pid: child.id(),
            child: Mutex::new(child),
            log,
            port,
            name,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The whole log so far, for assertion messages.
    pub fn log(&self) -> String {
        let mut text = format!("--- log of {} (pid {})\n", self.name, self.pid());
        for line in self.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until the log has `count` lines containing `needle`.
    pub async fn wait_for(&self, needle: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count(needle) < count {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{count}) within {within:?}:\n{}",
                self.log()
            );
            assert!(self.is_running(), "exited:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`eventually`], with this daemon's log in the failure message.
    pub async fn eventually<T>(
        &self,
        what: &str,
        within: Duration,
        check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        eventually_or(what, within, check, || self.log()).await
    }

    /// The log's JSON lines (`VCMETRICS_LOG_FORMAT=json`).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Every finished run (success or failure) so far, from a JSON log.
    pub fn runs(&self) -> Vec<RunLine> {
        let time = |v: &serde_json::Value| {
            v.as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        self.json_lines()
            .iter()
            .filter(|l| l["outcome"].is_string() && l["period"].is_string())
            .map(|l| {
                let ended = time(&l["timestamp"]).expect("log lines have a timestamp");
                let duration =
                    chrono::Duration::milliseconds(l["duration_ms"].as_i64().unwrap_or(0));
                RunLine {
                    period: l["period"].as_str().unwrap().to_owned(),
                    outcome: l["outcome"].as_str().unwrap().to_owned(),
                    from: time(&l["from"]),
                    to: time(&l["to"]),
                    windows: l["windows"].as_u64().unwrap_or(0),
                    backlog: l["backlog"].as_u64(),
                    ended,
                    started: ended - duration,
                    error: l["error"].as_str().map(str::to_owned),
                }
            })
            .collect()
    }

    /// Runs of one period with one outcome.
    pub fn runs_of(&self, period: &str, outcome: &str) -> Vec<RunLine> {
        self.runs()
            .into_iter()
            .filter(|r| r.period == period && r.outcome == outcome)
            .collect()
    }

    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    fn try_wait(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    /// Sends a signal by name (`TERM`, `KILL`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits for the exit: its code (`None` for a signal) and how long it took.
    pub async fn wait_exit(&self, within: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                return (status.code(), started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "no exit within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then the exit code and how long the exit took.
    pub async fn terminate(&self) -> (Option<i32>, Duration) {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30)).await
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&self) {
        let _ = self.child.lock().unwrap().kill();
        self.wait_exit(Duration::from_secs(10)).await;
    }

    fn http_port(&self) -> u16 {
        self.port
            .expect("the daemon was started with VCMETRICS_LISTEN")
    }

    /// `GET /readyz`: status and body.
    pub fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.http_port(), "/readyz")
    }

    /// `GET /metrics`.
    pub fn scrape(&self) -> Option<String> {
        match http_get(self.http_port(), "/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// One series of `/metrics`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric(&self.scrape()?, name, labels)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy

/// The URI's first host as `host:port` (port 27017 when none is given); `None` for anything but
/// a `mongodb://` URI.
pub fn first_host(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mongodb://")?;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = hosts.split(',').next().filter(|h| !h.is_empty())?;
    let has_port = match host.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => host.contains(':'),
    };
    Some(if has_port {
        host.to_owned()
    } else {
        format!("{host}:27017")
    })
}

/// The URI with its host list replaced by the proxy on `port`, connecting directly (no topology
/// discovery) and selecting servers for at most a second. Credentials, database and every other
/// option are kept; `directConnection` and `serverSelectionTimeoutMS` are replaced (options may
/// not repeat). `None` for anything but a `mongodb://` URI.
pub fn through_proxy(uri: &str, port: u16) -> Option<String> {
    let rest = uri.strip_prefix("mongodb://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let userinfo = authority.rsplit_once('@').map_or("", |(u, _)| u);
    let userinfo = if userinfo.is_empty() {
        String::new()
    } else {
        format!("{userinfo}@")
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let path = if path.is_empty() { "/" } else { path };
    let mut options: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| {
            let key = kv.split('=').next().unwrap_or_default();
            !key.eq_ignore_ascii_case("directConnection")
                && !key.eq_ignore_ascii_case("serverSelectionTimeoutMS")
        })
        .collect();
    options.extend(["directConnection=true", "serverSelectionTimeoutMS=1000"]);
    Some(format!(
        "mongodb://{userinfo}127.0.0.1:{port}{path}?{}",
        options.join("&")
    ))
}

/// What the proxy does once it has cut a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCut {
    /// Go on accepting connections.
    KeepServing,
    /// Stop: drop the listener and every connection, as [`Proxy::stop`] (until `start`).
    Stop,
}

#[derive(Default)]
struct ProxyShared {
    /// Armed: cut the next connection that forwards a client message containing this.
    cut: Mutex<Option<(Vec<u8>, AfterCut)>>,
    /// Armed: hold the next client message containing each marker for that long before
    /// forwarding it.
    stall: Mutex<Vec<(Vec<u8>, Duration)>>,
    cuts: AtomicUsize,
    stalls: AtomicUsize,
    accepted: AtomicUsize,
    /// The accept loop and every connection, to be aborted by `stop` (or by a cut).
    tasks: Mutex<Vec<AbortHandle>>,
}

impl ProxyShared {
    fn abort_all(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Disarms and returns the armed marker of `slot` when it occurs in `seen` and ends in its
    /// last `new` bytes (an occurrence entirely in older bytes was forwarded before arming).
    fn take_if_in<T>(slot: &Mutex<Option<(Vec<u8>, T)>>, seen: &[u8], new: usize) -> Option<T> {
        let mut armed = slot.lock().unwrap();
        let hit = armed.as_ref().is_some_and(|(marker, _)| {
            let from = seen.len() - new;
            let from = from.saturating_sub(marker.len().saturating_sub(1));
            contains(&seen[from..], marker)
        });
        if hit {
            armed.take().map(|(_, what)| what)
        } else {
            None
        }
    }
}

impl ProxyShared {
    /// Disarms and returns the first armed stall whose marker ends in the last `new` bytes of
    /// `seen`.
    fn take_stall(&self, seen: &[u8], new: usize) -> Option<Duration> {
        let mut armed = self.stall.lock().unwrap();
        let from = seen.len() - new;
        let hit = armed.iter().position(|(marker, _)| {
            let from = from.saturating_sub(marker.len().saturating_sub(1));
            contains(&seen[from..], marker)
        })?;
        Some(armed.remove(hit).1)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Bytes of the previous reads kept to find a marker split across two reads: markers are
/// shorter than this.
const MARKER_TAIL: usize = 256;

/// A loopback TCP proxy in front of the server, on its own runtime (so it keeps forwarding
/// whatever the test's runtime does, including blocking calls).
pub struct Proxy {
    pub port: u16,
    pub upstream: String,
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`) on a free port, not listening yet.
    pub fn new(upstream: &str) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .unwrap();
        Proxy {
            port: free_port(),
            upstream: upstream.to_owned(),
            runtime: Some(runtime),
            shared: Arc::default(),
            accept: None,
        }
    }

    /// A proxy to the URI's first host, listening.
    pub async fn started(uri: &str) -> Proxy {
        let upstream = first_host(uri).expect("MONGODB_URI is a mongodb:// URI the test can proxy");
        let mut proxy = Proxy::new(&upstream);
        proxy.start().await;
        proxy
    }

    /// `uri` pointed at this proxy.
    pub fn uri(&self, uri: &str) -> String {
        through_proxy(uri, self.port).expect("a mongodb:// URI")
    }

    /// Starts listening on the proxy's port (again, after `stop`).
    pub async fn start(&mut self) {
        self.stop().await;
        let port = self.port;
        let runtime = self.runtime.as_ref().unwrap();
        // The port may still be held briefly by the previous listener's teardown.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match runtime
                .spawn(async move { TcpListener::bind(("127.0.0.1", port)).await })
                .await
                .unwrap()
            {
                Ok(listener) => break listener,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "proxy cannot listen on {port}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let shared = self.shared.clone();
        let upstream = self.upstream.clone();
        let accept = runtime.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let connection = tokio::spawn(forward(inbound, upstream.clone(), shared.clone()));
                let mut tasks = shared.tasks.lock().unwrap();
                tasks.retain(|t| !t.is_finished());
                tasks.push(connection.abort_handle());
            }
        });
        self.shared
            .tasks
            .lock()
            .unwrap()
            .push(accept.abort_handle());
        self.accept = Some(accept);
    }

    /// Stops listening and drops every connection.
    pub async fn stop(&mut self) {
        self.shared.abort_all();
        if let Some(accept) = self.accept.take() {
            // Resolves once the accept loop (and with it the listener) is gone.
            let _ = accept.await;
        }
    }

    /// Cuts the next connection that forwards a client message containing `marker`, right after
    /// forwarding it (so the command reaches the server but its reply never comes back).
    pub fn cut_next(&self, marker: &[u8], then: AfterCut) {
        assert!(!marker.is_empty() && marker.len() <= MARKER_TAIL);
        *self.shared.cut.lock().unwrap() = Some((marker.to_vec(), then));
    }

    /// Holds the next client message containing `marker` for `delay` before forwarding it: a
    /// command that takes that long. Stalls of several markers can be armed at once.
    pub fn stall_next(&self, marker: &[u8], delay: Duration) {
        assert!(!marker.is_empty() && marker.len() <= MARKER_TAIL);
        self.shared
            .stall
            .lock()
            .unwrap()
            .push((marker.to_vec(), delay));
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Messages stalled so far (counted when the stall begins).
    pub fn stalls(&self) -> usize {
        self.shared.stalls.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.abort_all();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Forwards one connection both ways until either side closes, the proxy stops, or a cut.
async fn forward(mut client: TcpStream, upstream: String, shared: Arc<ProxyShared>) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    let mut seen: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            read = client.read(&mut up) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                seen.extend_from_slice(&up[..n]);
                if let Some(delay) = shared.take_stall(&seen, n) {
                    shared.stalls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                }
                if server.write_all(&up[..n]).await.is_err() {
                    return;
                }
                if let Some(then) = ProxyShared::take_if_in(&shared.cut, &seen, n) {
                    let _ = server.flush().await;
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    if then == AfterCut::Stop {
                        shared.abort_all();
                    }
                    // Dropping both streams closes them: the server got the message, the client
                    // gets no reply.
                    return;
                }
                let keep = seen.len().saturating_sub(MARKER_TAIL);
                seen.drain(..keep);
            }
            read = server.read(&mut down) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
