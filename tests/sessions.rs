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
    let id = |n: u32| ObjectId::parse_str(format!("6500000000000000000{n:05x}")).unwrap();
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
    let links: Vec<Document> = sessions(&scratch)
        .find(doc! {"meetingLink": {"$type": "string"}})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(links.len(), 128);

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
