//! End to end against a real MongoDB (6/7, or a compatible server) when `MONGODB_URI` is set:
//! migrate, insert the conformance fixtures, recompute, read back, verify, re-run, dry-run, and the
//! retention guard — all through the real `vcmetrics` binary. Credentials come from the URI; each
//! test works in a scratch database of its own and drops it at the end.
//!
//! Without `MONGODB_URI` the tests are reported as ignored; `scripts/test` runs them (with
//! `--include-ignored`) when it is set.

use std::path::Path;
use std::process::{Command, Output};

mod support;

use bson::{doc, Bson, Document};
use futures_util::TryStreamExt;
use mongodb::Database;
use support::Scratch;

/// Runs the binary against the scratch database and waits (blocking: these tests do nothing
/// else meanwhile).
fn vcmetrics(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Output {
    scratch
        .command(args, env)
        .output()
        .expect("the vcmetrics binary runs")
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {out}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn fixtures() -> Document {
    let dump = Command::new("node")
        .arg("dump-fixtures.mjs")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance"))
        .output()
        .expect("node dumps the conformance fixtures");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    match Bson::try_from(json).unwrap() {
        Bson::Document(d) => d,
        other => panic!("fixtures dump is not a document: {other}"),
    }
}

fn number(b: Option<&Bson>) -> Option<f64> {
    match b? {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

/// The expected document's fields, compared like the mingo suite does (doubles to 1e-9).
fn assert_same_metrics(case: &str, actual: &[Document], expected: &[Bson]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{case}: window count {actual:?}"
    );
    for (a, e) in actual.iter().zip(expected) {
        let e = e.as_document().unwrap();
        let mut a_keys: Vec<&String> = a
            .keys()
            .filter(|k| !["_id", "createdAt", "updatedAt"].contains(&k.as_str()))
            .collect();
        let mut e_keys: Vec<&String> = e.keys().collect();
        a_keys.sort();
        e_keys.sort();
        assert_eq!(
            a_keys,
            e_keys,
            "{case}: fields at {}",
            e.get("date").unwrap()
        );
        for (k, ev) in e {
            let where_ = format!("{case}: {} {k}", e.get("date").unwrap());
            match (number(Some(ev)), number(a.get(k))) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    "{where_}: {y} != {x}"
                ),
                (Some(_), None) => panic!("{where_}: missing or not a number: {:?}", a.get(k)),
                _ if k == "errorCounts" => {
                    let (ad, ed) = (a.get_document(k).unwrap(), ev.as_document().unwrap());
                    assert_eq!(ad.len(), ed.len(), "{where_}: {ad} vs {ed}");
                    for (code, n) in ed {
                        assert_eq!(number(ad.get(code)), number(Some(n)), "{where_}.{code}");
                    }
                }
                _ => assert_eq!(a.get(k), Some(ev), "{where_}"),
            }
        }
    }
}

async fn metrics_docs(db: &Database, collection: &str) -> Vec<Document> {
    db.collection::<Document>(collection)
        .find(doc! {})
        .sort(doc! {"date": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs MONGODB_URI"]
async fn migrate_recompute_verify_rerun_dry_run_and_retention_guard_on_a_real_server() {
    let scratch = Scratch::new("rollup").await;
    let fixtures = fixtures();
    let events = fixtures.get_document("events").unwrap();
    for (set, docs) in events {
        let docs: Vec<Document> = docs
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_document().unwrap().clone())
            .collect();
        scratch
            .db
            .collection::<Document>(&format!("audit_{set}"))
            .insert_many(docs)
            .await
            .unwrap();
    }

    for (i, case) in fixtures.get_array("cases").unwrap().iter().enumerate() {
        let case = case.as_document().unwrap();
        let name = case.get_str("name").unwrap();
        let audit = format!("audit_{}", case.get_str("events").unwrap());
        let metrics = format!("metrics_{i}");
        let env = [
            ("VCMETRICS_AUDIT_COLLECTION", audit.as_str()),
            ("VCMETRICS_METRICS_COLLECTION", metrics.as_str()),
            ("VCMETRICS_TIMEZONE", case.get_str("timezone").unwrap()),
        ];
        let range = [
            "--period",
            case.get_str("period").unwrap(),
            "--from",
            case.get_str("from").unwrap(),
            "--to",
            case.get_str("to").unwrap(),
        ];
        let with = |cmd: &str, extra: &[&str]| -> Vec<String> {
            [cmd]
                .iter()
                .chain(range.iter())
                .chain(extra.iter())
                .map(|s| s.to_string())
                .collect()
        };
        let run = |args: Vec<String>, extra_env: &[(&str, &str)]| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().chain(extra_env).copied().collect();
            vcmetrics(&scratch, &args, &env)
        };

        let first = ok(&run(vec!["migrate".into()], &[]));
        assert!(
            first.contains(&format!("created  {metrics}.period_1_date_1")),
            "{first}"
        );
        let again = ok(&run(vec!["migrate".into()], &[]));
        assert!(
            !again.lines().any(|l| l.starts_with("created ")),
            "migrate is idempotent: {again}"
        );

        let expected = case.get_array("expected").unwrap();
        let out = ok(&run(with("recompute", &[]), &[]));
        assert!(
            out.contains(&format!("{} new, 0 changed, 0 unchanged", expected.len())),
            "{name}: {out}"
        );
        let written = metrics_docs(&scratch.db, &metrics).await;
        assert_same_metrics(name, &written, expected);

        ok(&run(with("verify", &[]), &[]));

        // A re-run changes nothing but updatedAt.
        let out = ok(&run(with("recompute", &[]), &[]));
        assert!(
            out.contains(&format!("0 new, 0 changed, {} unchanged", expected.len())),
            "{name}: {out}"
        );
        let rerun = metrics_docs(&scratch.db, &metrics).await;
        for (a, b) in written.iter().zip(&rerun) {
            assert_eq!(a.get("_id"), b.get("_id"));
            assert_eq!(a.get("createdAt"), b.get("createdAt"));
        }
        assert_same_metrics(name, &rerun, expected);

        // The retention guard: a one-day horizon refuses these old windows unless forced.
        let refused = run(
            with("recompute", &[]),
            &[("VCMETRICS_AUDIT_RETENTION", "1d")],
        );
        assert_eq!(
            refused.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
        assert!(String::from_utf8_lossy(&refused.stderr).contains("retention horizon"));
        ok(&run(
            with("recompute", &["--force"]),
            &[("VCMETRICS_AUDIT_RETENTION", "1d")],
        ));
    }

    // Drift: remove the ICE.TIMEOUT events; dry-run reports the change and writes nothing,
    // verify exits 3, recompute repairs it and verify passes again.
    let env = [
        ("VCMETRICS_AUDIT_COLLECTION", "audit_march"),
        ("VCMETRICS_METRICS_COLLECTION", "metrics_0"),
    ];
    let hourly = [
        "--period",
        "hourly",
        "--from",
        "2026-03-01T09:00:00Z",
        "--to",
        "2026-03-01T12:00:00Z",
    ];
    let args = |cmd: &'static str, extra: &[&'static str]| -> Vec<&str> {
        [cmd]
            .into_iter()
            .chain(hourly)
            .chain(extra.iter().copied())
            .collect()
    };
    let before = metrics_docs(&scratch.db, "metrics_0").await;
    scratch
        .db
        .collection::<Document>("audit_march")
        .delete_many(doc! {"errorCode": "ICE.TIMEOUT"})
        .await
        .unwrap();
    let dry = ok(&vcmetrics(
        &scratch,
        &args("recompute", &["--dry-run"]),
        &env,
    ));
    assert!(
        dry.contains("would change hourly 2026-03-01T09:00:00+00:00: failedConnections: 1 -> 0"),
        "{dry}"
    );
    assert!(
        dry.contains("errorCounts.ICE_TIMEOUT: 1 -> missing"),
        "{dry}"
    );
    assert_eq!(
        metrics_docs(&scratch.db, "metrics_0").await,
        before,
        "dry-run wrote nothing"
    );
    let verify = vcmetrics(&scratch, &args("verify", &[]), &env);
    assert_eq!(verify.status.code(), Some(3));
    let out = ok(&vcmetrics(&scratch, &args("recompute", &[]), &env));
    assert!(out.contains("0 new, 2 changed, 1 unchanged"), "{out}");
    let repaired = metrics_docs(&scratch.db, "metrics_0").await;
    assert!(repaired[0]
        .get_document("errorCounts")
        .unwrap()
        .get("ICE_TIMEOUT")
        .is_none());
    ok(&vcmetrics(&scratch, &args("verify", &[]), &env));

    scratch.finish().await;
}

/// #22, item 2: recomputing an unchanged range again leaves every stored field bit-identical
/// (all but `updatedAt`, the run's time), on one node and on a sharded cluster, where the
/// shards' partial sums are combined in a different order on each run. Durations and connection
/// times with many decimals, so that sums of doubles would differ in their last bits.
#[tokio::test]
#[ignore = "needs MONGODB_URI"]
async fn a_rerun_over_unchanged_events_leaves_every_field_bit_identical() {
    let scratch = Scratch::new("bits").await;
    ok(&vcmetrics(&scratch, &["migrate"], &[]));
    let start = chrono::Utc::now() - chrono::Duration::days(4);
    let mut events = Vec::new();
    for i in 0..6000_i64 {
        let at = start + chrono::Duration::seconds(i * 41);
        let session = bson::oid::ObjectId::new();
        let x = (i * 7919 % 10007) as f64;
        events.push(doc! {
            "sessionId": session, "userId": bson::oid::ObjectId::new(), "action": "call_end",
            "timestamp": support::bson_date(at), "duration": x / 7.0 + 0.1, "metadata": {},
        });
        events.push(doc! {
            "sessionId": session, "userId": bson::oid::ObjectId::new(),
            "action": "connection_established", "timestamp": support::bson_date(at),
            "metadata": {"connectionTime": x / 3.0 + 0.3},
        });
    }
    scratch.audit().insert_many(events).await.unwrap();
    let range = ["--from", "now-5d", "--to", "now-1d"];
    let recompute = |period: &str| {
        let mut args = vec!["recompute", "--period", period];
        args.extend(range);
        ok(&vcmetrics(&scratch, &args, &[]))
    };
    let stored = || async {
        let mut docs: Vec<(String, Vec<u8>)> = Vec::new();
        for mut d in metrics_docs(&scratch.db, "videocallmetrics").await {
            d.remove("updatedAt");
            d.remove("_id");
            let key = format!(
                "{} {}",
                d.get_str("period").unwrap(),
                d.get_datetime("date").unwrap()
            );
            docs.push((key, bson::to_vec(&d).unwrap()));
        }
        docs.sort();
        docs
    };
    for period in ["hourly", "daily"] {
        recompute(period);
    }
    let first = stored().await;
    assert!(first.len() > 90, "{} documents", first.len());
    for period in ["hourly", "daily"] {
        let out = recompute(period);
        assert!(out.contains(" 0 changed"), "{out}");
    }
    let second = stored().await;
    let differing: Vec<&String> = first
        .iter()
        .zip(&second)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| &a.0)
        .collect();
    assert_eq!(first.len(), second.len());
    assert!(
        differing.is_empty(),
        "not bit-identical after a re-run: {differing:?}"
    );
    scratch.finish().await;
}

#[tokio::test]
#[ignore = "needs MONGODB_URI"]
async fn migrate_never_silently_changes_a_ttl() {
    let scratch = Scratch::new("ttl").await;
    ok(&vcmetrics(&scratch, &["migrate"], &[]));
    // The same deployment with the schema's 180-day TTL configured: reported, exit 4, unchanged.
    let differs = vcmetrics(&scratch, &["migrate"], &[("VCMETRICS_AUDIT_TTL", "180d")]);
    assert_eq!(
        differs.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&differs.stderr)
    );
    assert!(String::from_utf8_lossy(&differs.stdout)
        .contains("differs  videocallauditlogs.timestamp_1: expireAfterSeconds 315360000, config wants expireAfterSeconds 15552000"));
    let ttl = |db: Database| async move {
        let indexes: Vec<Document> = db
            .run_command(doc! {"listIndexes": "videocallauditlogs"})
            .await
            .unwrap()
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .iter()
            .map(|d| d.as_document().unwrap().clone())
            .collect();
        indexes
            .iter()
            .find(|i| i.get_str("name") == Ok("timestamp_1"))
            .and_then(|i| number(i.get("expireAfterSeconds")))
    };
    assert_eq!(ttl(scratch.db.clone()).await, Some(315_360_000.0));
    // Asked explicitly, it changes it.
    ok(&vcmetrics(
        &scratch,
        &["migrate", "--update-ttl"],
        &[("VCMETRICS_AUDIT_TTL", "180d")],
    ));
    assert_eq!(ttl(scratch.db.clone()).await, Some(15_552_000.0));
    scratch.finish().await;
}

/// Issue 11 (indexes): migrate creates the seed's sessions indexes, and an existing index with the
/// same keys but other options is reported (exit 4) and left alone.
#[tokio::test]
#[ignore = "needs MONGODB_URI"]
async fn migrate_creates_the_sessions_indexes_and_reports_other_options() {
    let scratch = Scratch::new("sessions").await;
    let sessions = scratch.db.collection::<Document>("sessions");
    sessions
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"meetingLink": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("meetingLink_1".to_owned())
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let differs = vcmetrics(&scratch, &["migrate"], &[]);
    let stdout = String::from_utf8_lossy(&differs.stdout).into_owned();
    assert_eq!(differs.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("differs  sessions.meetingLink_1: unique, vcmetrics wants unique, sparse"),
        "{stdout}"
    );
    for name in [
        "videoCallStarted_1",
        "lastAccessedAt_1",
        "clientId_1_sessionDate_1",
        "psychologistId_1_sessionDate_1",
        "status_1_sessionDate_1",
        "createdAt_1",
    ] {
        assert!(
            stdout.contains(&format!("created  sessions.{name}")),
            "{stdout}"
        );
    }
    let indexes = || async {
        let models: Vec<mongodb::IndexModel> = sessions
            .list_indexes()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        models
            .into_iter()
            .filter_map(|m| m.options)
            .map(|o| (o.name.unwrap_or_default(), o.unique, o.sparse))
            .collect::<Vec<_>>()
    };
    let link = |all: Vec<(String, Option<bool>, Option<bool>)>| {
        all.into_iter().find(|(name, _, _)| name == "meetingLink_1")
    };
    // Left as it was.
    assert_eq!(
        link(indexes().await),
        Some(("meetingLink_1".to_owned(), Some(true), None))
    );
    // Dropped by the operator, created as the seed wants it.
    sessions.drop_index("meetingLink_1").await.unwrap();
    ok(&vcmetrics(&scratch, &["migrate"], &[]));
    let (_, unique, sparse) = link(indexes().await).expect("meetingLink_1 created");
    assert_eq!((unique, sparse), (Some(true), Some(true)));
    scratch.finish().await;
}

/// #22, item 3, on a sharded cluster only (`MONGODB_SHARDED`; `scripts/test` filters tests named
/// `sharded_` out elsewhere): with the metrics collection sharded, `migrate` creates every index
/// it can and says which collection must stay unsharded and why (exit 6), never a raw driver
/// error; a `$merge` into a sharded staging collection is refused in the same words.
#[tokio::test]
#[ignore = "needs MONGODB_URI"]
async fn sharded_migrate_says_which_collection_must_stay_unsharded() {
    assert!(
        support::sharded(),
        "run with MONGODB_SHARDED=1 against a sharded cluster"
    );
    let scratch = Scratch::new("shard_refusal").await;
    support::shard_collection(&scratch.client, &scratch.name, "videocallmetrics").await;
    let out = vcmetrics(&scratch, &["migrate"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("the database cannot be set up for vcmetrics: the unique index videocallmetrics.period_1_date_1")
            && err.contains("keep videocallmetrics unsharded (every run's $merge matches windows on {period, date}"),
        "{err}"
    );
    assert!(
        !err.contains("Kind:") && !err.contains("RawDocumentBuf"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for created in [
        "created  videocallauditlogs.timestamp_1",
        "created  videocallmetrics.date_1",
        "created  videocallmetrics_staging.at_1",
    ] {
        assert!(stdout.contains(created), "{created} in:\n{stdout}");
    }

    // The metrics collection unsharded again, the staging collection sharded instead.
    scratch.metrics().drop().await.unwrap();
    support::shard_collection(&scratch.client, &scratch.name, "videocallmetrics_staging").await;
    ok(&vcmetrics(&scratch, &["migrate"], &[]));
    scratch
        .audit()
        .insert_one(support::event(
            "call_start",
            chrono::Utc::now() - chrono::Duration::days(2),
        ))
        .await
        .unwrap();
    let out = vcmetrics(
        &scratch,
        &[
            "recompute",
            "--period",
            "daily",
            "--from",
            "now-3d",
            "--to",
            "now-1d",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("must stay unsharded on this engine"), "{err}");

    // The archive, which `vcmetrics archive` copies into with `$merge`, likewise.
    support::shard_collection(&scratch.client, &scratch.name, "videocallauditlogs_archive").await;
    let out = vcmetrics(&scratch, &["archive", "--before", "now-1d"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("archive.collection) must stay unsharded on this engine"),
        "{err}"
    );
    scratch.finish().await;
}

/// #23: the lease's epoch fences a leader whose lease lapsed: on the server, its `$merge`
/// writes nothing once another replica took the lease over, and the new leader's does.
#[tokio::test]
#[ignore = "needs MONGODB_URI"]
async fn the_lease_epoch_fences_the_merge_of_a_leader_that_lost_it() {
    use vcmetrics::rollup::commands::Fence;
    use vcmetrics::rollup::{plan_range, process, Batch, Mode};
    use vcmetrics::store::{HeldLease, LeaseHolder, LeaseStore, MongoStore};
    use vcmetrics::window::Period;

    let scratch = Scratch::new("fence").await;
    ok(&vcmetrics(&scratch, &["migrate"], &[]));
    let config = vcmetrics::config::from_toml(
        &format!(
            "mongodb_uri = {:?}\ndatabase = {:?}\nlate_events.enabled = false",
            scratch.uri, scratch.name
        ),
        &[],
    )
    .unwrap();
    let store = MongoStore::connect(&config).await.unwrap();
    // Dates as the server keeps them (milliseconds).
    let now = bson::DateTime::from_chrono(chrono::Utc::now()).to_chrono();
    let (ttl, settle) = (
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(95),
    );
    let (a, b) = (LeaseHolder::new("a"), LeaseHolder::new("b"));
    // Never taken: nothing of an earlier holder can land.
    let first = HeldLease {
        epoch: 1,
        settled_at: now,
    };
    assert_eq!(
        store.try_lease(&a, now, ttl, settle).await.unwrap(),
        Some(first)
    );
    assert_eq!(
        store.try_lease(&a, now, ttl, settle).await.unwrap(),
        Some(first)
    );
    assert_eq!(store.try_lease(&b, now, ttl, settle).await.unwrap(), None);

    let hour = support::hour_of(now) - support::hours(3);
    let plan = plan_range(&config, Period::Hourly, hour, hour + support::hours(1), now);
    let calls = |n: i64| {
        (0..n)
            .map(|i| support::event("call_start", hour + support::minutes(i)))
            .collect::<Vec<_>>()
    };
    let roll_up = |fence: Fence| {
        let (config, plan) = (&config, &plan);
        let store = &store;
        async move {
            let batch = Batch {
                period: Period::Hourly,
                windows: &plan.windows,
                now,
                mode: Mode::Write,
                chunk_windows: 1,
                fence: Some(&fence),
            };
            process(store, config, batch, |_| {}).await.unwrap();
        }
    };
    let total_calls = || async {
        let doc = scratch.window("hourly", hour).await.unwrap();
        number(doc.get("totalCalls"))
    };
    let fence = |holder: &str, epoch| Fence {
        holder: holder.to_owned(),
        epoch,
    };
    scratch.audit().insert_many(calls(3)).await.unwrap();
    roll_up(fence("a", 1)).await;
    assert_eq!(total_calls().await, Some(3.0));

    // `a`'s lease lapses; `b` takes it over, under the next epoch.
    let later = now + chrono::Duration::seconds(31);
    let taken = store.try_lease(&b, later, ttl, settle).await.unwrap();
    let settles = later + chrono::Duration::seconds(95);
    assert_eq!(
        taken,
        Some(HeldLease {
            epoch: 2,
            settled_at: settles,
        }),
        "a write of `a` may land until its aggregate_timeout and margin have passed"
    );
    assert!(!store.holds_lease("a", 1).await.unwrap());
    assert!(store.holds_lease("b", 2).await.unwrap());
    scratch.audit().insert_many(calls(2)).await.unwrap();
    roll_up(fence("a", 1)).await;
    assert_eq!(total_calls().await, Some(3.0), "the stale leader wrote");
    roll_up(fence("b", 2)).await;
    assert_eq!(total_calls().await, Some(5.0));

    // Given up, the lease passes on without a takeover: its epoch still grows, and its
    // `settledAt` only moves forward (`b` gave it up with no write in flight).
    store.release_lease(&b, later).await.unwrap();
    assert_eq!(
        store.try_lease(&a, later, ttl, settle).await.unwrap(),
        Some(HeldLease {
            epoch: 3,
            settled_at: settles,
        })
    );
    // `a` restarted (the same name, another process) cannot renew its predecessor's lease: it
    // waits for it to expire, then takes it over under the next epoch, like any other replica.
    let restarted = LeaseHolder::new("a");
    assert_eq!(
        store
            .try_lease(&restarted, later, ttl, settle)
            .await
            .unwrap(),
        None
    );
    // A renewal that reaches the server late does not shorten a later one.
    let sooner = later - chrono::Duration::seconds(10);
    assert!(store
        .try_lease(&a, sooner, ttl, settle)
        .await
        .unwrap()
        .is_some());
    let lease = scratch.lease().await.unwrap();
    assert_eq!(
        lease.get_datetime("expiresAt").unwrap().to_chrono(),
        later + chrono::Duration::seconds(30)
    );
    let after_expiry = later + chrono::Duration::seconds(31);
    let restarted_took = store
        .try_lease(&restarted, after_expiry, ttl, settle)
        .await
        .unwrap();
    assert_eq!(restarted_took.map(|l| l.epoch), Some(4));
    // A holder that abandoned a run gives it up with the time its write lands at the latest.
    // (A release from the predecessor, arriving late, gives up nothing.)
    let abandoned = settles + chrono::Duration::seconds(60);
    store.release_lease(&a, abandoned).await.unwrap();
    assert_eq!(
        scratch.lease().await.unwrap().get_bool("released"),
        Ok(false)
    );
    store.release_lease(&restarted, abandoned).await.unwrap();
    let retaken = store.try_lease(&b, later, ttl, settle).await.unwrap();
    assert_eq!(retaken.map(|l| l.settled_at), Some(abandoned));

    // Windows noted for a rewrite wait in the database, with the latest `until` noted.
    use vcmetrics::store::{MarkStore, PendingRewrite};
    assert_eq!(store.pending_rewrite(Period::Hourly).await.unwrap(), None);
    let (h1, h2) = (hour, hour + support::hours(1));
    store
        .note_rewrite(Period::Hourly, &[h2, h1], settles)
        .await
        .unwrap();
    store
        .note_rewrite(Period::Hourly, &[h1], abandoned)
        .await
        .unwrap();
    assert_eq!(
        store.pending_rewrite(Period::Hourly).await.unwrap(),
        Some(PendingRewrite {
            until: abandoned,
            starts: vec![h1, h2],
        })
    );
    assert_eq!(store.pending_rewrite(Period::Daily).await.unwrap(), None);
    store
        .clear_rewrite(Period::Hourly, &[h1, h2])
        .await
        .unwrap();
    assert_eq!(store.pending_rewrite(Period::Hourly).await.unwrap(), None);
    store.shutdown().await;
    scratch.finish().await;
}

/// #22 item 6: incremental hourly runs, every 7 minutes over four hours of writes (some written
/// more than an hour late), leave exactly the documents a whole-window recompute computes
/// (`verify` compares every field), with distinct users of several types.
#[tokio::test]
#[ignore = "needs MONGODB_URI"]
async fn incremental_hourly_runs_write_what_a_recompute_computes() {
    use bson::oid::ObjectId;
    use vcmetrics::daemon::incremental::run_incremental;
    use vcmetrics::daemon::tenure::Tenure;
    use vcmetrics::rollup::commands::Fence;
    use vcmetrics::store::{LeaseHolder, LeaseStore, MarkStore, MongoStore};
    use vcmetrics::window::Period;

    let scratch = Scratch::new("incremental").await;
    ok(&vcmetrics(&scratch, &["migrate"], &[]));
    let config = vcmetrics::config::from_toml(
        &format!(
            "mongodb_uri = {:?}\ndatabase = {:?}",
            scratch.uri, scratch.name
        ),
        &[],
    )
    .unwrap();
    let store = MongoStore::connect(&config).await.unwrap();
    // The runs' times are chosen; only the retention guard of `verify` needs them recent.
    let real_now = bson::DateTime::from_chrono(chrono::Utc::now()).to_chrono();
    let hour = support::hour_of(real_now) - support::hours(6);
    let holder = LeaseHolder::new("a");
    let lease = store
        .try_lease(
            &holder,
            real_now,
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap()
        .expect("a fresh lease");
    let tenure = Tenure {
        fence: Fence {
            holder: holder.name.clone(),
            epoch: lease.epoch,
        },
        settled_at: lease.settled_at,
    };

    // Three hours of events, one every 37 s, written 2 s after they happened; every ninth an
    // hour and ten minutes late. Actions, users and values vary. (Each is inserted at its write
    // time, which its `_id` tells.)
    let actions = [
        "join_attempt",
        "call_start",
        "call_end",
        "connection_established",
        "error_occurred",
        "bogus",
    ];
    let users = [
        Bson::ObjectId(ObjectId::new()),
        Bson::ObjectId(ObjectId::new()),
        Bson::String("a.b$c".into()),
        Bson::String("$x".into()),
        Bson::Int32(7),
        Bson::Double(7.0),
        Bson::Null,
    ];
    let mut events: Vec<(chrono::DateTime<chrono::Utc>, Document)> = (0..292_i64)
        .map(|i| {
            let at = hour + chrono::Duration::seconds(37 * i);
            let lag = if i % 9 == 0 { 4200 } else { 2 };
            let written = (at + chrono::Duration::seconds(lag)).timestamp() as u32;
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&written.to_be_bytes());
            id[4..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            let action = actions[i as usize % actions.len()];
            let mut d = doc! {"_id": ObjectId::from_bytes(id), "sessionId": ObjectId::new(),
                "userId": users[i as usize % users.len()].clone(), "action": action,
                "timestamp": support::bson_date(at), "metadata": {"connectionTime": (i % 13) as f64 * 10.25}};
            if action == "call_end" {
                d.insert("duration", 0.1 * i as f64);
            }
            if action == "error_occurred" && i % 2 == 0 {
                d.insert("errorCode", "ICE.TIMEOUT");
            }
            (at + chrono::Duration::seconds(lag), d)
        })
        .collect();
    // Just before each run, an event of a user of its own whose insert is held up 11 s: the
    // run reads its range without it, and only counting that range again once it settles finds
    // it (its user would be missing otherwise).
    let first_run = hour + chrono::Duration::seconds(65);
    for k in 0..26_i64 {
        let run = first_run + support::minutes(7 * k);
        let made = (run - chrono::Duration::seconds(10)).timestamp() as u32;
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&made.to_be_bytes());
        id[4..].copy_from_slice(&(1000 + k as u64).to_be_bytes());
        let d = doc! {"_id": ObjectId::from_bytes(id), "sessionId": ObjectId::new(),
        "userId": ObjectId::new(), "action": "join_attempt",
        "timestamp": support::bson_date(run - chrono::Duration::seconds(12)), "metadata": {}};
        events.push((run + chrono::Duration::seconds(1), d));
    }
    events.sort_by_key(|(inserted, _)| *inserted);

    // The events are inserted as they are written (the held-up ones later), before each run.
    let mut now = first_run;
    while now < hour + support::hours(5) {
        let due = events.partition_point(|(inserted, _)| *inserted <= now);
        let written: Vec<Document> = events.drain(..due).map(|(_, d)| d).collect();
        if !written.is_empty() {
            scratch.audit().insert_many(written).await.unwrap();
        }
        let watermark = store
            .watermark(Period::Hourly)
            .await
            .unwrap()
            .unwrap_or(hour);
        run_incremental(
            &store,
            &config,
            Period::Hourly,
            now,
            None,
            watermark,
            &tenure,
            &mut Vec::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("the run at {now}: {e:?}"));
        now += support::minutes(7);
    }
    let mark = store.tick_mark(Period::Hourly).await.unwrap().unwrap();
    assert_eq!(mark.origin, hour);
    scratch
        .assert_verified("hourly", hour, hour + support::hours(4))
        .await;
    // Not vacuous: each hour has its events and users, the late ones included.
    for h in 0..3 {
        let doc = scratch
            .window("hourly", hour + support::hours(h))
            .await
            .unwrap();
        assert!(
            support::integer(&doc, "totalAttempts").unwrap() > 10,
            "{doc}"
        );
        // The five users of the fixture, and the held-up events' own.
        assert!(support::integer(&doc, "uniqueUsers").unwrap() > 5, "{doc}");
    }
    store.shutdown().await;
    scratch.finish().await;
}
