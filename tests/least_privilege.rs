//! #14 item 9: the documented least-privilege roles (`vcmetrics roles`, `store::privileges`) cover
//! every command vcmetrics sends, on a real server (`MONGODB_URI`; ignored without it).
//!
//! Every command of `migrate` (with `--update-ttl`, and the data migration dry and for real) and
//! of the daemon's work — a run of every
//! period through the real `Daemon`, the call-metrics refresh, a recompute and a verify of a
//! closed range, the session gauges and a rule check, the retention horizon, the lease's release
//! at shutdown — is recorded by the
//! driver's command monitor, turned into the privilege actions MongoDB checks for it (its
//! "Privilege Actions" reference), and each must be granted by the role. The daemon role must
//! also be minimal: every action it grants was needed.
//!
//! Where the server has `createRole` (MongoDB), the daemon's work then runs again as a user that
//! holds only the daemon role. DocumentDB 0.108 has no `createRole`; there the command check
//! stands alone and the test says so.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bson::{doc, Bson, Document};
use chrono::{DurationRound, Utc};
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::{ClientOptions, Credential};
use support::{calls_per_hour, hours, Scratch, IDLE};
use tokio::sync::{mpsc, watch};
use vcmetrics::archive::retention::retention_horizon;
use vcmetrics::archive::storage::ArchiveStore;
use vcmetrics::clock::SystemClock;
use vcmetrics::config::{from_toml, Config};
use vcmetrics::daemon::status::Status;
use vcmetrics::daemon::Daemon;
use vcmetrics::exporter::call_metrics_cache::{refresh, refresh_sessions, CallMetricsCache};
use vcmetrics::exporter::session_metrics::SessionMetricsCache;
use vcmetrics::rollup::{plan_range, process, Batch, Mode};
use vcmetrics::sessions::rules::SessionRule;
use vcmetrics::store::privileges::{daemon_role, migrate_role, Role};
use vcmetrics::store::{MongoStore, ServerStore};
use vcmetrics::window::Period;

/// Every command a client started: (database, command document).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(String, Document)>>>);

impl Recorder {
    fn take(&self) -> Vec<(String, Document)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn store(config: &Config, credential: Option<Credential>) -> (MongoStore, Recorder) {
    let recorder = Recorder::default();
    let mut options = ClientOptions::parse(&config.mongodb_uri).await.unwrap();
    if credential.is_some() {
        options.credential = credential;
    }
    let sink = recorder.0.clone();
    options.command_event_handler = Some(EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = event {
            sink.lock().unwrap().push((started.db, started.command));
        }
    }));
    (MongoStore::with_options(config, options).unwrap(), recorder)
}

/// The (collection, action) pairs MongoDB checks for one command; commands that need no
/// privilege on a collection give none. An unknown command fails the test: map it first.
fn required(command: &Document) -> Vec<(String, &'static str)> {
    let (name, target) = command.iter().next().unwrap();
    let target = target.as_str().unwrap_or_default().to_owned();
    let on = |actions: &[&'static str]| -> Vec<(String, &'static str)> {
        actions.iter().map(|a| (target.clone(), *a)).collect()
    };
    match name.as_str() {
        "ping" | "hello" | "isMaster" | "ismaster" | "buildInfo" | "endSessions"
        | "killCursors" | "getMore" | "saslStart" | "saslContinue" => Vec::new(),
        "find" | "count" | "distinct" => on(&["find"]),
        "insert" => on(&["insert"]),
        "delete" => on(&["remove"]),
        "update" => {
            let upsert = command
                .get_array("updates")
                .unwrap()
                .iter()
                .any(|u| u.as_document().unwrap().get_bool("upsert") == Ok(true));
            on(if upsert {
                &["update", "insert"]
            } else {
                &["update"]
            })
        }
        "findAndModify" => {
            let mut actions = vec!["find"];
            if command.get_bool("remove") == Ok(true) {
                actions.push("remove");
            } else {
                actions.push("update");
            }
            if command.get_bool("upsert") == Ok(true) {
                actions.push("insert");
            }
            on(&actions)
        }
        "create" => on(&["createCollection"]),
        "createIndexes" => on(&["createIndex"]),
        "listIndexes" => on(&["listIndexes"]),
        // A database action: its resource is the database (collection "").
        "listCollections" => vec![(String::new(), "listCollections")],
        "collMod" => on(&["collMod"]),
        "aggregate" => {
            let mut out = on(&["find"]);
            pipeline_actions(command.get_array("pipeline").unwrap(), &mut out);
            out
        }
        other => panic!("no privilege mapping for the {other} command: add it to required()"),
    }
}

fn pipeline_actions(pipeline: &[Bson], out: &mut Vec<(String, &'static str)>) {
    for stage in pipeline {
        let (name, spec) = stage.as_document().unwrap().iter().next().unwrap();
        match (name.as_str(), spec) {
            ("$merge", Bson::Document(merge)) => {
                let into = match merge.get("into").unwrap() {
                    Bson::String(c) => c.clone(),
                    Bson::Document(d) => d.get_str("coll").unwrap().to_owned(),
                    other => panic!("$merge into {other}"),
                };
                out.push((into.clone(), "insert"));
                out.push((into, "update"));
            }
            ("$merge", Bson::String(into)) => {
                out.push((into.clone(), "insert"));
                out.push((into.clone(), "update"));
            }
            ("$unionWith", Bson::String(coll)) => out.push((coll.clone(), "find")),
            ("$unionWith", Bson::Document(u)) => {
                out.push((u.get_str("coll").unwrap().to_owned(), "find"));
                if let Ok(inner) = u.get_array("pipeline") {
                    pipeline_actions(inner, out);
                }
            }
            ("$lookup", Bson::Document(l)) => {
                out.push((l.get_str("from").unwrap().to_owned(), "find"));
                if let Ok(inner) = l.get_array("pipeline") {
                    pipeline_actions(inner, out);
                }
            }
            ("$out", _) => panic!("vcmetrics never uses $out"),
            _ => {}
        }
    }
}

/// Every command was sent to the configured database and is granted by `role`; returns the
/// (collection, action) pairs used.
fn check(
    role: &Role,
    database: &str,
    commands: &[(String, Document)],
) -> BTreeSet<(String, String)> {
    let mut used = BTreeSet::new();
    for (db, command) in commands {
        let needs = required(command);
        if !needs.is_empty() {
            assert_eq!(db, database, "{command}");
        }
        for (collection, action) in needs {
            assert!(
                role.allows(&collection, action),
                "{} lacks {action} on {collection}, needed by {command}",
                role.name
            );
            used.insert((collection, action.to_owned()));
        }
    }
    used
}

/// The daemon's work: a run of every period, the call-metrics refresh, recompute and verify of
/// the closed hours, the retention horizon, shutdown (the lease's release).
async fn daemon_work(store: MongoStore, config: &Config) {
    let store = Arc::new(store);
    let config = Arc::new(config.clone());
    let status = Arc::new(Status::new().unwrap());
    let (ticks, ticks_rx) = mpsc::channel(8);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut finished = status.subscribe_runs_finished();
    let daemon = Daemon::new(store.clone(), config.clone(), SystemClock, status.clone());
    let handle = tokio::spawn(daemon.run(ticks_rx, shutdown_rx));
    // Ticks before the lease is held would be skipped (standby).
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !status.is_leader() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the daemon takes the lease");
    for period in Period::ALL {
        ticks.send(period).await.unwrap();
    }
    tokio::time::timeout(std::time::Duration::from_secs(300), async {
        while *finished.borrow_and_update() < 4 {
            finished.changed().await.unwrap();
        }
    })
    .await
    .expect("four runs finish");
    for period in Period::ALL {
        assert!(
            status.watermark(period).is_some(),
            "{period}: no watermark after its run"
        );
    }

    // The setup check (`daemon::setup`), which the daemon runs as soon as MongoDB answers: called
    // here too, so that the recording has it whatever the timing.
    let absent = store
        .absent_indexes(&vcmetrics::store::indexes::needed_by_runs(&config))
        .await
        .unwrap();
    assert!(absent.is_empty(), "migrate created them: {absent:?}");

    let cache = CallMetricsCache::default();
    refresh(&*store, &config, &SystemClock, &cache)
        .await
        .unwrap();
    let sessions = SessionMetricsCache::new().unwrap();
    refresh_sessions(&*store, &config, &SystemClock, &sessions)
        .await
        .unwrap();
    let now = Utc::now();
    store
        .session_rule_violations(
            SessionRule::CallDuration,
            now - chrono::Duration::days(7),
            now,
            5,
        )
        .await
        .unwrap();
    // The archive (scheduled in this configuration): a run over the events older than 4 hours,
    // what the CLI and the gauges read; the rollup below then reads the archive too.
    vcmetrics::archive::archive(
        &*store,
        &config,
        &SystemClock,
        "roles-test",
        now - chrono::Duration::hours(4),
        || false,
        |_| {},
    )
    .await
    .unwrap();
    store.archivable_span(now, None).await.unwrap();
    store.archive_span().await.unwrap();
    store.oldest_audit_event().await.unwrap();
    retention_horizon(&*store, &config, now).await.unwrap();
    let plan = plan_range(
        &config,
        Period::Hourly,
        now - chrono::Duration::hours(6),
        now,
        now,
    );
    for mode in [Mode::Write, Mode::Preview] {
        let batch = Batch {
            period: Period::Hourly,
            windows: &plan.windows,
            now,
            mode,
            chunk_windows: 4,
            fence: None,
        };
        process(&*store, &config, batch, |_| {}).await.unwrap();
    }
    shutdown.send(true).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs MONGODB_URI"]
async fn item_9_every_command_of_the_daemon_and_of_migrate_is_granted_by_its_role() {
    let scratch = Scratch::new("roles").await;
    let now = Utc::now();
    let start = now.duration_trunc(chrono::Duration::hours(1)).unwrap() - hours(8);
    let toml_text = format!(
        "mongodb_uri = {:?}\ndatabase = {:?}\nstart_from = \"{}\"\naudit_ttl = \"3650d\"\n\
         instance_id = \"roles-test\"\n[periods.hourly]\nschedule = \"{IDLE}\"\n\
         [periods.daily]\nschedule = \"{IDLE}\"\n[periods.weekly]\nschedule = \"{IDLE}\"\n\
         [periods.monthly]\nschedule = \"{IDLE}\"\n[archive]\nschedule = \"{IDLE}\"\n",
        scratch.uri,
        scratch.name,
        start.to_rfc3339()
    );
    let config = from_toml(&toml_text, &[]).unwrap();
    let database = scratch.name.as_str();

    // migrate, then migrate --update-ttl after the TTL changed (collMod).
    let (migrator, recorded) = store(&config, None).await;
    vcmetrics::cli::migrate::migrate(&migrator, &config, &Default::default(), &mut |_| {})
        .await
        .unwrap();
    let shorter = from_toml(&toml_text.replace("3650d", "3000d"), &[]).unwrap();
    vcmetrics::cli::migrate::migrate(
        &migrator,
        &shorter,
        &vcmetrics::cli::migrate::Args {
            update_ttl: true,
            ..Default::default()
        },
        &mut |_| {},
    )
    .await
    .unwrap();
    // The data migration, on a few sessions: dry run, then run.
    scratch
        .db
        .collection::<Document>(&config.sessions_collection)
        .insert_many([
            doc! {"status": "Confirmed"},
            doc! {"status": "Pending", "isVideoCall": true},
        ])
        .await
        .unwrap();
    for dry_run in [true, false] {
        let args = vcmetrics::cli::migrate::Args {
            data: Some("add-video-call-fields".into()),
            dry_run,
            batch_size: 1,
            ..Default::default()
        };
        vcmetrics::cli::migrate::migrate_data(&migrator, &args)
            .await
            .unwrap();
    }
    let used = check(&migrate_role(&config), database, &recorded.take());
    assert!(used.contains(&(config.audit_collection.clone(), "collMod".to_owned())));
    assert!(used.contains(&(config.sessions_collection.clone(), "update".to_owned())));

    // Written at their own time (their `_id`s), as a live platform writes them: the late-event
    // marks the runs set are past them, so the archive below moves them.
    let written_at_their_time =
        calls_per_hour(start, now, 12)
            .into_iter()
            .enumerate()
            .map(|(i, mut call)| {
                let at = call.get_datetime("timestamp").unwrap().to_chrono();
                let mut id = vcmetrics::rollup::late_scan::object_id_at(at).bytes();
                id[8..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
                call.insert("_id", bson::oid::ObjectId::from_bytes(id));
                call
            });
    scratch
        .audit()
        .insert_many(written_at_their_time)
        .await
        .unwrap();

    let (daemon_store, recorded) = store(&config, None).await;
    daemon_work(daemon_store, &config).await;
    let role = daemon_role(&config);
    let used = check(&role, database, &recorded.take());
    let granted: BTreeSet<(String, String)> = role
        .privileges
        .iter()
        .flat_map(|p| {
            p.actions
                .iter()
                .map(|a| (p.collection.clone(), (*a).to_owned()))
        })
        .collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "the daemon role grants more than it needs: {unused:?}"
    );

    // As a user holding only the daemon role, where the server can create one.
    match scratch.db.run_command(role.create_command(database)).await {
        Err(e) if is_not_supported(&e) => eprintln!(
            "item 9: this server has no createRole ({e}); the roles were checked against the \
             recorded commands only"
        ),
        Err(e) => panic!("createRole: {e}"),
        Ok(_) => {
            let password = format!("pw-{}", std::process::id());
            scratch
                .db
                .run_command(doc! {"createUser": "vcmetrics-roles-test", "pwd": &password, "roles": [role.name]})
                .await
                .unwrap();
            let credential = Credential::builder()
                .username("vcmetrics-roles-test".to_owned())
                .password(password)
                .source(database.to_owned())
                .build();
            let (restricted, _) = store(&config, Some(credential)).await;
            daemon_work(restricted, &config).await;
            scratch
                .db
                .run_command(doc! {"dropAllUsersFromDatabase": 1})
                .await
                .unwrap();
            scratch
                .db
                .run_command(doc! {"dropAllRolesFromDatabase": 1})
                .await
                .unwrap();
        }
    }
    scratch.finish().await;
}

fn is_not_supported(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        mongodb::error::ErrorKind::Command(c) if c.code == 115 || c.code == 59
    )
}
