//! Issue 12 on a real server: `vcmetrics archive` killed half-way and re-run loses and
//! duplicates nothing, and rollups of archived windows read the archive (in the audit log's
//! database, or in another one) while the retention guard moves to where audit log and archive
//! together are complete.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;
use std::time::Duration;

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::Collection;
use support::{assert_success, bson_date, day_of, describe, Scratch};

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

async fn all(collection: &Collection<Document>) -> Vec<Document> {
    collection
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Every event's `_id`, by day of its timestamp (UTC), in one collection.
async fn events_by_day(collection: &Collection<Document>) -> BTreeMap<DateTime<Utc>, Vec<Bson>> {
    let docs: Vec<Document> = collection
        .find(doc! {})
        .projection(doc! {"timestamp": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut by_day: BTreeMap<DateTime<Utc>, Vec<Bson>> = BTreeMap::new();
    for d in docs {
        let day = match d.get("timestamp") {
            Some(Bson::DateTime(t)) => day_of(t.to_chrono()),
            // Malformed timestamps (the generator writes some) have their own bucket.
            _ => DateTime::<Utc>::MIN_UTC,
        };
        by_day
            .entry(day)
            .or_default()
            .push(d.get("_id").unwrap().clone());
    }
    by_day
}

/// The number of events by day over the audit log and the archive together, and the `_id`s
/// found in both.
async fn counted_over_both(
    audit: &Collection<Document>,
    archive: &Collection<Document>,
) -> (BTreeMap<DateTime<Utc>, usize>, BTreeSet<String>) {
    let (in_audit, in_archive) = (events_by_day(audit).await, events_by_day(archive).await);
    let mut counts = BTreeMap::new();
    for (day, ids) in in_audit.iter().chain(in_archive.iter()) {
        *counts.entry(*day).or_insert(0) += ids.len();
    }
    let audit_ids: BTreeSet<String> = in_audit.values().flatten().map(|b| b.to_string()).collect();
    let both = in_archive
        .values()
        .flatten()
        .map(|id| id.to_string())
        .filter(|id| audit_ids.contains(id))
        .collect();
    (counts, both)
}

async fn generate(scratch: &Scratch, events: &str, from: DateTime<Utc>, to: DateTime<Utc>) {
    let out = scratch
        .vcmetrics(
            &[
                "generate",
                "--events",
                events,
                "--from",
                &from.to_rfc3339(),
                "--to",
                &to.to_rfc3339(),
                "--seed",
                "12",
            ],
            &[],
        )
        .await;
    assert_success("generate", &out);
}

async fn archive_state(scratch: &Scratch) -> Document {
    scratch
        .state()
        .find_one(doc! {"_id": "archive"})
        .await
        .unwrap()
        .expect("the archive's state document")
}

/// As if the lock of a killed run had expired.
async fn expire_lock(scratch: &Scratch) {
    scratch
        .state()
        .update_one(
            doc! {"_id": "archive"},
            doc! {"$set": {"holdUntil": bson_date(Utc::now() - days(1))}},
        )
        .await
        .unwrap();
}

/// Waits until the archive lock's `holdUntil` has passed. A killed run's last lock renewal may
/// still reach DocumentDB after the kill (and after [`expire_lock`]): the server finishes the
/// command of a connection that died.
async fn wait_for_lock(scratch: &Scratch) {
    let state = archive_state(scratch).await;
    if let Ok(until) = state.get_datetime("holdUntil") {
        let left = (until.to_chrono() - Utc::now())
            .to_std()
            .unwrap_or_default();
        eprintln!("the lock of a killed run is held for {left:?} more; waiting");
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
}

/// `vcmetrics archive` started, once it holds the lock (its holder name ends in its pid); a run
/// that finds the lock held waits for it and starts again.
async fn spawn_archive(
    scratch: &Scratch,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Child {
    loop {
        let mut child = scratch.command(args, env).spawn().unwrap();
        let me = format!("-{}", child.id());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(5), "archive ended at once: {status}");
                wait_for_lock(scratch).await;
                break;
            }
            let state = scratch
                .state()
                .find_one(doc! {"_id": "archive"})
                .await
                .unwrap();
            if state.is_some_and(|s| s.get_str("holder").is_ok_and(|h| h.ends_with(&me))) {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The daily metrics documents, oldest first, without `_id`, `createdAt` and `updatedAt`.
async fn daily_documents(scratch: &Scratch) -> Vec<Document> {
    scratch
        .metrics()
        .find(doc! {"period": "daily"})
        .projection(doc! {"_id": 0, "createdAt": 0, "updatedAt": 0})
        .sort(doc! {"date": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// `vcmetrics <command> --period <period> --from <from> --to <to>` against the scratch database.
async fn over_range(
    scratch: &Scratch,
    command: &str,
    period: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    env: &[(&str, &str)],
) -> Output {
    let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
    let args = [command, "--period", period, "--from", &from, "--to", &to];
    scratch.vcmetrics(&args, env).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn archive_killed_half_way_and_rerun_loses_nothing_and_duplicates_nothing() {
    let scratch = Scratch::new("archive_kill").await;
    scratch.migrate().await;
    let now = Utc::now();
    let (from, to) = (day_of(now) - days(20), day_of(now) - days(1));
    generate(&scratch, "6000", from, to).await;
    let out = over_range(&scratch, "recompute", "all", (from, to), &[]).await;
    assert_success("recompute", &out);
    let archive = scratch
        .db
        .collection::<Document>("videocallauditlogs_archive");
    let (before, _) = counted_over_both(&scratch.audit(), &archive).await;
    let originals: BTreeMap<String, Document> = all(&scratch.audit())
        .await
        .into_iter()
        .map(|d| (d.get("_id").unwrap().to_string(), d))
        .collect();
    let cutoff = day_of(now) - days(8);
    let waiting = scratch
        .audit()
        .count_documents(doc! {"timestamp": {"$lt": bson_date(cutoff)}})
        .await
        .unwrap();
    assert!(waiting > 1000, "{waiting} events to archive");

    // Ctrl-C stops a run after its current batch: the lock is given up and nothing is
    // half-moved, so the next run can start at once.
    let batch = [("VCMETRICS_ARCHIVE_BATCH_SIZE", "50")];
    let args = ["archive", "--before", &cutoff.to_rfc3339()];
    let mut child = spawn_archive(&scratch, &args, &batch).await;
    while archive.count_documents(doc! {}).await.unwrap() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT: {status}");
    let state = archive_state(&scratch).await;
    assert_eq!(state.get("holder"), Some(&Bson::Null), "{state}");
    assert_eq!(state.get("batch"), Some(&Bson::Null), "{state}");

    // Three runs killed (SIGKILL) at growing points, in whatever phase a batch is then.
    // Each batch moves `seq` by three (copying, deleting, cleared): killing at 4 batches and 1,
    // 2 and 3 changes lands after each of the three, whatever the server's speed.
    for round in 1..=3_i64 {
        let start = archive_state(&scratch).await.get_i64("seq").unwrap();
        let mut child = spawn_archive(&scratch, &args, &batch).await;
        let target = start + 12 + round;
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while archive_state(&scratch).await.get_i64("seq").unwrap() < target {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no progress"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the run ended before it was killed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let state = archive_state(&scratch).await;
        eprintln!(
            "round {round}: killed with {} events archived, batch left: {:?}",
            archive.count_documents(doc! {}).await.unwrap(),
            state.get_document("batch").ok().map(|b| (
                b.get_str("phase").unwrap().to_owned(),
                b.get_array("ids").unwrap().len()
            ))
        );
        // Half-way, rollups count every event once: the stored metrics still verify.
        scratch.assert_verified("daily", from, to).await;
        scratch
            .assert_verified("hourly", cutoff - days(3), cutoff + days(1))
            .await;
        // The killed run keeps its lock until it expires: the next run says so and stops.
        if round == 1 {
            let out = scratch.vcmetrics(&args, &batch).await;
            assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("holds the archive lock until"),
                "{}",
                describe(&out)
            );
        }
        expire_lock(&scratch).await;
    }

    let out = loop {
        let out = scratch.vcmetrics(&args, &batch).await;
        if out.status.code() != Some(5) {
            break out;
        }
        wait_for_lock(&scratch).await;
    };
    assert_success("archive (the run after the kills)", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("every event before"), "{stdout}");

    let (after, both) = counted_over_both(&scratch.audit(), &archive).await;
    assert!(
        both.is_empty(),
        "{} events are in both collections",
        both.len()
    );
    // Unchanged: the same _id and the same fields, value for value.
    for moved in all(&archive).await {
        let id = moved.get("_id").unwrap().to_string();
        assert_eq!(Some(&moved), originals.get(&id), "archived event {id}");
    }
    assert_eq!(after, before, "events by day over audit log + archive");
    let left = scratch
        .audit()
        .count_documents(doc! {"timestamp": {"$lt": bson_date(cutoff)}})
        .await
        .unwrap();
    assert_eq!(left, 0, "events before the cutoff left in the audit log");
    assert_eq!(
        archive
            .count_documents(doc! {"timestamp": {"$gte": bson_date(cutoff)}})
            .await
            .unwrap(),
        0,
        "events at or after the cutoff archived"
    );
    let state = scratch
        .state()
        .find_one(doc! {"_id": "archive"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.get("batch"), Some(&Bson::Null), "{state}");
    assert_eq!(state.get("holder"), Some(&Bson::Null), "{state}");
    for period in ["hourly", "daily", "weekly", "monthly"] {
        scratch.assert_verified(period, from, to).await;
    }
    // Nothing left to move: a second run moves nothing and says so.
    let out = scratch.vcmetrics(&args, &[]).await;
    assert_success("archive (nothing left)", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("moved 0 of 0"),
        "{}",
        describe(&out)
    );
    scratch.finish().await;
}

/// Archive with `audit_retention` 10 days and `archive.after` 5 days, then rebuild archived
/// windows; in `archive_database` when given.
async fn rebuild_across_the_archive(scratch: &Scratch, archive_database: Option<&str>) {
    let env_with = |retention: &'static str| {
        let mut env = vec![
            ("VCMETRICS_AUDIT_RETENTION", retention),
            ("VCMETRICS_ARCHIVE_AFTER", "5d"),
        ];
        if let Some(db) = archive_database {
            env.push(("VCMETRICS_ARCHIVE_DATABASE", db));
        }
        env
    };
    // Long enough that the monthly window of `from` (at most 13 + 31 days back) is inside it on
    // any day of the month: with 30 days, from about the 2nd to the 13th it was not, and the
    // recompute of `--period all` was refused (#23, item 5).
    let migrate = scratch.vcmetrics(&["migrate"], &env_with("62d")).await;
    assert_success("migrate", &migrate);
    let archive = scratch
        .client
        .database(archive_database.unwrap_or(&scratch.name))
        .collection::<Document>("videocallauditlogs_archive");
    let indexes: Vec<String> = archive.list_index_names().await.unwrap();
    assert!(indexes.contains(&"timestamp_1".to_owned()), "{indexes:?}");

    let now = Utc::now();
    let (from, to) = (day_of(now) - days(13), day_of(now) - days(1));
    generate(scratch, "4000", from, to).await;
    let out = over_range(scratch, "recompute", "all", (from, to), &env_with("62d")).await;
    assert_success("recompute", &out);
    let stored = daily_documents(scratch).await;

    let out = scratch.vcmetrics(&["archive"], &env_with("10d")).await;
    assert_success("archive", &out);
    let moved = archive.count_documents(doc! {}).await.unwrap();
    assert!(moved > 1000, "{moved} events archived\n{}", describe(&out));
    let state = scratch
        .state()
        .find_one(doc! {"_id": "archive"})
        .await
        .unwrap()
        .unwrap();
    let complete_from = state.get_datetime("completeFrom").unwrap().to_chrono();
    assert!(
        (complete_from - (now - days(10))).num_minutes().abs() < 5,
        "{state}"
    );

    // Every window verifies: archived windows are read from the archive.
    for period in ["hourly", "daily", "weekly", "monthly"] {
        let out = over_range(scratch, "verify", period, (from, to), &env_with("10d")).await;
        assert_success(&format!("verify {period}"), &out);
    }

    // Days later the TTL has passed the archived days (as if: a 7-day retention now), and their
    // documents are lost: recompute rebuilds them from the archive, where the guard of the
    // audit log alone (now - 7d) would have refused.
    let rebuilt_from = day_of(now) - days(9);
    scratch
        .metrics()
        .delete_many(doc! {"date": {"$gte": bson_date(rebuilt_from), "$lt": bson_date(day_of(now) - days(5))}})
        .await
        .unwrap();
    let out = over_range(
        scratch,
        "recompute",
        "daily",
        (rebuilt_from, to),
        &env_with("7d"),
    )
    .await;
    assert_success("recompute of archived windows", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("daily: 8 windows"),
        "{}",
        describe(&out)
    );
    let rebuilt = daily_documents(scratch).await;
    assert_eq!(
        rebuilt, stored,
        "daily documents rebuilt from audit log + archive"
    );
    // The staging collection keeps nothing of the copies an archive in another database needs.
    let staged = scratch
        .db
        .collection::<Document>("videocallmetrics_staging")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(staged, 0);

    // Before the point of completeness the guard refuses, and says where the point is.
    let out = over_range(
        scratch,
        "recompute",
        "daily",
        (day_of(now) - days(12), to),
        &env_with("7d"),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&complete_from.to_rfc3339()), "{stderr}");

    // The oldest archived days dumped elsewhere and dropped: the guard moves up to them.
    let dropped = day_of(now) - days(8);
    let out = scratch
        .vcmetrics(
            &["archive", "--drop-before", &dropped.to_rfc3339()],
            &env_with("7d"),
        )
        .await;
    assert_success("archive --drop-before", &out);
    let left = archive
        .count_documents(doc! {"timestamp": {"$lt": bson_date(dropped)}})
        .await
        .unwrap();
    assert_eq!(left, 0);
    let out = over_range(
        scratch,
        "recompute",
        "daily",
        (rebuilt_from, to),
        &env_with("7d"),
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&dropped.to_rfc3339()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn recompute_and_verify_read_the_archive_and_the_guard_moves_to_its_completeness() {
    let scratch = Scratch::new("archive_read").await;
    rebuild_across_the_archive(&scratch, None).await;
    scratch.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn an_archive_in_another_database_is_read_through_the_staging_collection() {
    let scratch = Scratch::new("archive_db").await;
    let cold = format!("{}_cold", scratch.name);
    rebuild_across_the_archive(&scratch, Some(&cold)).await;
    scratch.client.database(&cold).drop().await.unwrap();
    scratch.finish().await;
}

/// The chaos soak's finding on the sharded cluster, on a real server: an event written late into
/// an old window stays in the audit log, where the daemon's late-event scans read, until every
/// period's late-event mark has passed it; the next run after that takes it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn archive_leaves_late_events_until_every_late_scan_has_seen_them() {
    use bson::oid::ObjectId;
    use vcmetrics::rollup::late_scan::object_id_at;

    let scratch = Scratch::new("archive_late").await;
    scratch.migrate().await;
    let now = Utc::now();
    let old = day_of(now) - days(20);
    let event = |id: ObjectId, at: DateTime<Utc>| {
        doc! {"_id": id, "sessionId": ObjectId::new(), "userId": ObjectId::new(),
        "action": "call_start", "timestamp": bson_date(at), "metadata": {}}
    };
    let on_time = object_id_at(old + chrono::Duration::minutes(1));
    let late = ObjectId::new();
    let mut no_write_time = event(ObjectId::new(), old + chrono::Duration::hours(2));
    no_write_time.insert("_id", "not-an-object-id");
    scratch
        .audit()
        .insert_many([
            event(on_time, old),
            event(late, old + chrono::Duration::hours(1)),
            no_write_time,
        ])
        .await
        .unwrap();
    let marks_at = |at: DateTime<Utc>| {
        let state = scratch.state();
        async move {
            for period in ["hourly", "daily", "weekly", "monthly"] {
                state
                    .update_one(
                        doc! {"_id": format!("late-events:{period}")},
                        doc! {"$set": {"since": object_id_at(at), "at": bson_date(at)}},
                    )
                    .upsert(true)
                    .await
                    .unwrap();
            }
        }
    };
    let ids_in = |collection: Collection<Document>| async move {
        all(&collection)
            .await
            .into_iter()
            .filter_map(|d| d.get_object_id("_id").ok())
            .collect::<Vec<_>>()
    };
    // No late-event scan reads an `_id` that is not an ObjectId: that event never waits.
    let not_an_object_id = |collection: Collection<Document>| async move {
        collection
            .count_documents(doc! {"_id": "not-an-object-id"})
            .await
            .unwrap()
    };
    let archive = scratch
        .db
        .collection::<Document>("videocallauditlogs_archive");
    let cutoff = (old + days(1)).to_rfc3339();

    marks_at(now - chrono::Duration::hours(1)).await;
    // The dry run counts what the run then moves, and says what waits.
    let out = scratch
        .vcmetrics(&["archive", "--before", &cutoff, "--dry-run"], &[])
        .await;
    assert_success("archive --dry-run", &out);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("would move 2 audit events"), "{printed}");
    assert!(
        printed.contains("audit events left waiting in the audit log: 1 ("),
        "{printed}"
    );
    let out = scratch
        .vcmetrics(&["archive", "--before", &cutoff], &[])
        .await;
    assert_success("archive", &out);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("moved 2 of 2 audit events"),
        "{printed}"
    );
    assert!(
        printed.contains("left waiting in the audit log: 1 ("),
        "{printed}"
    );
    assert_eq!(ids_in(scratch.audit()).await, [late], "{}", describe(&out));
    assert_eq!(ids_in(archive.clone()).await, [on_time]);
    assert_eq!(not_an_object_id(archive.clone()).await, 1);
    assert_eq!(not_an_object_id(scratch.audit()).await, 0);

    marks_at(now + chrono::Duration::minutes(1)).await;
    let out = scratch
        .vcmetrics(&["archive", "--before", &cutoff], &[])
        .await;
    assert_success("archive", &out);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("moved 1 of 1 audit events"),
        "{printed}"
    );
    assert!(!printed.contains("left waiting"), "{printed}");
    assert_eq!(ids_in(scratch.audit()).await, []);
    let mut archived = ids_in(archive).await;
    archived.sort();
    assert_eq!(archived, [on_time, late]);
}
