//! The least MongoDB privileges vcmetrics needs, as custom roles (`vcmetrics roles` prints them
//! as `createRole` commands for the configured database and collections).
//!
//! - `vcmetricsDaemon`: what `run`, `recompute`, `verify` and `check` send — read the audit log
//!   (and its indexes, for the TTL that bounds recompute), write the metrics through `$merge`,
//!   stage and clean up a chunk's per-window documents, keep watermarks and the lease, count
//!   sessions.
//! - `vcmetricsMigrate`: index creation on the four collections `migrate` prepares.
//!
//! A server-backed test records every command both send and checks it against these lists, so a
//! command that needs more fails a test before it fails in production.

use bson::{doc, Bson, Document};

use crate::config::Config;

/// `actions` on one collection of the configured database (or of `database`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    /// Another database than the configured one (an archive in `archive.database`).
    pub database: Option<String>,
    pub collection: String,
    pub actions: &'static [&'static str],
}

impl Privilege {
    fn on(collection: &str, actions: &'static [&'static str]) -> Privilege {
        Privilege {
            database: None,
            collection: collection.to_owned(),
            actions,
        }
    }
}

/// A custom role: its name and privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    pub privileges: Vec<Privilege>,
}

impl Role {
    /// Whether the role allows `action` on `collection`.
    pub fn allows(&self, collection: &str, action: &str) -> bool {
        self.privileges
            .iter()
            .any(|p| p.collection == collection && p.actions.contains(&action))
    }

    /// The `createRole` command, to run in `database`.
    pub fn create_command(&self, database: &str) -> Document {
        let privileges: Vec<Bson> = self
            .privileges
            .iter()
            .map(|p| {
                Bson::Document(doc! {
                    "resource": {"db": p.database.as_deref().unwrap_or(database), "collection": &p.collection},
                    "actions": p.actions.to_vec(),
                })
            })
            .collect();
        doc! {"createRole": self.name, "privileges": privileges, "roles": []}
    }
}

/// What the daemon, `recompute`, `verify`, `check` and (with `archive.schedule` set) `archive`
/// need.
pub fn daemon_role(config: &Config) -> Role {
    let archiving = config.archive.schedule.is_some();
    let mut privileges = vec![
        // The events; listIndexes: the audit log's TTL index is the retention horizon. The
        // archive deletes the events it has confirmed in the archive.
        Privilege::on(
            &config.audit_collection,
            if archiving {
                &["find", "listIndexes", "remove"]
            } else {
                &["find", "listIndexes"]
            },
        ),
        // `$merge` inserts new windows and updates existing ones; the reports read them back;
        // listIndexes: the daemon checks that the unique `{period, date}` exists (`setup`).
        Privilege::on(
            &config.metrics_collection,
            &["find", "insert", "update", "listIndexes"],
        ),
        // A chunk's three scans stage one document per window, the finish reads them, the
        // cleanup deletes them; the store creates the collection before the first chunk;
        // listIndexes: the setup check looks for its TTL index.
        Privilege::on(
            &config.staging_collection,
            &[
                "find",
                "insert",
                "update",
                "remove",
                "createCollection",
                "listIndexes",
            ],
        ),
        // Incremental runs replace partials and merge into user sets (`$merge`), and finish
        // windows from both; listIndexes: the setup check looks for their indexes.
        Privilege::on(
            &config.partials_collection,
            &["find", "insert", "update", "listIndexes"],
        ),
        Privilege::on(
            &config.user_sets_collection,
            &["find", "insert", "update", "listIndexes"],
        ),
        // Watermarks, late-event marks, the leader lease (taken with findAndModify, released
        // by marking it so; a run's `$merge` reads it through `$lookup`), the archive's record.
        Privilege::on(&config.state_collection, &["find", "insert", "update"]),
        // The live session gauges and `check sessions`: counts, read only.
        Privilege::on(&config.sessions_collection, &["find"]),
    ];
    if archiving {
        // Rollups of archived windows read it; the archive's `$merge` copies events into it.
        privileges.push(Privilege {
            database: config.archive.database.clone(),
            ..Privilege::on(&config.archive.collection, &["find", "insert", "update"])
        });
    }
    Role {
        name: "vcmetricsDaemon",
        privileges,
    }
}

/// What `migrate` needs: listing and creating indexes (which may create the collection),
/// `collMod` on the audit log and the archive for `--update-ttl`, and for `--data` reading and
/// updating the sessions and recording the run in the state collection.
pub fn migrate_role(config: &Config) -> Role {
    const INDEXES: &[&str] = &["listIndexes", "createIndex", "createCollection"];
    Role {
        name: "vcmetricsMigrate",
        privileges: vec![
            Privilege::on(
                &config.audit_collection,
                &["listIndexes", "createIndex", "createCollection", "collMod"],
            ),
            Privilege::on(&config.metrics_collection, INDEXES),
            Privilege::on(&config.staging_collection, INDEXES),
            // Their TTL follows the audit log's (`--update-ttl`).
            Privilege::on(
                &config.partials_collection,
                &["listIndexes", "createIndex", "createCollection", "collMod"],
            ),
            Privilege::on(
                &config.user_sets_collection,
                &["listIndexes", "createIndex", "createCollection", "collMod"],
            ),
            // Indexes, and the named data migration (`--data`): find the sessions it applies
            // to, count them for --dry-run, update them.
            Privilege::on(
                &config.sessions_collection,
                &[
                    "listIndexes",
                    "createIndex",
                    "createCollection",
                    "find",
                    "update",
                ],
            ),
            // The data migration's record.
            Privilege::on(&config.state_collection, &["find", "insert", "update"]),
            // On the database: which collections that get a unique index are sharded, and on
            // which key (a sharded one must start its unique index with the shard key).
            Privilege::on("", &["listCollections"]),
            // The archive's timestamp index (with archive.retention, its TTL).
            Privilege {
                database: config.archive.database.clone(),
                ..Privilege::on(
                    &config.archive.collection,
                    &["listIndexes", "createIndex", "createCollection", "collMod"],
                )
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_configured_collections() {
        let config = crate::config::from_toml(
            "database = \"platform\"\naudit_collection = \"events\"\nstate_collection = \"vcstate\"",
            &[],
        )
        .unwrap();
        let daemon = daemon_role(&config);
        assert!(daemon.allows("events", "find"));
        assert!(!daemon.allows("events", "insert"));
        assert!(daemon.allows("vcstate", "update") && !daemon.allows("vcstate", "remove"));
        assert!(daemon.allows("sessions", "find") && !daemon.allows("sessions", "update"));
        let command = daemon.create_command("platform");
        assert_eq!(command.get_str("createRole").unwrap(), "vcmetricsDaemon");
        let first = command.get_array("privileges").unwrap()[0]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(
            first,
            doc! {"resource": {"db": "platform", "collection": "events"}, "actions": ["find", "listIndexes"]}
        );
        let migrate = migrate_role(&config);
        assert!(migrate.allows("events", "collMod"));
        assert!(migrate.allows("sessions", "createIndex"));
        assert!(!migrate.allows("events", "find"));
        assert!(migrate.allows("videocallauditlogs_archive", "createIndex"));
        // Archiving, where it is scheduled: deleting archived events, copying into the archive.
        assert!(!daemon.allows("events", "remove"));
        assert!(!daemon.allows("videocallauditlogs_archive", "find"));
        let archiving = crate::config::from_toml(
            "database = \"platform\"\n[archive]\nschedule = \"0 0 3 * * *\"\ndatabase = \"cold\"",
            &[],
        )
        .unwrap();
        let daemon = daemon_role(&archiving);
        assert!(daemon.allows("videocallauditlogs", "remove"));
        assert!(daemon.allows("videocallauditlogs_archive", "insert"));
        let last = daemon
            .create_command("platform")
            .get_array("privileges")
            .unwrap()[7]
            .as_document()
            .unwrap()
            .clone();
        assert_eq!(
            last.get_document("resource").unwrap(),
            &doc! {"db": "cold", "collection": "videocallauditlogs_archive"}
        );
    }
}
