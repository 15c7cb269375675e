//! `vcmetrics run` as a real process.
//!
//! Always: against a dead port it stays up, says MongoDB is unreachable (password redacted) and
//! exits 0 on SIGTERM. With `MONGODB_URI`: it writes the right documents within a tick, survives
//! losing MongoDB (a loopback proxy in front of the server is stopped, then restarted on the same
//! port) and catches up, and on SIGTERM releases its lease and exits 0.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use chrono::{DurationRound, Utc};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The child's stderr, collected by a thread so the test can wait for a line.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(env: &[(&str, &str)], config: &std::path::Path) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vcmetrics"));
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("MONGODB_URI")
            .env("VCMETRICS_LOG", "info,vcmetrics=debug")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("vcmetrics run starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (in real time) until the log has `count` lines containing `needle`.
    async fn wait_for(&self, needle: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{count}) within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn terminate(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Every period every two seconds, so a test sees a tick quickly.
fn fast_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let mut text = String::from("lease_ttl = \"6s\"\nshutdown_grace = \"5s\"\n");
    for period in ["hourly", "daily", "weekly", "monthly"] {
        text.push_str(&format!(
            "[periods.{period}]\nschedule = \"*/2 * * * * *\"\n"
        ));
    }
    let path = dir.path().join("vcmetrics.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn run_stays_up_without_mongodb_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(
        &[(
            "MONGODB_URI",
            "mongodb://vcm:s3cret-pw@127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300",
        )],
        &fast_config(&dir),
    );
    daemon
        .wait_for("MongoDB unreachable", 1, Duration::from_secs(20))
        .await;
    // Ticks keep coming and are skipped, not fatal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "exited:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("mongodb://vcm:****@127.0.0.1:1/"), "{log}");
    assert!(!log.contains("s3cret-pw"), "password in the log:\n{log}");
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("stopped"),
        "{log}"
    );
}

/// A loopback TCP proxy in front of the MongoDB server; `stop` drops every connection.
struct Proxy {
    port: u16,
    upstream: String,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(upstream: String, port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut tasks = JoinSet::new();
        let target = upstream.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy {
            port,
            upstream,
            tasks,
        }
    }

    async fn stop(mut self) -> (String, u16) {
        self.tasks.shutdown().await;
        (self.upstream, self.port)
    }
}

/// The URI with its host list replaced by the proxy, connecting directly (no topology discovery).
fn through_proxy(uri: &str, port: u16) -> Option<(String, String)> {
    let rest = uri.strip_prefix("mongodb://")?;
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) if rest[..at].find('/').is_none() => (&rest[..=at], &rest[at + 1..]),
        _ => ("", rest),
    };
    let hosts_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let first_host = rest[..hosts_end].split(',').next()?.to_owned();
    let tail = &rest[hosts_end..];
    let tail = if tail.is_empty() { "/" } else { tail };
    let sep = if tail.contains('?') { "&" } else { "?" };
    Some((
        first_host,
        format!("mongodb://{userinfo}127.0.0.1:{port}{tail}{sep}directConnection=true&serverSelectionTimeoutMS=1000"),
    ))
}

#[tokio::test]
async fn run_writes_metrics_within_a_tick_survives_losing_mongodb_and_exits_0() {
    let Ok(uri) = std::env::var("MONGODB_URI") else {
        let _ = writeln!(std::io::stderr(), "skipped: vcmetrics run end to end against a real MongoDB (needs a MongoDB server: set MONGODB_URI)");
        return;
    };
    let Some((upstream, _)) = through_proxy(&uri, 0) else {
        let _ = writeln!(std::io::stderr(), "skipped: vcmetrics run end to end (MONGODB_URI is not a mongodb:// URI the test can proxy)");
        return;
    };
    let upstream = if upstream.contains(':') {
        upstream
    } else {
        format!("{upstream}:27017")
    };
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let name = format!("vcm_run_{}", std::process::id());
    let db = client.database(&name);
    let audit = db.collection::<Document>("videocallauditlogs");
    let metrics = db.collection::<Document>("videocallmetrics");

    let proxy = Proxy::start(upstream, 0).await;
    let (_, proxied) = through_proxy(&uri, proxy.port).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config(&dir);
    // The test writes into the open hour over a minute or two: start it well inside an hour.
    let into_hour = Utc::now()
        - Utc::now()
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap();
    if into_hour > chrono::Duration::minutes(55) {
        let wait = chrono::Duration::minutes(60) - into_hour + chrono::Duration::seconds(2);
        tokio::time::sleep(wait.to_std().unwrap()).await;
    }
    let now = Utc::now();
    let hour = now.duration_trunc(chrono::Duration::hours(1)).unwrap();
    let start_from = (hour - chrono::Duration::hours(2)).to_rfc3339();
    let env = [
        ("MONGODB_URI", proxied.as_str()),
        ("VCMETRICS_DATABASE", name.as_str()),
        ("VCMETRICS_START_FROM", start_from.as_str()),
    ];
    let migrate = Command::new(env!("CARGO_BIN_EXE_vcmetrics"))
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .envs(env)
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let call = |minutes_ago: i64| {
        doc! {"sessionId": bson::oid::ObjectId::new(), "userId": bson::oid::ObjectId::new(),
        "action": "call_start", "timestamp": bson::DateTime::from_chrono(now - chrono::Duration::minutes(minutes_ago)),
        "ipAddress": "203.0.113.9", "userAgent": "test", "metadata": {}}
    };
    // Events in the current hour (the open window); minute 0 if the hour just began.
    let offsets: Vec<i64> = (0..3).map(|i| i.min((now - hour).num_minutes())).collect();
    audit
        .insert_many(offsets.iter().map(|m| call(*m)))
        .await
        .unwrap();

    let mut daemon = Daemon::start(&env, &config);
    let total_calls = || async {
        metrics
            .find_one(doc! {"period": "hourly", "date": bson::DateTime::from_chrono(hour)})
            .await
            .unwrap()
            .and_then(|d| d.get_i32("totalCalls").ok())
    };
    let wait_calls = |want: i32, within: Duration| async move {
        let deadline = Instant::now() + within;
        loop {
            if total_calls().await == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "totalCalls never reached {want}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_calls(3, Duration::from_secs(15)).await;
    let daily = metrics
        .count_documents(doc! {"period": "daily"})
        .await
        .unwrap();
    assert!(daily >= 1, "the daily period ran too");

    // MongoDB goes away: the daemon stays up and says so; events keep arriving meanwhile.
    let (upstream, port) = proxy.stop().await;
    daemon
        .wait_for("MongoDB unreachable", 1, Duration::from_secs(30))
        .await;
    audit.insert_one(call(0)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "exited:\n{}",
        daemon.log()
    );

    // Back on the same port: it reconnects (backoff at most a minute) and catches up.
    let _proxy = Proxy::start(upstream, port).await;
    daemon
        .wait_for("MongoDB reachable", 2, Duration::from_secs(90))
        .await;
    wait_calls(4, Duration::from_secs(30)).await;

    assert_eq!(daemon.terminate(), Some(0), "{}", daemon.log());
    let lease = db
        .collection::<Document>("vcmetricsstate")
        .find_one(doc! {"_id": "leader"})
        .await
        .unwrap();
    assert_eq!(lease, None, "the lease is released on shutdown");
    db.drop().await.unwrap();
    client.shutdown().await;
}

#[test]
fn proxied_uris_keep_credentials_database_and_options() {
    assert_eq!(
        through_proxy("mongodb://u:p%40ss@db.example:27018,db2:27017/admin?authSource=admin&replicaSet=rs0", 4000),
        Some((
            "db.example:27018".to_owned(),
            "mongodb://u:p%40ss@127.0.0.1:4000/admin?authSource=admin&replicaSet=rs0&directConnection=true&serverSelectionTimeoutMS=1000".to_owned()
        ))
    );
    assert_eq!(
        through_proxy("mongodb://localhost", 4000).unwrap().1,
        "mongodb://127.0.0.1:4000/?directConnection=true&serverSelectionTimeoutMS=1000"
    );
    assert_eq!(
        through_proxy("mongodb+srv://cluster0.example.net/", 4000),
        None
    );
}
