//! The sessions collection on a real server (`MONGODB_URI`; ignored without it): the data
//! migration "add video call fields" through the real binary — dry run, run in batches, never
//! overwriting, recorded, "already applied", forced, killed half-way and re-run.

mod support;

use std::time::Duration;

use bson::{doc, oid::ObjectId, Bson, Document};
use futures_util::TryStreamExt;
use support::{assert_success, describe, Scratch};

fn sessions(scratch: &Scratch) -> mongodb::Collection<Document> {
    scratch.db.collection("sessions")
}

/// Sessions of every status, with missing, null, present and wrongly typed video-call fields.
fn fixture_sessions() -> Vec<Document> {
    let id = oid;
    let when = bson::DateTime::parse_rfc3339_str("2026-03-01T10:00:00Z").unwrap();
    vec![
        doc! {"_id": id(1), "status": "Pending", "sessionDate": when},
        doc! {"_id": id(2), "status": "Completed", "sessionDate": when, "callDuration": 30, "accessCount": 5},
        doc! {"_id": id(3), "status": "Cancelled", "sessionDate": when, "isVideoCall": false},
        doc! {"_id": id(4), "status": "Confirmed", "sessionDate": when},
        doc! {"_id": id(5), "status": "Confirmed", "sessionDate": when, "isVideoCall": true, "meetingLink": "room-abc"},
        doc! {"_id": id(6), "status": "Confirmed", "sessionDate": when, "isVideoCall": true, "meetingLink": null},
        doc! {"_id": "legacy-7", "status": "Confirmed", "sessionDate": when},
        doc! {"_id": id(8), "status": "In Progress", "sessionDate": when, "lastAccessedAt": "yesterday"},
        doc! {"_id": id(9), "status": "Declined", "sessionDate": when, "isVideoCall": "yes"},
        doc! {"_id": id(10), "sessionDate": when},
    ]
}

async fn get(scratch: &Scratch, id: Bson) -> Document {
    sessions(scratch)
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
        .unwrap()
}

fn oid(n: u32) -> Bson {
    Bson::ObjectId(ObjectId::parse_str(format!("6500000000000000000{n:05x}")).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn the_video_call_fields_migration_is_dry_run_applied_in_batches_recorded_and_not_repeated() {
    let scratch = Scratch::new("sessions").await;
    sessions(&scratch)
        .insert_many(fixture_sessions())
        .await
        .unwrap();
    let bulk: Vec<Document> = (0..250)
        .map(|i| doc! {"status": if i % 2 == 0 { "Confirmed" } else { "Completed" }, "n": i})
        .collect();
    sessions(&scratch).insert_many(bulk).await.unwrap();
    let migrate = ["migrate", "--data", "add-video-call-fields"];

    let dry = scratch
        .vcmetrics(&[&migrate[..], &["--dry-run"]].concat(), &[])
        .await;
    assert_success("dry run", &dry);
    let out = String::from_utf8_lossy(&dry.stdout);
    // Without isVideoCall: 1, 2, 4, "legacy-7", 8, 10 and the 250 bulk ones.
    assert!(
        out.contains("sessions without isVideoCall: 256 would get"),
        "{out}"
    );
    assert!(
        out.contains("callDuration 255, accessCount 255, lastAccessedAt 255"),
        "{out}"
    );
    // Confirmed without a link: 4, 6 and 125 bulk ones; "legacy-7" has no ObjectId.
    assert!(
        out.contains("Confirmed sessions without a meetingLink: 127 would get one"),
        "{out}"
    );
    assert!(
        out.contains("1 more have an _id that is not an ObjectId"),
        "{out}"
    );
    assert_eq!(
        sessions(&scratch)
            .count_documents(doc! {"isVideoCall": {"$exists": true}})
            .await
            .unwrap(),
        4,
        "the dry run wrote nothing"
    );

    let run = scratch
        .vcmetrics(&[&migrate[..], &["--batch-size", "40"]].concat(), &[])
        .await;
    assert_success("migrate --data", &run);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("applied"), "{out}");
    assert!(
        out.contains("sessions without isVideoCall: 256 got"),
        "{out}"
    );
    assert!(
        out.contains("Confirmed sessions without a meetingLink: 127 got one"),
        "{out}"
    );

    let s1 = get(&scratch, oid(1)).await;
    assert_eq!(s1.get_bool("isVideoCall"), Ok(true));
    assert_eq!(s1.get_i32("callDuration"), Ok(0));
    assert_eq!(s1.get_i32("accessCount"), Ok(0));
    assert!(s1.get_datetime("lastAccessedAt").is_ok());
    let s2 = get(&scratch, oid(2)).await;
    assert_eq!(
        (s2.get_i32("callDuration"), s2.get_i32("accessCount")),
        (Ok(30), Ok(5)),
        "never overwritten"
    );
    assert_eq!(
        get(&scratch, oid(3)).await.get_bool("isVideoCall"),
        Ok(false)
    );
    let link = get(&scratch, oid(4))
        .await
        .get_str("meetingLink")
        .unwrap()
        .to_owned();
    assert!(link.starts_with("room-650000000000000000000004-"), "{link}");
    assert!(vcmetrics::sessions::rules::link_is_valid(&link), "{link}");
    assert_eq!(
        get(&scratch, oid(5)).await.get_str("meetingLink"),
        Ok("room-abc")
    );
    assert!(get(&scratch, oid(6)).await.get_str("meetingLink").is_ok());
    assert!(get(&scratch, Bson::String("legacy-7".into()))
        .await
        .get("meetingLink")
        .is_none());
    let s8 = get(&scratch, oid(8)).await;
    assert_eq!(
        s8.get_str("lastAccessedAt"),
        Ok("yesterday"),
        "a wrongly typed field is kept"
    );
    assert!(
        s8.get("meetingLink").is_none(),
        "only Confirmed sessions get a link"
    );
    assert_eq!(
        get(&scratch, oid(9)).await.get_str("isVideoCall"),
        Ok("yes")
    );
    let links = sessions(&scratch)
        .count_documents(doc! {"meetingLink": {"$type": "string"}})
        .await
        .unwrap();
    assert_eq!(links, 128, "127 new links and room-abc:\n{out}");

    let record = scratch
        .state()
        .find_one(doc! {"_id": "migration:add-video-call-fields"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.get_str("state"), Ok("applied"));
    assert_eq!(record.get_str("version"), Ok(env!("CARGO_PKG_VERSION")));
    assert!(record.get_datetime("appliedAt").is_ok());
    assert_eq!(
        record
            .get_document("changed")
            .unwrap()
            .get_i64("meetingLinks"),
        Ok(127)
    );

    let again = scratch.vcmetrics(&migrate, &[]).await;
    assert_success("second run", &again);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already applied"),
        "{}",
        describe(&again)
    );
    let forced = scratch
        .vcmetrics(&[&migrate[..], &["--force"]].concat(), &[])
        .await;
    assert_success("forced run", &forced);
    let out = String::from_utf8_lossy(&forced.stdout);
    assert!(
        out.contains("sessions without isVideoCall: 0 got")
            && out.contains("meetingLink: 0 got one"),
        "{out}"
    );
    scratch.finish().await;
}

/// Killed with SIGKILL half-way and re-run: the re-run finishes the job, nothing is done twice
/// (every session got each field once: the first run's values stay).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn the_migration_killed_half_way_is_finished_by_a_re_run() {
    let scratch = Scratch::new("sessions_kill").await;
    let total = 6000;
    let bulk: Vec<Document> = (0..total)
        .map(|i| doc! {"status": "Confirmed", "n": i})
        .collect();
    sessions(&scratch).insert_many(bulk).await.unwrap();
    let mut child = scratch
        .command(
            &[
                "migrate",
                "--data",
                "add-video-call-fields",
                "--batch-size",
                "50",
            ],
            &[],
        )
        .spawn()
        .unwrap();
    // Kill it once some, not all, sessions are done.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = sessions(&scratch)
            .count_documents(doc! {"isVideoCall": true})
            .await
            .unwrap();
        if done >= 500 {
            child.kill().unwrap();
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "never half-way"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait().unwrap();
    let done_before: Vec<Document> = sessions(&scratch)
        .find(doc! {"isVideoCall": true})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(done_before.len() < total as usize, "killed before the end");
    let record = scratch
        .state()
        .find_one(doc! {"_id": "migration:add-video-call-fields"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.get_str("state"), Ok("started"));

    let rerun = scratch
        .vcmetrics(&["migrate", "--data", "add-video-call-fields"], &[])
        .await;
    assert_success("re-run", &rerun);
    let out = String::from_utf8_lossy(&rerun.stdout);
    assert!(out.contains("did not finish; going on"), "{out}");
    for (field, value) in [
        ("isVideoCall", Bson::Boolean(true)),
        ("callDuration", Bson::Int32(0)),
        ("accessCount", Bson::Int32(0)),
    ] {
        assert_eq!(
            sessions(&scratch)
                .count_documents(doc! {field: value})
                .await
                .unwrap(),
            total as u64,
            "{field}"
        );
    }
    assert_eq!(
        sessions(&scratch)
            .count_documents(doc! {"meetingLink": {"$regex": "^room-[a-f0-9-]+$"}})
            .await
            .unwrap(),
        total as u64
    );
    // What the first run did stays as it did it.
    for before in done_before.iter().take(50) {
        let after = get(&scratch, before.get("_id").unwrap().clone()).await;
        assert_eq!(after.get("lastAccessedAt"), before.get("lastAccessedAt"));
        if let Some(link) = before.get("meetingLink") {
            assert_eq!(after.get("meetingLink"), Some(link));
        }
    }
    scratch.finish().await;
}

/// The session rules, the live gauges and their plans on a real server: fixture sessions of
/// every status and every rule, with missing and wrongly typed fields; `vcmetrics check
/// sessions` (exit 3, ids only) and the gauges a running daemon exports; every gauge filter is
/// planned on an index.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn rules_and_live_gauges_count_what_the_schema_says() {
    let scratch = Scratch::new("session_gauges").await;
    let now = chrono::Utc::now();
    let at = |minutes: i64| bson::DateTime::from_chrono(now + chrono::Duration::minutes(minutes));
    let id = |n: u32| {
        Bson::ObjectId(ObjectId::parse_str(format!("6600000000000000000{n:05x}")).unwrap())
    };
    let hour = 60;
    let day = 24 * hour;
    let fixtures = vec![
        // Active calls: one fresh, one stuck (no videoCallEnded field at all), and not active ones.
        doc! {"_id": id(1), "status": "In Progress", "sessionDate": at(-40), "videoCallStarted": at(-30), "videoCallEnded": null, "isVideoCall": true, "meetingLink": "room-1"},
        doc! {"_id": id(2), "status": "In Progress", "sessionDate": at(-6 * hour), "videoCallStarted": at(-5 * hour), "isVideoCall": true},
        doc! {"_id": id(3), "status": "In Progress", "sessionDate": at(-90), "videoCallStarted": at(-80), "videoCallEnded": at(-10), "callDuration": 70},
        doc! {"_id": id(4), "status": "In Progress", "sessionDate": at(-20), "videoCallStarted": null},
        // Upcoming Confirmed video sessions: 30 min, 3 h, 3 days, 10 days ahead; an hour ago;
        // not video calls.
        doc! {"_id": id(10), "status": "Confirmed", "sessionDate": at(30), "isVideoCall": true, "meetingLink": "room-10"},
        doc! {"_id": id(11), "status": "Confirmed", "sessionDate": at(3 * hour), "isVideoCall": true},
        doc! {"_id": id(12), "status": "Confirmed", "sessionDate": at(3 * day), "isVideoCall": true, "meetingLink": null},
        doc! {"_id": id(13), "status": "Confirmed", "sessionDate": at(10 * day), "isVideoCall": true, "meetingLink": "room-13"},
        doc! {"_id": id(14), "status": "Confirmed", "sessionDate": at(-hour), "isVideoCall": true, "meetingLink": "room-14"},
        doc! {"_id": id(15), "status": "Confirmed", "sessionDate": at(30), "isVideoCall": false},
        doc! {"_id": id(16), "status": "Confirmed", "sessionDate": at(30), "isVideoCall": "yes"},
        // Every other status, an unknown one and none.
        doc! {"_id": id(20), "status": "Pending", "sessionDate": at(-day)},
        doc! {"_id": id(21), "status": "Cancelled", "sessionDate": at(-day)},
        doc! {"_id": id(22), "status": "Declined", "sessionDate": at(-day)},
        doc! {"_id": id(23), "status": "Archived", "sessionDate": at(-day)},
        doc! {"_id": id(24), "sessionDate": at(-day)},
        // The duration rule (45 minutes of call): wrong, right, one minute off, a string, missing,
        // a string end (not a date: the rule does not apply).
        doc! {"_id": id(30), "status": "Completed", "sessionDate": at(-2 * day), "videoCallStarted": at(-2 * day), "videoCallEnded": at(-2 * day + 45), "callDuration": 30},
        doc! {"_id": id(31), "status": "Completed", "sessionDate": at(-2 * day), "videoCallStarted": at(-2 * day), "videoCallEnded": at(-2 * day + 45), "callDuration": 45},
        doc! {"_id": id(32), "status": "Completed", "sessionDate": at(-2 * day), "videoCallStarted": at(-2 * day), "videoCallEnded": at(-2 * day + 45), "callDuration": 46.0},
        doc! {"_id": id(33), "status": "Completed", "sessionDate": at(-2 * day), "videoCallStarted": at(-2 * day), "videoCallEnded": at(-2 * day + 45), "callDuration": "45"},
        doc! {"_id": id(34), "status": "Completed", "sessionDate": at(-2 * day), "videoCallStarted": at(-2 * day), "videoCallEnded": at(-2 * day + 45)},
        doc! {"_id": id(35), "status": "Completed", "sessionDate": at(-2 * day), "videoCallStarted": at(-2 * day), "videoCallEnded": "later", "callDuration": 1},
        // The link rule: right, wrong format, not a string; and a wrong one 30 days ago (outside
        // the daemon's 7 days, inside a wider check).
        doc! {"_id": id(40), "status": "Completed", "sessionDate": at(-3 * day), "meetingLink": "room-650000000000000000000abc-1772359200000"},
        doc! {"_id": id(41), "status": "Completed", "sessionDate": at(-3 * day), "meetingLink": "https://meet.example/abc"},
        doc! {"_id": id(42), "status": "Completed", "sessionDate": at(-3 * day), "meetingLink": 42},
        doc! {"_id": id(43), "status": "Completed", "sessionDate": at(-30 * day), "meetingLink": "ROOM-1"},
        // PCRE's `$` matches before a final newline: the rule must not.
        doc! {"_id": id(44), "status": "Completed", "sessionDate": at(-3 * day), "meetingLink": "room-abc\n"},
        // 44.5 minutes rounds half up to 45 (the schema's Math.round): 46 is within a minute.
        doc! {"_id": id(45), "status": "Completed", "sessionDate": at(-2 * day), "videoCallStarted": at(-2 * day), "videoCallEnded": bson::DateTime::from_millis(at(-2 * day).timestamp_millis() + 2_670_000), "callDuration": 46},
    ];
    sessions(&scratch).insert_many(fixtures).await.unwrap();
    // Enough other sessions that a plan has something to choose between.
    let filler: Vec<Document> = (0..20_000)
        .map(|i| doc! {"status": "Completed", "sessionDate": at(-400 * day + i), "clientId": ObjectId::new()})
        .collect();
    sessions(&scratch).insert_many(filler).await.unwrap();
    scratch.migrate().await;

    let check = scratch
        .vcmetrics(
            &[
                "check", "sessions", "--from", "now-7d", "--to", "now", "--limit", "2",
            ],
            &[],
        )
        .await;
    assert_eq!(check.status.code(), Some(3), "{}", describe(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    // Duration: 30, "45", missing (46 is within a minute of 45, and of 44.5 rounded half up).
    // Link: the URL, the number, the trailing newline.
    // "room-1" and "room-10" have the format ([a-f0-9-] after "room-").
    assert!(out.contains("call_duration: 3 session(s)"), "{out}");
    assert!(out.contains("meeting_link: 3 session(s)"), "{out}");
    assert!(
        out.contains("  66000000000000000000001e\n  660000000000000000000021\n"),
        "the first two, in _id order: {out}"
    );
    assert!(
        !out.contains("660000000000000000000022"),
        "the limit: {out}"
    );
    assert!(
        !out.contains("https://") && !out.contains("sessionDate"),
        "ids only: {out}"
    );
    let wide = scratch
        .vcmetrics(
            &["check", "sessions", "--from", "now-60d", "--to", "now"],
            &[],
        )
        .await;
    assert!(
        String::from_utf8_lossy(&wide.stdout).contains("meeting_link: 4 session(s)"),
        "{}",
        describe(&wide)
    );
    let (later, latest) = (
        (now + chrono::Duration::days(20)).to_rfc3339(),
        (now + chrono::Duration::days(30)).to_rfc3339(),
    );
    let clean = scratch
        .vcmetrics(
            &["check", "sessions", "--from", &later, "--to", &latest],
            &[],
        )
        .await;
    assert_success("a range without violations", &clean);

    let listen = format!("127.0.0.1:{}", support::free_port());
    let daemon = support::Daemon::spawn(
        &["run"],
        &[
            ("MONGODB_URI", scratch.uri.as_str()),
            ("VCMETRICS_DATABASE", scratch.name.as_str()),
            ("VCMETRICS_LISTEN", listen.as_str()),
            ("VCMETRICS_METRICS_REFRESH", "1s"),
            ("VCMETRICS_AUDIT_TTL", "3650d"),
        ],
    );
    daemon
        .eventually(
            "the session gauges are read",
            Duration::from_secs(30),
            async || {
                daemon
                    .metric("vcmetrics_sessions_active_calls", &[])
                    .map(drop)
            },
        )
        .await;
    for (name, labels, expected) in [
        ("vcmetrics_sessions_active_calls", vec![], 2.0),
        ("vcmetrics_sessions_stuck_calls", vec![], 1.0),
        ("vcmetrics_sessions_upcoming", vec![("within", "1h")], 1.0),
        ("vcmetrics_sessions_upcoming", vec![("within", "24h")], 2.0),
        ("vcmetrics_sessions_upcoming", vec![("within", "7d")], 3.0),
        // 11 (missing link), 12 (null link).
        ("vcmetrics_sessions_confirmed_without_link", vec![], 2.0),
        (
            "vcmetrics_sessions_rule_violations",
            vec![("rule", "call_duration")],
            3.0,
        ),
        (
            "vcmetrics_sessions_rule_violations",
            vec![("rule", "meeting_link")],
            3.0,
        ),
        ("vcmetrics_sessions_read_errors_total", vec![], 0.0),
    ] {
        assert_eq!(
            daemon.metric(name, &labels),
            Some(expected),
            "{name} {labels:?}"
        );
    }
    for (status, n) in [
        ("in_progress", 4.0),
        ("confirmed", 7.0),
        ("pending", 1.0),
        ("cancelled", 1.0),
        ("declined", 1.0),
        ("completed", 20_012.0),
        ("other", 2.0),
    ] {
        let labels = [("status", status)];
        let seen = daemon.metric("vcmetrics_sessions_by_status", &labels);
        assert_eq!(seen, Some(n), "sessions by status {status}");
    }
    let (code, _) = daemon.terminate().await;
    assert_eq!(code, Some(0), "{}", daemon.log());

    // Every gauge's filter is planned on an index.
    let queries = vcmetrics::sessions::gauges::GaugeQueries::at(
        now,
        Duration::from_secs(4 * 3600),
        Duration::from_secs(7 * 86_400),
    );
    let rule_ranges: Vec<(String, Document)> = queries
        .rules
        .iter()
        .map(|pipeline| {
            (
                "rule range".to_owned(),
                pipeline[0].get_document("$match").unwrap().clone(),
            )
        })
        .collect();
    let filters: Vec<(String, Document)> = queries
        .filters()
        .into_iter()
        .map(|(n, f)| (n, f.clone()))
        .chain(rule_ranges)
        .collect();
    for (name, filter) in filters {
        let plan = scratch
            .db
            .run_command(doc! {"explain": {"find": "sessions", "filter": filter.clone()}, "verbosity": "queryPlanner"})
            .await
            .unwrap()
            .to_string();
        assert!(
            plan.contains("IXSCAN")
                || plan.contains("Index Scan")
                || plan.contains("Bitmap Index Scan"),
            "{name}: {filter} is not planned on an index:\n{plan}"
        );
        eprintln!("plan of {name}: index");
    }
    scratch.finish().await;
}
