//! `vcmetrics run` as a real process.
//!
//! Always: against a dead port it stays up, says MongoDB is unreachable (password redacted) and
//! exits 0 on SIGTERM. With `MONGODB_URI` (ignored without it): it writes the right documents
//! within a tick, survives losing MongoDB (a loopback proxy in front of the server is stopped,
//! then restarted on the same port) and catches up, and on SIGTERM releases its lease and exits
//! 0. The helpers are in `support/` (shared with `fault_matrix.rs`).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bson::doc;
use chrono::Utc;

use support::{
    assert_success, away_from_hour_end, first_host, hour_of, hours, integer, minutes,
    through_proxy, write_config, Daemon, Proxy, Scratch, FAST,
};

/// Every period every two seconds, so a test sees a tick quickly.
fn fast_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let mut text = String::from("lease_ttl = \"6s\"\nshutdown_grace = \"5s\"\n");
    for period in ["hourly", "daily", "weekly", "monthly"] {
        text.push_str(&format!("[periods.{period}]\nschedule = \"{FAST}\"\n"));
    }
    write_config(dir.path(), &text)
}

#[tokio::test]
async fn run_stays_up_without_mongodb_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &fast_config(&dir),
        &[
            (
                "MONGODB_URI",
                "mongodb://vcm:s3cret-pw@127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300",
            ),
            ("VCMETRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    daemon
        .wait_for("MongoDB unreachable", 1, Duration::from_secs(20))
        .await;
    // Ticks keep coming and are skipped, not fatal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(daemon.is_running(), "exited:\n{}", daemon.log());
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("mongodb://vcm:****@127.0.0.1:1/"), "{log}");
    assert!(!log.contains("s3cret-pw"), "password in the log:\n{log}");
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MONGODB_URI"]
async fn run_writes_metrics_within_a_tick_survives_losing_mongodb_and_exits_0() {
    let scratch = Scratch::new("run").await;
    let mut proxy = Proxy::started(&scratch.uri).await;
    let proxied = proxy.uri(&scratch.uri);
    let dir = tempfile::tempdir().unwrap();
    let config = fast_config(&dir);
    // The test writes into the open hour over a minute or two: start it well inside an hour.
    away_from_hour_end(minutes(5)).await;
    let now = Utc::now();
    let hour = hour_of(now);
    let start_from = (hour - hours(2)).to_rfc3339();
    let env = [
        ("MONGODB_URI", proxied.as_str()),
        ("VCMETRICS_DATABASE", scratch.name.as_str()),
        ("VCMETRICS_START_FROM", start_from.as_str()),
        ("VCMETRICS_LISTEN", "127.0.0.1:0"),
    ];
    // Through the proxy, as the daemon will connect.
    let mut migrate = Command::new(env!("CARGO_BIN_EXE_vcmetrics"));
    migrate
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .env("VCMETRICS_AUDIT_TTL", "3650d")
        .envs(env);
    let migrate = tokio::task::spawn_blocking(move || migrate.output().unwrap())
        .await
        .unwrap();
    assert_success("migrate through the proxy", &migrate);

    let call = |at: chrono::DateTime<Utc>| support::event("call_start", at);
    // Events in the current hour (the open window); minute 0 if the hour just began.
    let offsets: Vec<i64> = (0..3).map(|i| i.min((now - hour).num_minutes())).collect();
    scratch
        .audit()
        .insert_many(offsets.iter().map(|m| call(now - minutes(*m))))
        .await
        .unwrap();

    let daemon = Daemon::start(&config, &env);
    wait_calls(&scratch, &daemon, hour, 3, Duration::from_secs(15)).await;
    let daily = scratch
        .metrics()
        .count_documents(doc! {"period": "daily"})
        .await
        .unwrap();
    assert!(daily >= 1, "the daily period ran too");

    // MongoDB goes away: the daemon stays up and says so; events keep arriving meanwhile.
    proxy.stop().await;
    daemon
        .wait_for("MongoDB unreachable", 1, Duration::from_secs(30))
        .await;
    scratch.audit().insert_one(call(Utc::now())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(daemon.is_running(), "exited:\n{}", daemon.log());

    // Back on the same port: it reconnects (backoff at most a minute) and catches up.
    proxy.start().await;
    daemon
        .wait_for("MongoDB reachable", 2, Duration::from_secs(90))
        .await;
    // The event may have landed in the next hour if one began meanwhile.
    if hour_of(Utc::now()) == hour {
        wait_calls(&scratch, &daemon, hour, 4, Duration::from_secs(30)).await;
    }

    let (code, _) = daemon.terminate().await;
    assert_eq!(code, Some(0), "{}", daemon.log());
    assert!(
        scratch.lease_released().await,
        "the lease is released on shutdown"
    );
    scratch.finish().await;
}

/// Waits until the hourly document of `hour` has `totalCalls == want`, read as any number type
/// (int, long or whole double: engines may differ in what `$sum` returns).
async fn wait_calls(
    scratch: &Scratch,
    daemon: &Daemon,
    hour: chrono::DateTime<Utc>,
    want: i64,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let document = scratch.window("hourly", hour).await;
        if document.as_ref().and_then(|d| integer(d, "totalCalls")) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "totalCalls never reached {want}: {document:?}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn proxied_uris_keep_credentials_database_and_options() {
    assert_eq!(
        first_host(
            "mongodb://u:p%40ss@db.example:27018,db2:27017/admin?authSource=admin&replicaSet=rs0"
        ),
        Some("db.example:27018".to_owned())
    );
    assert_eq!(
        through_proxy("mongodb://u:p%40ss@db.example:27018,db2:27017/admin?authSource=admin&replicaSet=rs0", 4000),
        Some("mongodb://u:p%40ss@127.0.0.1:4000/admin?authSource=admin&replicaSet=rs0&directConnection=true&serverSelectionTimeoutMS=1000".to_owned())
    );
    assert_eq!(
        first_host("mongodb://localhost"),
        Some("localhost:27017".to_owned())
    );
    assert_eq!(
        through_proxy("mongodb://localhost", 4000).unwrap(),
        "mongodb://127.0.0.1:4000/?directConnection=true&serverSelectionTimeoutMS=1000"
    );
    // Options the proxy must set are replaced, whatever their case; everything else is kept.
    assert_eq!(
        through_proxy(
            "mongodb://vcadmin:vcpass@127.0.0.1:10260/?authMechanism=SCRAM-SHA-256&directConnection=true&tls=true&tlsAllowInvalidCertificates=true&SERVERSELECTIONTIMEOUTMS=30000",
            4000
        )
        .unwrap(),
        "mongodb://vcadmin:vcpass@127.0.0.1:4000/?authMechanism=SCRAM-SHA-256&tls=true&tlsAllowInvalidCertificates=true&directConnection=true&serverSelectionTimeoutMS=1000"
    );
    assert_eq!(
        through_proxy("mongodb://u:p@[::1]/db?directconnection=false", 4000).unwrap(),
        "mongodb://u:p@127.0.0.1:4000/db?directConnection=true&serverSelectionTimeoutMS=1000"
    );
    assert_eq!(
        first_host("mongodb://[::1]/db"),
        Some("[::1]:27017".to_owned())
    );
    assert_eq!(
        first_host("mongodb://[::1]:27019"),
        Some("[::1]:27019".to_owned())
    );
    assert_eq!(
        through_proxy("mongodb+srv://cluster0.example.net/", 4000),
        None
    );
    // The driver accepts what the proxy makes of a URI with options.
    for uri in [
        "mongodb://u:p@h:1/?directConnection=true&authSource=admin",
        "mongodb://h/?serverSelectionTimeoutMS=5&tls=true&tlsAllowInvalidCertificates=true",
    ] {
        let proxied = through_proxy(uri, 4000).unwrap();
        mongodb::options::ConnectionString::parse(&proxied)
            .unwrap_or_else(|e| panic!("{proxied}: {e}"));
    }
}

/// #21, item 4: with the driver's own timeouts (no `serverSelectionTimeoutMS` in the URI), a
/// server that is not there is said within 10 s of start, in one line with the redacted address
/// and what to set.
#[tokio::test]
async fn an_unreachable_server_is_reported_within_10_seconds_of_start() {
    let started = Instant::now();
    let daemon = Daemon::spawn(
        &["run"],
        &[
            ("MONGODB_URI", "mongodb://vcm:s3cret-pw@127.0.0.1:1/"),
            ("VCMETRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    daemon
        .wait_for("has not answered for 5s", 1, Duration::from_secs(10))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let line = daemon
        .lines()
        .into_iter()
        .find(|l| l.contains("has not answered for 5s"))
        .unwrap();
    assert!(
        line.contains("mongodb://vcm:****@127.0.0.1:1/")
            && line.contains("set MONGODB_URI (or mongodb_uri in the --config file)")
            && !line.contains("s3cret-pw"),
        "{line}"
    );
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, Some(0), "{}", daemon.log());
}

/// #21, items 1-3, as a newcomer meets them on an empty database: a command that needs the
/// indexes fails in the server's words and names migrate (exit 6, no raw reply); a daemon
/// started without them says so at start, on /readyz and in a metric; `run --migrate` creates
/// them and, with the default schedules, shows the open hour's events within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs MONGODB_URI"]
async fn first_contact_on_an_empty_database() {
    let scratch = Scratch::new("first").await;
    let now = Utc::now();
    let hour = hour_of(now);
    let events: Vec<_> = (0..7)
        .map(|i| support::event("call_start", hour + chrono::Duration::seconds(i)))
        .collect();
    scratch.audit().insert_many(events).await.unwrap();

    let out = scratch
        .vcmetrics(
            &[
                "recompute",
                "--period",
                "hourly",
                "--from",
                "now-3h",
                "--to",
                "now-1h",
            ],
            &[],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: MongoDB aggregate failed: ")
            && last.ends_with(
                ": the database is not set up for vcmetrics; run `vcmetrics migrate` (or start \
                 the daemon with `vcmetrics run --migrate`)"
            ),
        "{err}"
    );
    assert!(
        !err.contains("RawDocumentBuf") && !err.contains("Kind:") && !err.contains("labels:"),
        "{err}"
    );

    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = [
        ("MONGODB_URI", scratch.uri.as_str()),
        ("VCMETRICS_DATABASE", scratch.name.as_str()),
        ("VCMETRICS_AUDIT_TTL", "3650d"),
        ("VCMETRICS_LISTEN", listen.as_str()),
    ];
    let daemon = Daemon::spawn(&["run"], &env);
    daemon
        // The setup check's own line (a failed run's error says "not set up" too, and can come
        // first: on the cluster it did).
        .wait_for(
            "until then runs fail and /readyz answers 503",
            1,
            Duration::from_secs(10),
        )
        .await;
    let (status, body) = daemon.readyz().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("the database lacks") && body.contains("run `vcmetrics migrate`"),
        "{body}"
    );
    assert!(
        daemon
            .metric("vcmetrics_database_missing_indexes", &[])
            .unwrap()
            >= 1.0
    );
    assert_eq!(daemon.terminate().await.0, Some(0), "{}", daemon.log());

    let started = Instant::now();
    let daemon = Daemon::spawn(&["run", "--migrate"], &env);
    let calls = daemon
        .eventually(
            "the open hour's document",
            Duration::from_secs(60),
            async || {
                let doc = scratch
                    .metrics()
                    .find_one(doc! {"period": "hourly", "date": support::bson_date(hour)})
                    .await
                    .unwrap()?;
                integer(&doc, "totalCalls").filter(|n| *n == 7)
            },
        )
        .await;
    assert_eq!(calls, 7);
    eprintln!(
        "first numbers {:.1}s after start",
        started.elapsed().as_secs_f64()
    );
    let (status, body) = daemon.readyz().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        daemon.metric("vcmetrics_database_missing_indexes", &[]),
        Some(0.0)
    );
    assert_eq!(daemon.terminate().await.0, Some(0), "{}", daemon.log());
    scratch.finish().await;
}
