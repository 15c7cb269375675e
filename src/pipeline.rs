//! The aggregation pipelines in `pipelines/`, compiled into the binary, and their parameters.
//!
//! A pipeline file is MongoDB Extended JSON in which a value of the form `{"$param": "name"}` is
//! a named parameter. Binding replaces every such value with the run's value and refuses a file
//! that names a parameter the daemon does not provide (or leaves one unused), so a typo in a
//! pipeline is an error in a unit test, not a silently empty match on the server.
//!
//! This module builds commands; it does no I/O. See `store` for running them.

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};

use crate::window::{Period, QuantumTable, Window};

/// `pipelines/rollup.json`: one aggregate over the audit log per period per chunk of windows,
/// ending in `$merge` into the metrics collection on `{period, date}`.
pub const ROLLUP_PIPELINE: &str = include_str!("../pipelines/rollup.json");
/// `pipelines/seed_window.json`: the upsert that gives every window a document (and keeps its
/// `createdAt`) before the rollup merges into it.
pub const SEED_WINDOW_STATEMENT: &str = include_str!("../pipelines/seed_window.json");

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{file} is not valid Extended JSON: {reason}")]
    Parse { file: &'static str, reason: String },
    #[error("{file} uses parameter {name:?}, which the daemon does not bind")]
    UnknownParam { file: &'static str, name: String },
    #[error("{file} never uses parameter {name:?}")]
    UnusedParam { file: &'static str, name: String },
    #[error("a chunk needs at least one window")]
    NoWindows,
    #[error("{file} must be {expected}")]
    Shape {
        file: &'static str,
        expected: &'static str,
    },
}

/// What a run binds into the pipelines for one chunk of windows of one period.
#[derive(Debug, Clone)]
pub struct ChunkParams<'a> {
    pub period: Period,
    /// Consecutive windows, oldest first; never empty.
    pub windows: &'a [Window],
    /// The run's pinned "now": `updatedAt`, and `createdAt` of new documents.
    pub now: DateTime<Utc>,
    pub audit_collection: &'a str,
    pub metrics_collection: &'a str,
}

impl ChunkParams<'_> {
    fn window_starts(&self) -> Bson {
        Bson::Array(self.windows.iter().map(|w| date(w.start)).collect())
    }

    /// The bindings of `pipelines/rollup.json`; `None` without windows.
    fn rollup_bindings(&self) -> Option<Vec<(&'static str, Bson)>> {
        let (from, to) = (self.windows.first()?.start, self.windows.last()?.end);
        let table = QuantumTable::of(self.windows)?;
        Some(vec![
            ("from", date(from)),
            ("to", date(to)),
            ("windowStarts", self.window_starts()),
            (
                "quantumWindows",
                Bson::Array(table.starts.into_iter().map(date).collect()),
            ),
            ("quantumMs", Bson::Int64(table.quantum_ms)),
            ("period", Bson::String(self.period.as_str().to_owned())),
            ("now", date(self.now)),
            (
                "auditCollection",
                Bson::String(self.audit_collection.to_owned()),
            ),
            (
                "metricsCollection",
                Bson::String(self.metrics_collection.to_owned()),
            ),
        ])
    }
}

fn date(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_chrono(t))
}

/// An `aggregate` command, as sent to the server.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateCommand {
    pub database: String,
    pub collection: String,
    pub pipeline: Vec<Document>,
    /// Sent as `maxTimeMS`: the server stops the command there.
    pub time_limit: std::time::Duration,
}

impl AggregateCommand {
    /// True when the pipeline ends in `$merge` (it writes); false for a preview that returns the
    /// documents it would write.
    pub fn writes(&self) -> bool {
        self.pipeline
            .last()
            .is_some_and(|stage| stage.contains_key("$merge"))
    }

    /// The same command without its final `$merge`: it returns the documents the run would merge,
    /// and writes nothing (dry-run and verify).
    pub fn preview(&self) -> AggregateCommand {
        let mut preview = self.clone();
        if preview.writes() {
            preview.pipeline.pop();
        }
        preview
    }

    /// The command document, runnable in mongosh with `db.getSiblingDB(database).runCommand(...)`.
    pub fn to_command(&self) -> Document {
        doc! {
            "aggregate": &self.collection,
            "pipeline": self.pipeline.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
            "allowDiskUse": true,
            "cursor": {},
            "maxTimeMS": i64::try_from(self.time_limit.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// An `update` command made of upsert statements.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateCommand {
    pub database: String,
    pub collection: String,
    pub updates: Vec<Document>,
}

impl UpdateCommand {
    pub fn to_command(&self) -> Document {
        doc! {
            "update": &self.collection,
            "updates": self.updates.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
            "ordered": false,
        }
    }
}

/// The commands of one chunk, in the order a run sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkCommands {
    pub seed: UpdateCommand,
    pub rollup: AggregateCommand,
}

/// Where the commands go: database and collection names from the configuration.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub database: &'a str,
    pub audit_collection: &'a str,
    pub metrics_collection: &'a str,
    /// Every aggregate's `maxTimeMS` (`aggregate_timeout`).
    pub time_limit: std::time::Duration,
}

impl<'a> Target<'a> {
    /// The configured database, collections and time limit.
    pub fn of(config: &'a crate::config::Config) -> Self {
        Target {
            database: &config.database,
            audit_collection: &config.audit_collection,
            metrics_collection: &config.metrics_collection,
            time_limit: config.aggregate_timeout,
        }
    }
}

/// Builds the commands for one chunk of windows of one period.
pub fn chunk_commands(
    target: &Target<'_>,
    period: Period,
    windows: &[Window],
    now: DateTime<Utc>,
) -> Result<ChunkCommands, PipelineError> {
    let params = ChunkParams {
        period,
        windows,
        now,
        audit_collection: target.audit_collection,
        metrics_collection: target.metrics_collection,
    };
    let bindings = params.rollup_bindings().ok_or(PipelineError::NoWindows)?;
    let rollup = bind(
        parse("pipelines/rollup.json", ROLLUP_PIPELINE)?,
        "pipelines/rollup.json",
        &bindings,
    )?;
    let Bson::Array(stages) = rollup else {
        return Err(PipelineError::Shape {
            file: "pipelines/rollup.json",
            expected: "an array of stages",
        });
    };
    let pipeline = stages
        .into_iter()
        .map(|stage| match stage {
            Bson::Document(d) => Ok(d),
            _ => Err(PipelineError::Shape {
                file: "pipelines/rollup.json",
                expected: "an array of stage documents",
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let seed_template = parse("pipelines/seed_window.json", SEED_WINDOW_STATEMENT)?;
    let updates = windows
        .iter()
        .map(|w| {
            let bound = bind(
                seed_template.clone(),
                "pipelines/seed_window.json",
                &[
                    ("period", Bson::String(period.as_str().to_owned())),
                    ("windowStart", date(w.start)),
                    ("now", date(now)),
                ],
            )?;
            match bound {
                Bson::Document(d) => Ok(d),
                _ => Err(PipelineError::Shape {
                    file: "pipelines/seed_window.json",
                    expected: "an update statement document",
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(ChunkCommands {
        seed: UpdateCommand {
            database: target.database.to_owned(),
            collection: target.metrics_collection.to_owned(),
            updates,
        },
        rollup: AggregateCommand {
            database: target.database.to_owned(),
            collection: target.audit_collection.to_owned(),
            pipeline,
            time_limit: target.time_limit,
        },
    })
}

/// Parses a pipeline file's Extended JSON into BSON, placeholders and all.
fn parse(file: &'static str, text: &str) -> Result<Bson, PipelineError> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| PipelineError::Parse {
        file,
        reason: e.to_string(),
    })?;
    Bson::try_from(json).map_err(|e| PipelineError::Parse {
        file,
        reason: e.to_string(),
    })
}

/// Replaces every `{"$param": name}` in `template`; every binding must be used.
fn bind(
    template: Bson,
    file: &'static str,
    bindings: &[(&'static str, Bson)],
) -> Result<Bson, PipelineError> {
    let mut used = vec![false; bindings.len()];
    let bound = substitute(template, file, bindings, &mut used)?;
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(PipelineError::UnusedParam {
            file,
            name: bindings[i].0.to_owned(),
        });
    }
    Ok(bound)
}

fn substitute(
    value: Bson,
    file: &'static str,
    bindings: &[(&'static str, Bson)],
    used: &mut [bool],
) -> Result<Bson, PipelineError> {
    match value {
        Bson::Document(d) => {
            if d.len() == 1 {
                if let Some(Bson::String(name)) = d.get("$param") {
                    let i = bindings
                        .iter()
                        .position(|(n, _)| n == name)
                        .ok_or_else(|| PipelineError::UnknownParam {
                            file,
                            name: name.clone(),
                        })?;
                    used[i] = true;
                    return Ok(bindings[i].1.clone());
                }
            }
            let mut out = Document::new();
            for (k, v) in d {
                out.insert(k, substitute(v, file, bindings, used)?);
            }
            Ok(Bson::Document(out))
        }
        Bson::Array(items) => items
            .into_iter()
            .map(|v| substitute(v, file, bindings, used))
            .collect::<Result<Vec<_>, _>>()
            .map(Bson::Array),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Calendar;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn target() -> Target<'static> {
        Target {
            database: "app",
            audit_collection: "videocallauditlogs",
            metrics_collection: "videocallmetrics",
            time_limit: std::time::Duration::from_secs(600),
        }
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
        let command = Bson::Document(c.rollup.to_command());
        assert!(!contains_param(&command));
        assert!(!contains_param(&Bson::Document(c.seed.to_command())));
    }

    #[test]
    fn the_first_stage_is_an_indexable_timestamp_range_and_the_last_merges_on_period_and_date() {
        let c = commands();
        let first = &c.rollup.pipeline[0];
        assert_eq!(
            first,
            &doc! {"$match": {
                "timestamp": {
                    "$gte": bson::DateTime::from_chrono(utc("2026-03-01T00:00:00Z")),
                    "$lt": bson::DateTime::from_chrono(utc("2026-03-03T00:00:00Z")),
                    // An array holding an in-range date also matches the range; it is no
                    // timestamp.
                    "$not": {"$type": "array"},
                },
            }}
        );
        let merge = c
            .rollup
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
        assert!(c.rollup.writes());
        assert!(!c.rollup.preview().writes());
        // Every aggregate carries its time limit; no engine default applies.
        assert_eq!(c.rollup.to_command().get_i64("maxTimeMS"), Ok(600_000));
        assert_eq!(
            c.rollup.preview().to_command().get_i64("maxTimeMS"),
            Ok(600_000)
        );
        assert_eq!(
            c.rollup.preview().pipeline.len(),
            c.rollup.pipeline.len() - 1
        );
    }

    #[test]
    fn events_find_their_window_through_the_bound_quantum_table() {
        let c = commands();
        let group = c.rollup.pipeline[1].get_document("$group").unwrap();
        let lookup = group
            .get_document("_id")
            .unwrap()
            .get_document("w")
            .unwrap()
            .get_array("$arrayElemAt")
            .unwrap();
        let expected: Vec<Bson> = ["2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"]
            .iter()
            .map(|s| date(utc(s)))
            .collect();
        assert_eq!(lookup[0], Bson::Array(expected));
        let divide = lookup[1]
            .as_document()
            .and_then(|d| d.get_document("$toInt").ok())
            .and_then(|d| d.get_document("$floor").ok())
            .and_then(|d| d.get_array("$divide").ok())
            .unwrap();
        assert_eq!(divide[1], Bson::Int64(86_400_000));
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
        let err =
            chunk_commands(&target(), Period::Daily, &[], utc("2026-03-10T12:00:00Z")).unwrap_err();
        assert!(matches!(err, PipelineError::NoWindows));
    }

    #[test]
    fn pipelines_use_no_server_clock_or_server_time_zone() {
        // `$$NOW` is rejected by DocumentDB before `$merge`, and `$dateTrunc`/`$dateToParts` would
        // let the server decide windows: the window arithmetic lives in `window` only.
        for text in [ROLLUP_PIPELINE, SEED_WINDOW_STATEMENT] {
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
}
