//! The rollup's pipelines in `pipelines/`, compiled into the binary, bound into one chunk's
//! commands (binding itself is `pipeline_files`).
//!
//! This module builds commands; it does no I/O. See `store` for running them.

use bson::{bson, doc, oid::ObjectId, Bson, Document};
use chrono::{DateTime, Utc};

use super::archive_read::{archive_source, read_archive_too};
use super::commands::{AggregateCommand, DeleteCommand, Fence, Target, UpdateCommand};
use crate::archive::state::ArchiveRead;
use crate::pipeline_files::{bind, parse, stages, PipelineError};
use crate::window::{Period, QuantumTable, Window};

/// `pipelines/rollup_counts.json`: the audit log's events of a chunk counted per window, action
/// and error code, one document per window.
pub const COUNTS_PIPELINE: &str = include_str!("../../pipelines/rollup_counts.json");
/// `pipelines/rollup_values.json`: the chunk's `call_end` and `connection_established` events
/// (through the `{action, timestamp}` index) grouped by window, action and the validity of their
/// duration and connection time (counts and sums), one document per window.
pub const VALUES_PIPELINE: &str = include_str!("../../pipelines/rollup_values.json");
/// `pipelines/rollup_users.json`: the distinct users of each window of a chunk, one document per
/// window.
pub const USERS_PIPELINE: &str = include_str!("../../pipelines/rollup_users.json");
/// `pipelines/rollup_finish.json`: the three scans' per-window documents joined with the seeds,
/// shaped into metrics documents and `$merge`d into the metrics collection on `{period, date}`.
pub const FINISH_PIPELINE: &str = include_str!("../../pipelines/rollup_finish.json");
/// `pipelines/seed_window.json`: the upsert that gives every window a document (and keeps its
/// `createdAt`) before the rollup merges into it.
pub const SEED_WINDOW_STATEMENT: &str = include_str!("../../pipelines/seed_window.json");

/// The run's values bound into one chunk's pipelines.
pub(super) struct Bindings {
    from: Bson,
    to: Bson,
    window_starts: Bson,
    window_of_event: Bson,
    period: Bson,
    now: Bson,
    run: Bson,
    metrics_collection: Bson,
}

impl Bindings {
    /// `None` without windows.
    pub(super) fn of(
        target: &Target<'_>,
        period: Period,
        windows: &[Window],
        now: DateTime<Utc>,
        run: ObjectId,
    ) -> Option<Bindings> {
        let (from, to) = (windows.first()?.start, windows.last()?.end);
        Some(Bindings {
            from: date(from),
            to: date(to),
            window_starts: Bson::Array(windows.iter().map(|w| date(w.start)).collect()),
            window_of_event: window_of_event(&QuantumTable::of(windows)?, from),
            period: Bson::String(period.as_str().to_owned()),
            now: date(now),
            run: Bson::ObjectId(run),
            metrics_collection: Bson::String(target.metrics_collection.to_owned()),
        })
    }

    /// What the three scans of the audit log bind.
    pub(super) fn scan(&self) -> Vec<(&'static str, Bson)> {
        vec![
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("windowOfEvent", self.window_of_event.clone()),
            ("run", self.run.clone()),
            ("now", self.now.clone()),
        ]
    }

    /// What the finishing pipeline binds.
    pub(super) fn finish(&self) -> Vec<(&'static str, Bson)> {
        vec![
            ("windowStarts", self.window_starts.clone()),
            ("period", self.period.clone()),
            ("now", self.now.clone()),
            ("metricsCollection", self.metrics_collection.clone()),
        ]
    }
}

/// The expression giving an event's window start from its `timestamp`, for a chunk starting at
/// `from` (the range `$match` keeps the events of `[from, end of the chunk)` only): the cheapest
/// exact one for the chunk's windows, as measured per event on DocumentDB 0.108.
/// - One window: its start, a constant (a monthly chunk's scans took 20% less than with the
///   arithmetic below).
/// - Windows of one quantum each: `timestamp - (timestamp - from) mod quantum`.
/// - Otherwise (months, days across a DST change): the quantum index
///   `floor((timestamp - from) / quantum)` looked up in the bound table, which costs the most.
fn window_of_event(table: &QuantumTable, from: DateTime<Utc>) -> Bson {
    let quantum = Bson::Int64(table.quantum_ms);
    if table.starts.iter().all(|start| *start == from) {
        date(from)
    } else if table.is_uniform() {
        start_of_quantum(from, table.quantum_ms)
    } else {
        let index =
            bson!({"$floor": {"$divide": [{"$subtract": ["$timestamp", date(from)]}, quantum]}});
        let starts: Vec<Bson> = table.starts.iter().map(|t| date(*t)).collect();
        bson!({"$arrayElemAt": [starts, {"$toInt": index}]})
    }
}

/// `timestamp - (timestamp - from) mod quantum`: the start of the event's quantum, counting
/// quanta from `from` (for events at or after `from`).
pub(super) fn start_of_quantum(from: DateTime<Utc>, quantum_ms: i64) -> Bson {
    bson!({"$subtract": ["$timestamp", {"$mod": [{"$subtract": ["$timestamp", date(from)]}, quantum_ms]}]})
}

pub(super) fn date(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_chrono(t))
}

/// The commands of one chunk. A run sends `seed`, then `counts`, `users` and `values` side by
/// side (three scans of the same time range, each on its own connection, so the server's cores
/// work at once), then `finish`, then `cleanup`. `preview` computes the same documents in one
/// read-only aggregate, for dry-run and verify.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkCommands {
    /// Gives every window a document (and keeps its `createdAt`) before the merge.
    pub seed: UpdateCommand,
    /// `rollup_counts.json`, writing one document per window into the staging collection.
    pub counts: AggregateCommand,
    /// `rollup_users.json`, writing one document per window into the staging collection.
    pub users: AggregateCommand,
    /// `rollup_values.json`, writing one document per window into the staging collection.
    pub values: AggregateCommand,
    /// `rollup_finish.json` over the chunk's staged documents, `$merge`d into the metrics.
    pub finish: AggregateCommand,
    /// Removes the chunk's staged documents.
    pub cleanup: DeleteCommand,
    /// `rollup_counts.json`, `$unionWith` `rollup_users.json` and `rollup_values.json`,
    /// `rollup_finish.json` without its `$merge`: the documents a run would merge, written
    /// nowhere.
    pub preview: AggregateCommand,
    /// An archive in another database cannot be `$unionWith`ed: its events of the chunk's range
    /// are first copied into the staging collection (under their own run id, removed by
    /// `cleanup`), and the scans read them there.
    pub bring: Option<AggregateCommand>,
    /// Whether the scans read the archive besides the audit log.
    pub reads_archive: bool,
}

impl ChunkCommands {
    /// The commands in the order a run sends them (the three scans run concurrently, and may
    /// equally run one after the other), as `(database, command)` pairs.
    pub fn in_order(&self) -> Vec<(&str, Document)> {
        let bring = self
            .bring
            .iter()
            .map(|b| (b.database.as_str(), b.to_command()));
        bring
            .chain([
                (self.seed.database.as_str(), self.seed.to_command()),
                (&self.counts.database, self.counts.to_command()),
                (&self.users.database, self.users.to_command()),
                (&self.values.database, self.values.to_command()),
                (&self.finish.database, self.finish.to_command()),
                (&self.cleanup.database, self.cleanup.to_command()),
            ])
            .collect()
    }
}

/// One chunk of a run: its windows, the run's pinned instant, and the commands that compute them.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub period: Period,
    /// Consecutive windows, oldest first; never empty.
    pub windows: Vec<Window>,
    /// The run's pinned "now": `updatedAt`, and `createdAt` of new documents.
    pub now: DateTime<Utc>,
    /// The lease its `$merge` is fenced by (bound into `commands.finish`), if any.
    pub fence: Option<Fence>,
    pub commands: ChunkCommands,
}

impl Chunk {
    /// The chunk of `windows`, under a new run id, reading the archive too when `archive` says
    /// so.
    pub fn new(
        target: &Target<'_>,
        period: Period,
        windows: &[Window],
        now: DateTime<Utc>,
        archive: Option<&ArchiveRead>,
    ) -> Result<Chunk, PipelineError> {
        Ok(Chunk {
            period,
            windows: windows.to_vec(),
            now,
            fence: target.fence.clone(),
            commands: chunk_commands(target, period, windows, now, ObjectId::new(), archive)?,
        })
    }

    /// Whether this chunk's scans read the archive besides the audit log.
    pub fn reads_archive(&self) -> bool {
        self.commands.reads_archive
    }
}

/// Builds the commands for one chunk of windows of one period. `run` tells this chunk's staged
/// documents from those of any other run (another period, a concurrent recompute).
pub fn chunk_commands(
    target: &Target<'_>,
    period: Period,
    windows: &[Window],
    now: DateTime<Utc>,
    run: ObjectId,
    archive: Option<&ArchiveRead>,
) -> Result<ChunkCommands, PipelineError> {
    let bindings =
        Bindings::of(target, period, windows, now, run).ok_or(PipelineError::NoWindows)?;
    let mut counts = stages(
        "pipelines/rollup_counts.json",
        COUNTS_PIPELINE,
        &bindings.scan(),
    )?;
    let mut users = stages(
        "pipelines/rollup_users.json",
        USERS_PIPELINE,
        &bindings.scan(),
    )?;
    let mut values = stages(
        "pipelines/rollup_values.json",
        VALUES_PIPELINE,
        &bindings.scan(),
    )?;
    let mut bring = None;
    let mut cleanup_runs = vec![Bson::ObjectId(run)];
    if let Some(read) = archive {
        let source = archive_source(target, &counts, read, now)?;
        if let Some((command, bring_run)) = source.bring {
            bring = Some(command);
            cleanup_runs.push(Bson::ObjectId(bring_run));
        }
        for scan in [&mut counts, &mut users, &mut values] {
            read_archive_too(scan, read, &source.collection, &source.only)?;
        }
    }
    let finish = stages(
        "pipelines/rollup_finish.json",
        FINISH_PIPELINE,
        &bindings.finish(),
    )?;
    if !finish.last().is_some_and(|s| s.contains_key("$merge")) {
        return Err(PipelineError::Shape {
            file: "pipelines/rollup_finish.json",
            expected: "a pipeline ending in $merge",
        });
    }

    // The staged form: each scan keeps its per-window documents (keyed by run and window) in the
    // staging collection, where `finish` picks up this run's.
    let stage = doc! {"$merge": {
        "into": target.staging_collection,
        "on": "_id",
        "whenMatched": "replace",
        "whenNotMatched": "insert",
    }};
    let staged = |mut pipeline: Vec<Document>| {
        pipeline.push(stage.clone());
        target.aggregate(target.audit_collection, pipeline)
    };
    let this_run = doc! {"_id.r": run};
    let mut staged_finish = vec![doc! {"$match": this_run.clone()}];
    staged_finish.extend(finish[..finish.len() - 1].iter().cloned());
    if let Some(fence) = &target.fence {
        staged_finish.extend(fence.stages(target.state_collection));
    }
    staged_finish.extend(finish.last().cloned());

    // The one-aggregate form: the users and values scans as `$unionWith`s of the counts scan.
    let mut preview = counts.clone();
    for scan in [&users, &values] {
        preview.push(doc! {"$unionWith": {
            "coll": target.audit_collection,
            "pipeline": scan.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
        }});
    }
    preview.extend(finish[..finish.len() - 1].iter().cloned());

    Ok(ChunkCommands {
        seed: seed_command(target, period, windows, now)?,
        counts: staged(counts),
        users: staged(users),
        values: staged(values),
        finish: target.aggregate(target.staging_collection, staged_finish),
        cleanup: DeleteCommand {
            database: target.database.to_owned(),
            collection: target.staging_collection.to_owned(),
            filter: match cleanup_runs.as_slice() {
                [_] => this_run,
                _ => doc! {"_id.r": {"$in": cleanup_runs}},
            },
        },
        preview: target.aggregate(target.audit_collection, preview),
        bring,
        reads_archive: archive.is_some(),
    })
}

/// `pipelines/seed_window.json` once per window: every window gets a document (keeping its
/// `createdAt`) before a finish merges into it.
pub(super) fn seed_command(
    target: &Target<'_>,
    period: Period,
    windows: &[Window],
    now: DateTime<Utc>,
) -> Result<UpdateCommand, PipelineError> {
    let file = "pipelines/seed_window.json";
    let template = parse(file, SEED_WINDOW_STATEMENT)?;
    let updates = windows
        .iter()
        .map(|w| {
            let bound = bind(
                template.clone(),
                file,
                &[
                    ("period", Bson::String(period.as_str().to_owned())),
                    ("windowStart", date(w.start)),
                    ("now", date(now)),
                ],
            )?;
            match bound {
                Bson::Document(d) => Ok(d),
                _ => Err(PipelineError::Shape {
                    file,
                    expected: "an update statement document",
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpdateCommand {
        database: target.database.to_owned(),
        collection: target.metrics_collection.to_owned(),
        updates,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::window::Calendar;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(in crate::rollup) fn target() -> Target<'static> {
        Target {
            database: "app",
            audit_collection: "videocallauditlogs",
            metrics_collection: "videocallmetrics",
            staging_collection: "videocallmetrics_staging",
            partials_collection: "videocallmetrics_partials",
            user_sets_collection: "videocallmetrics_users",
            time_limit: std::time::Duration::from_secs(600),
            archive_database: "app",
            archive_collection: "videocallauditlogs_archive",
            state_collection: "vcmetricsstate",
            fence: None,
        }
    }

    fn run() -> ObjectId {
        ObjectId::parse_str("65f000000000000000000001").unwrap()
    }

    fn commands() -> ChunkCommands {
        let windows = Calendar::default().windows_covering(
            Period::Daily,
            utc("2026-03-01T00:00:00Z"),
            utc("2026-03-03T00:00:00Z"),
        );
        chunk_commands(
            &target(),
            Period::Daily,
            &windows,
            utc("2026-03-10T12:00:00Z"),
            run(),
            None,
        )
        .unwrap()
    }

    fn contains_param(b: &Bson) -> bool {
        match b {
            Bson::Document(d) => d.contains_key("$param") || d.values().any(contains_param),
            Bson::Array(a) => a.iter().any(contains_param),
            _ => false,
        }
    }

    #[test]
    fn binding_leaves_no_parameter_behind() {
        let c = commands();
        for (_, command) in c.in_order() {
            assert!(!contains_param(&Bson::Document(command)));
        }
        assert!(!contains_param(&Bson::Document(c.preview.to_command())));
    }

    #[test]
    fn every_scan_starts_with_an_indexable_timestamp_range_and_stages_by_run_and_window() {
        let c = commands();
        let range = doc! {
            "$gte": bson::DateTime::from_chrono(utc("2026-03-01T00:00:00Z")),
            "$lt": bson::DateTime::from_chrono(utc("2026-03-03T00:00:00Z")),
            // An array holding an in-range date also matches the range; it is no timestamp.
            "$not": {"$type": "array"},
        };
        for (scan, part) in [
            (&c.counts, "counts"),
            (&c.users, "users"),
            (&c.values, "values"),
        ] {
            assert_eq!(scan.collection, "videocallauditlogs");
            let first = scan.pipeline[0].get_document("$match").unwrap();
            assert_eq!(first.get_document("timestamp").unwrap(), &range);
            // One document per window and run: the last group's key.
            let n = scan.pipeline.len();
            let key = scan.pipeline[n - 2]
                .get_document("$group")
                .unwrap()
                .get_document("_id")
                .unwrap();
            assert_eq!(key.get_object_id("r").unwrap(), run());
            assert_eq!(key.get_str("w").unwrap(), "$_id.w");
            assert_eq!(key.get_str("p").unwrap(), part);
            assert_eq!(
                scan.pipeline[n - 1],
                doc! {"$merge": {"into": "videocallmetrics_staging", "on": "_id",
                "whenMatched": "replace", "whenNotMatched": "insert"}}
            );
            assert!(scan.writes());
        }
    }

    #[test]
    fn finish_reads_this_runs_staged_documents_and_merges_on_period_and_date() {
        let c = commands();
        assert_eq!(c.finish.collection, "videocallmetrics_staging");
        assert_eq!(c.finish.pipeline[0], doc! {"$match": {"_id.r": run()}});
        let merge = c
            .finish
            .pipeline
            .last()
            .unwrap()
            .get_document("$merge")
            .unwrap();
        assert_eq!(merge.get_str("into").unwrap(), "videocallmetrics");
        assert_eq!(
            merge.get_array("on").unwrap(),
            &vec![Bson::from("period"), Bson::from("date")]
        );
        // DocumentDB accepts only the string forms of whenMatched.
        assert_eq!(merge.get_str("whenMatched").unwrap(), "merge");
        assert_eq!(
            c.cleanup.to_command(),
            doc! {"delete": "videocallmetrics_staging",
            "deletes": [{"q": {"_id.r": run()}, "limit": 0}]}
        );
    }

    #[test]
    fn the_preview_is_one_read_only_aggregate_of_the_same_stages() {
        let c = commands();
        assert!(!c.preview.writes());
        assert_eq!(c.preview.collection, "videocallauditlogs");
        let counts = &c.counts.pipeline[..c.counts.pipeline.len() - 1];
        let finish = &c.finish.pipeline[1..c.finish.pipeline.len() - 1];
        assert_eq!(&c.preview.pipeline[..counts.len()], counts);
        for (i, scan) in [&c.users, &c.values].into_iter().enumerate() {
            let unstaged = &scan.pipeline[..scan.pipeline.len() - 1];
            assert_eq!(
                c.preview.pipeline[counts.len() + i],
                doc! {"$unionWith": {"coll": "videocallauditlogs",
                "pipeline": unstaged.iter().cloned().map(Bson::Document).collect::<Vec<_>>()}}
            );
        }
        assert_eq!(&c.preview.pipeline[counts.len() + 2..], finish);
    }

    #[test]
    fn every_aggregate_carries_its_time_limit() {
        // No engine default applies (DocumentDB's is 120 s).
        let c = commands();
        for a in [&c.counts, &c.users, &c.values, &c.finish, &c.preview] {
            assert_eq!(a.to_command().get_i64("maxTimeMS"), Ok(600_000));
        }
    }

    fn window_key(scan: &AggregateCommand) -> Bson {
        scan.pipeline[1]
            .get_document("$group")
            .unwrap()
            .get_document("_id")
            .unwrap()
            .get("w")
            .unwrap()
            .clone()
    }

    #[test]
    fn equal_windows_find_their_start_by_arithmetic() {
        let c = commands();
        let from = date(utc("2026-03-01T00:00:00Z"));
        let into_window = bson!({"$mod": [{"$subtract": ["$timestamp", from]}, 86_400_000_i64]});
        for scan in [&c.counts, &c.users, &c.values] {
            assert_eq!(
                window_key(scan),
                bson!({"$subtract": ["$timestamp", into_window.clone()]})
            );
        }
    }

    #[test]
    fn a_single_window_is_a_constant() {
        let calendar = Calendar::new("Europe/Berlin".parse().unwrap(), chrono::Weekday::Mon);
        let windows = calendar.windows_covering(
            Period::Monthly,
            utc("2026-10-01T00:00:00Z"),
            utc("2026-10-02T00:00:00Z"),
        );
        assert_eq!(windows.len(), 1);
        let c = chunk_commands(
            &target(),
            Period::Monthly,
            &windows,
            utc("2026-12-01T00:00:00Z"),
            run(),
            None,
        )
        .unwrap();
        for scan in [&c.counts, &c.users, &c.values] {
            assert_eq!(window_key(scan), date(utc("2026-09-30T22:00:00Z")));
        }
    }

    #[test]
    fn unequal_windows_find_their_start_in_the_bound_quantum_table() {
        // Berlin's 2026-10-25 has 25 hours: the quantum is an hour, 24 + 25 entries.
        let calendar = Calendar::new("Europe/Berlin".parse().unwrap(), chrono::Weekday::Mon);
        let windows = calendar.windows_covering(
            Period::Daily,
            utc("2026-10-23T22:00:00Z"),
            utc("2026-10-25T23:00:00Z"),
        );
        let c = chunk_commands(
            &target(),
            Period::Daily,
            &windows,
            utc("2026-11-01T00:00:00Z"),
            run(),
            None,
        )
        .unwrap();
        for scan in [&c.counts, &c.users, &c.values] {
            let key = window_key(scan);
            let lookup = key
                .as_document()
                .unwrap()
                .get_array("$arrayElemAt")
                .unwrap();
            let table = lookup[0].as_array().unwrap();
            assert_eq!(table.len(), 49);
            assert_eq!(table[23], date(utc("2026-10-23T22:00:00Z")));
            assert_eq!(table[24], date(utc("2026-10-24T22:00:00Z")));
            assert_eq!(table[48], date(utc("2026-10-24T22:00:00Z")));
            let divide = lookup[1]
                .as_document()
                .and_then(|d| d.get_document("$toInt").ok())
                .and_then(|d| d.get_document("$floor").ok())
                .and_then(|d| d.get_array("$divide").ok())
                .unwrap();
            assert_eq!(divide[1], Bson::Int64(3_600_000));
        }
    }

    #[test]
    fn one_seed_upsert_per_window_setting_only_created_at() {
        let c = commands();
        assert_eq!(c.seed.updates.len(), 2);
        assert_eq!(
            c.seed.updates[1],
            doc! {
                "q": {"period": "daily", "date": bson::DateTime::from_chrono(utc("2026-03-02T00:00:00Z"))},
                "u": {"$setOnInsert": {"createdAt": bson::DateTime::from_chrono(utc("2026-03-10T12:00:00Z"))}},
                "upsert": true,
            }
        );
    }

    #[test]
    fn a_chunk_without_windows_is_an_error() {
        let err = chunk_commands(
            &target(),
            Period::Daily,
            &[],
            utc("2026-03-10T12:00:00Z"),
            run(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, PipelineError::NoWindows));
    }

    #[test]
    fn pipelines_use_no_server_clock_or_server_time_zone() {
        // `$$NOW` is rejected by DocumentDB before `$merge`, and `$dateTrunc`/`$dateToParts` would
        // let the server decide windows: the window arithmetic lives in `window` only.
        for text in [
            COUNTS_PIPELINE,
            USERS_PIPELINE,
            VALUES_PIPELINE,
            FINISH_PIPELINE,
            SEED_WINDOW_STATEMENT,
        ] {
            for banned in [
                "$$NOW",
                "$dateTrunc",
                "$dateToParts",
                "$dateToString",
                "timezone",
            ] {
                assert!(!text.contains(banned), "{banned} in a pipeline file");
            }
        }
    }

    #[test]
    fn an_unknown_or_unused_parameter_is_an_error() {
        let template = parse("t.json", r#"{"a": {"$param": "nope"}}"#).unwrap();
        let err = bind(template, "t.json", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.json uses parameter \"nope\", which the daemon does not bind"
        );
        let template = parse("t.json", r#"{"a": 1}"#).unwrap();
        let err = bind(template, "t.json", &[("now", Bson::Null)]).unwrap_err();
        assert_eq!(err.to_string(), "t.json never uses parameter \"now\"");
    }

    fn commands_reading(target: &Target<'_>, read: &ArchiveRead) -> ChunkCommands {
        let windows = Calendar::default().windows_covering(
            Period::Daily,
            utc("2026-03-01T00:00:00Z"),
            utc("2026-03-03T00:00:00Z"),
        );
        chunk_commands(
            target,
            Period::Daily,
            &windows,
            utc("2026-03-10T12:00:00Z"),
            run(),
            Some(read),
        )
        .unwrap()
    }

    #[test]
    fn a_chunk_reading_the_archive_unions_it_on_the_same_match_and_counts_a_moving_batch_once() {
        let plain = commands();
        assert!(!plain.reads_archive);
        let read = ArchiveRead {
            except_audit: vec![Bson::Int32(7)],
            except_archive: vec![Bson::Int32(8)],
        };
        let c = commands_reading(&target(), &read);
        assert!(c.reads_archive && c.bring.is_none());
        for (scan, plain_scan) in [
            (&c.counts, &plain.counts),
            (&c.users, &plain.users),
            (&c.values, &plain.values),
        ] {
            let plain_match = plain_scan.pipeline[0].get_document("$match").unwrap();
            let mut audit_side = plain_match.clone();
            audit_side.insert("_id", doc! {"$nin": [7]});
            assert_eq!(scan.pipeline[0], doc! {"$match": audit_side});
            let mut archive_side = plain_match.clone();
            archive_side.insert("_id", doc! {"$nin": [8]});
            assert_eq!(
                scan.pipeline[1],
                doc! {"$unionWith": {"coll": "videocallauditlogs_archive",
                "pipeline": [{"$match": archive_side}]}}
            );
            assert_eq!(&scan.pipeline[2..], &plain_scan.pipeline[1..]);
        }
        // Nothing moving: the same match on both sides.
        let c = commands_reading(&target(), &ArchiveRead::default());
        let first = c.counts.pipeline[0].get_document("$match").unwrap();
        assert_eq!(
            first,
            plain.counts.pipeline[0].get_document("$match").unwrap()
        );
        let union = c.counts.pipeline[1].get_document("$unionWith").unwrap();
        assert_eq!(
            union.get_array("pipeline").unwrap()[0],
            Bson::Document(doc! {"$match": first.clone()})
        );
        assert_eq!(c.cleanup, plain.cleanup);
    }

    #[test]
    fn an_archive_in_another_database_is_copied_into_staging_first_and_cleaned_up() {
        let mut other = target();
        other.archive_database = "cold";
        let read = ArchiveRead {
            except_audit: Vec::new(),
            except_archive: vec![Bson::Int32(8)],
        };
        let c = commands_reading(&other, &read);
        let bring = c.bring.as_ref().unwrap();
        assert_eq!(
            (bring.database.as_str(), bring.collection.as_str()),
            ("cold", "videocallauditlogs_archive")
        );
        let wanted = bring.pipeline[0].get_document("$match").unwrap();
        assert_eq!(wanted.get_document("_id").unwrap(), &doc! {"$nin": [8]});
        assert_eq!(
            wanted.get("timestamp"),
            c.counts.pipeline[0]
                .get_document("$match")
                .unwrap()
                .get("timestamp")
        );
        let bring_run = bring.pipeline[1]
            .get_document("$set")
            .unwrap()
            .get_document("_id")
            .unwrap()
            .get_object_id("r")
            .unwrap();
        assert_eq!(
            bring.pipeline[2]
                .get_document("$merge")
                .unwrap()
                .get_document("into")
                .unwrap(),
            &doc! {"db": "app", "coll": "videocallmetrics_staging"}
        );
        for scan in [&c.counts, &c.users, &c.values] {
            let union = scan.pipeline[1].get_document("$unionWith").unwrap();
            assert_eq!(union.get_str("coll").unwrap(), "videocallmetrics_staging");
            let Bson::Document(stage) = &union.get_array("pipeline").unwrap()[0] else {
                panic!("a $match stage")
            };
            let archive_side = stage.get_document("$match").unwrap();
            assert_eq!(archive_side.get_object_id("_id.r").unwrap(), bring_run);
        }
        assert_eq!(
            c.cleanup.filter,
            doc! {"_id.r": {"$in": [run(), bring_run]}}
        );
        let order: Vec<&str> = c.in_order().iter().map(|(db, _)| *db).collect();
        assert_eq!(order, ["cold", "app", "app", "app", "app", "app", "app"]);
    }

    #[test]
    fn a_fenced_finish_checks_the_lease_right_before_its_merge() {
        let mut fenced = target();
        fenced.fence = Some(Fence {
            holder: "replica-a".into(),
            epoch: 7,
        });
        let c = chunk_commands(
            &fenced,
            Period::Daily,
            &Calendar::default().windows_covering(
                Period::Daily,
                utc("2026-03-01T00:00:00Z"),
                utc("2026-03-03T00:00:00Z"),
            ),
            utc("2026-03-10T12:00:00Z"),
            run(),
            None,
        )
        .unwrap();
        let stages = &c.finish.pipeline;
        let merge = stages.len() - 1;
        assert!(stages[merge].contains_key("$merge"));
        let lookup = stages[merge - 3].get_document("$lookup").unwrap();
        assert_eq!(lookup.get_str("from").unwrap(), "vcmetricsstate");
        let check = &lookup.get_array("pipeline").unwrap()[0];
        assert_eq!(
            check.as_document().unwrap().get_document("$match").unwrap(),
            &doc! {"_id": "leader", "holder": "replica-a", "epoch": 7_i64}
        );
        assert!(stages[merge - 2].contains_key("$match"));
        assert!(stages[merge - 1].contains_key("$unset"));
        // The command line's runs and every preview are not fenced.
        assert!(!commands()
            .finish
            .pipeline
            .iter()
            .any(|s| s.contains_key("$lookup")));
        assert!(!c.preview.pipeline.iter().any(|s| s.contains_key("$lookup")));
    }
}
