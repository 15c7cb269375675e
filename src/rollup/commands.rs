//! MongoDB commands as data: what the rollup builds and the store sends, printable as the
//! commands `vcmetrics pipelines` shows, and where they go.

use bson::{doc, Bson, Document};

/// Where the commands go: database and collection names from the configuration.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub database: &'a str,
    pub audit_collection: &'a str,
    pub metrics_collection: &'a str,
    /// Where the three scans of a chunk leave their per-window documents for `finish`.
    pub staging_collection: &'a str,
    /// Where incremental runs keep their partial counts and sums, and their user sets.
    pub partials_collection: &'a str,
    pub user_sets_collection: &'a str,
    /// Every aggregate's `maxTimeMS` (`aggregate_timeout`).
    pub time_limit: std::time::Duration,
    /// Where `vcmetrics archive` moves old events: chunks before its reach read it too.
    pub archive_database: &'a str,
    pub archive_collection: &'a str,
    /// Where the lease document lives (`state_collection`).
    pub state_collection: &'a str,
    /// The lease a daemon's run writes under; `None` for the command line's runs.
    pub fence: Option<Fence>,
}

/// The `_id` of the lease document in the state collection.
pub const LEASE_ID: &str = "leader";

/// The lease a daemon's run writes under. Its `$merge` first checks on the server that
/// `holder` still holds the lease at `epoch` and writes nothing otherwise, so a leader whose
/// lease lapsed while its aggregate ran (a stalled network, a paused VM) cannot overwrite what
/// the new leader has written since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: i64,
}

impl Fence {
    /// The stages that let a window's document through to the `$merge` only while the lease is
    /// still this fence's.
    pub fn stages(&self, state_collection: &str) -> Vec<Document> {
        vec![
            doc! {"$lookup": {
                "from": state_collection,
                "pipeline": [
                    {"$match": {"_id": LEASE_ID, "holder": &self.holder, "epoch": self.epoch}},
                    {"$project": {"_id": 1}},
                ],
                "as": "_lease",
            }},
            doc! {"$match": {"_lease.0": {"$exists": true}}},
            doc! {"$unset": "_lease"},
        ]
    }
}

impl<'a> Target<'a> {
    /// The configured database, collections and time limit.
    pub fn of(config: &'a crate::config::Config) -> Self {
        Target {
            database: &config.database,
            audit_collection: &config.audit_collection,
            metrics_collection: &config.metrics_collection,
            staging_collection: &config.staging_collection,
            partials_collection: &config.partials_collection,
            user_sets_collection: &config.user_sets_collection,
            time_limit: config.aggregate_timeout,
            archive_database: config
                .archive
                .database
                .as_deref()
                .unwrap_or(&config.database),
            archive_collection: &config.archive.collection,
            state_collection: &config.state_collection,
            fence: None,
        }
    }

    pub(super) fn aggregate(&self, collection: &str, pipeline: Vec<Document>) -> AggregateCommand {
        AggregateCommand {
            database: self.database.to_owned(),
            collection: collection.to_owned(),
            pipeline,
            time_limit: self.time_limit,
        }
    }
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
    /// True when the pipeline ends in `$merge` (it writes); false when it returns its documents.
    pub fn writes(&self) -> bool {
        self.pipeline
            .last()
            .is_some_and(|stage| stage.contains_key("$merge"))
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

/// A `delete` command removing every document matching one filter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteCommand {
    pub database: String,
    pub collection: String,
    pub filter: Document,
}

impl DeleteCommand {
    pub fn to_command(&self) -> Document {
        doc! {
            "delete": &self.collection,
            "deletes": [{"q": self.filter.clone(), "limit": 0}],
        }
    }
}
