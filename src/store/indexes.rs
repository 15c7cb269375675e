//! The indexes vcmetrics needs, and the plan that brings a deployment to them.
//!
//! The audit log gets the indexes the platform's schema declares (including its TTL index); the
//! metrics collection gets the schema's indexes plus the unique `{period: 1, date: 1}` that
//! `$merge ... on: ["period", "date"]` requires; the staging collection its TTL; the sessions
//! collection the schema's video-call and query-pattern indexes. Planning is pure: it compares what exists with
//! what is wanted. It never plans to change an existing TTL; the caller does that only when asked.

use std::time::Duration;

use bson::{doc, Document};

use crate::config::Config;
use crate::metrics_document::number;
use crate::store::ExistingIndex;

#[derive(Debug, Clone, PartialEq)]
pub struct WantedIndex {
    pub database: String,
    pub collection: String,
    pub name: String,
    pub keys: Document,
    pub unique: bool,
    /// Only documents that have the keys are indexed (a unique index then allows many without).
    pub sparse: bool,
    pub expire_after: Option<Duration>,
    /// The configuration key the TTL comes from (for messages).
    pub ttl_setting: &'static str,
}

/// What to do about one wanted index.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexAction {
    Create,
    /// An index with the same keys and options exists (perhaps under another name).
    Exists {
        name: String,
    },
    /// The TTL index exists with another TTL, or the `timestamp` index exists without one.
    TtlDiffers {
        name: String,
        existing: Option<Duration>,
    },
    /// An index with the same keys exists with other options (unique, sparse): reported, never
    /// replaced.
    OptionsDiffer {
        name: String,
        existing: String,
        wanted: String,
    },
    /// Something in the way that needs an operator: a non-unique index where a unique one is
    /// needed, or the wanted name taken by other keys.
    Conflict {
        reason: String,
    },
}

/// How long a staged document of a run that died before its cleanup stays.
pub const STAGED_DOCUMENT_TTL: Duration = Duration::from_secs(24 * 3600);

pub fn wanted_indexes(config: &Config) -> Vec<WantedIndex> {
    let audit = |name: &str, keys: Document, ttl: Option<Duration>| WantedIndex {
        database: config.database.clone(),
        collection: config.audit_collection.clone(),
        name: name.to_owned(),
        keys,
        unique: false,
        sparse: false,
        expire_after: ttl,
        ttl_setting: "audit_ttl",
    };
    let sessions = |name: &str, keys: Document| WantedIndex {
        database: config.database.clone(),
        collection: config.sessions_collection.clone(),
        name: name.to_owned(),
        keys,
        unique: false,
        sparse: false,
        expire_after: None,
        ttl_setting: "",
    };
    let metrics = |name: &str, keys: Document, unique: bool| WantedIndex {
        database: config.database.clone(),
        collection: config.metrics_collection.clone(),
        name: name.to_owned(),
        keys,
        unique,
        sparse: false,
        expire_after: None,
        ttl_setting: "",
    };
    vec![
        // Single-field indexes from `index: true` in the schema. `timestamp: 1` is also the TTL
        // index, so it is declared once, with its TTL.
        audit("sessionId_1", doc! {"sessionId": 1}, None),
        audit("userId_1", doc! {"userId": 1}, None),
        audit("action_1", doc! {"action": 1}, None),
        audit("roomId_1", doc! {"roomId": 1}, None),
        audit("timestamp_1", doc! {"timestamp": 1}, Some(config.audit_ttl)),
        // The schema's compound indexes.
        audit(
            "sessionId_1_timestamp_-1",
            doc! {"sessionId": 1, "timestamp": -1},
            None,
        ),
        audit(
            "userId_1_timestamp_-1",
            doc! {"userId": 1, "timestamp": -1},
            None,
        ),
        audit(
            "action_1_timestamp_-1",
            doc! {"action": 1, "timestamp": -1},
            None,
        ),
        audit("timestamp_-1", doc! {"timestamp": -1}, None),
        metrics("date_1", doc! {"date": 1}, false),
        metrics("period_1", doc! {"period": 1}, false),
        metrics("period_1_date_-1", doc! {"period": 1, "date": -1}, false),
        metrics("date_-1", doc! {"date": -1}, false),
        // What `$merge` needs to match documents on {period, date}.
        metrics("period_1_date_1", doc! {"period": 1, "date": 1}, true),
        // A rollup deletes its staged documents when it ends; this removes those of a run that
        // died first (`at` is the run's time).
        WantedIndex {
            database: config.database.clone(),
            collection: config.staging_collection.clone(),
            name: "at_1".to_owned(),
            keys: doc! {"at": 1},
            unique: false,
            sparse: false,
            expire_after: Some(STAGED_DOCUMENT_TTL),
            ttl_setting: "the staging TTL (24h)",
        },
        // Incremental runs: the partials of a run's slices (the buckets they touched), of a
        // window's buckets (its finish), and both kept as long as the audit log keeps events
        // (`at` is when a slice was kept; a window past the retention is never written again).
        kept(
            config,
            &config.partials_collection,
            "_id.r_1",
            doc! {"_id.r": 1},
        ),
        kept(
            config,
            &config.partials_collection,
            "_id.w_1",
            doc! {"_id.w": 1},
        ),
        WantedIndex {
            expire_after: Some(config.audit_ttl),
            ttl_setting: "audit_ttl",
            ..kept(config, &config.partials_collection, "at_1", doc! {"at": 1})
        },
        // A window's user sets (its finish counts them); `at` is when one last took a user.
        kept(
            config,
            &config.user_sets_collection,
            "_id.p_1__id.w_1",
            doc! {"_id.p": 1, "_id.w": 1},
        ),
        WantedIndex {
            expire_after: Some(config.audit_ttl),
            ttl_setting: "audit_ttl",
            ..kept(config, &config.user_sets_collection, "at_1", doc! {"at": 1})
        },
        // The platform's sessions: the video-call fields' indexes of the schema, and its query
        // patterns (a client's or psychologist's sessions by date, sessions by status and date).
        WantedIndex {
            unique: true,
            sparse: true,
            ..sessions("meetingLink_1", doc! {"meetingLink": 1})
        },
        sessions("videoCallStarted_1", doc! {"videoCallStarted": 1}),
        sessions("lastAccessedAt_1", doc! {"lastAccessedAt": 1}),
        sessions(
            "clientId_1_sessionDate_1",
            doc! {"clientId": 1, "sessionDate": 1},
        ),
        sessions(
            "psychologistId_1_sessionDate_1",
            doc! {"psychologistId": 1, "sessionDate": 1},
        ),
        sessions(
            "status_1_sessionDate_1",
            doc! {"status": 1, "sessionDate": 1},
        ),
        sessions("createdAt_1", doc! {"createdAt": 1}),
        // The archive: the timestamp range every rollup reading it matches (and `archive`'s
        // oldest-first batches and spans); a TTL only when archive.retention is set.
        WantedIndex {
            database: config
                .archive
                .database
                .clone()
                .unwrap_or_else(|| config.database.clone()),
            collection: config.archive.collection.clone(),
            name: "timestamp_1".to_owned(),
            keys: doc! {"timestamp": 1},
            unique: false,
            sparse: false,
            expire_after: config.archive.retention,
            ttl_setting: "archive.retention",
        },
    ]
}

/// An index of a collection incremental runs keep.
fn kept(config: &Config, collection: &str, name: &str, keys: Document) -> WantedIndex {
    WantedIndex {
        database: config.database.clone(),
        collection: collection.to_owned(),
        name: name.to_owned(),
        keys,
        unique: false,
        sparse: false,
        expire_after: None,
        ttl_setting: "",
    }
}

/// The indexes a daemon's runs cannot do without, of those `migrate` creates: the metrics
/// collection's unique `{period, date}` (every run's `$merge` matches on it), the staging
/// collection's TTL (removes what a run that died left there), the audit log's `timestamp`
/// index (every scan is a range on it; without it each run reads the whole log) and, with an
/// incremental period, the partials' and user sets' indexes (a finish reads both by window; and
/// DocumentDB skips a `$merge` whose source collection does not exist, which migrate creates).
pub fn needed_by_runs(config: &Config) -> Vec<WantedIndex> {
    let incremental = crate::window::Period::ALL
        .iter()
        .any(|p| config.period(*p).incremental);
    wanted_indexes(config)
        .into_iter()
        .filter(|w| {
            (w.collection == config.metrics_collection && w.unique)
                || w.collection == config.staging_collection
                || (w.collection == config.audit_collection && w.name == "timestamp_1")
                || (incremental
                    && (w.collection == config.partials_collection
                        || w.collection == config.user_sets_collection))
        })
        .collect()
}

/// Whether `existing` lacks `wanted` for a run's purposes: absent, or (a unique index) present
/// only without its uniqueness. A differing TTL or other options still serve the runs.
pub fn is_absent(wanted: &WantedIndex, existing: &[ExistingIndex]) -> bool {
    match plan(wanted, existing) {
        IndexAction::Create => true,
        IndexAction::Conflict { .. } | IndexAction::OptionsDiffer { .. } => wanted.unique,
        IndexAction::Exists { .. } | IndexAction::TtlDiffers { .. } => false,
    }
}

/// Whether a unique index on `keys` can hold on a collection sharded on `shard_key`: only when
/// the index starts with the shard key's fields, the rule of MongoDB's manual ("Sharded
/// Collections with Unique Indexes"), which refuses the others at `createIndexes`. DocumentDB's
/// distributed engine (0.108, Citus 12.1) was seen both refusing such an index and accepting it
/// without enforcing it (docs/portability.md), so `migrate` applies the rule itself.
pub fn unique_holds_when_sharded(keys: &Document, shard_key: &Document) -> bool {
    shard_key.len() <= keys.len()
        && shard_key
            .keys()
            .zip(keys.keys())
            .all(|(shard, index)| shard == index)
}

impl WantedIndex {
    /// How an operator reads it: `videocallmetrics {period: 1, date: 1} (unique)`.
    pub fn describe(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let mut text = format!("{} {{{}}}", self.collection, keys.join(", "));
        if self.unique {
            text.push_str(" (unique)");
        }
        if self.expire_after.is_some() {
            text.push_str(" (TTL)");
        }
        text
    }
}

/// Key patterns are equal when fields, order and directions agree; servers and drivers store
/// directions as int32, int64 or double, so 1 == 1_i64 == 1.0.
fn same_keys(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (number(va), number(vb)) {
                    (Some(x), Some(y)) => x == y,
                    _ => va == vb,
                }
        })
}

fn options_text(unique: bool, sparse: bool) -> String {
    match (unique, sparse) {
        (false, false) => "no options".to_owned(),
        (true, false) => "unique".to_owned(),
        (false, true) => "sparse".to_owned(),
        (true, true) => "unique, sparse".to_owned(),
    }
}

pub fn plan(wanted: &WantedIndex, existing: &[ExistingIndex]) -> IndexAction {
    if let Some(found) = existing.iter().find(|e| same_keys(&e.keys, &wanted.keys)) {
        if wanted.unique && !found.unique {
            return IndexAction::Conflict {
                reason: format!(
                    "index {} on the same keys exists but is not unique; $merge needs a unique \
                     index on {{period, date}}: remove duplicate documents, drop {}, rerun migrate",
                    found.name, found.name
                ),
            };
        }
        if wanted.expire_after.is_some() && found.expire_after != wanted.expire_after {
            return IndexAction::TtlDiffers {
                name: found.name.clone(),
                existing: found.expire_after,
            };
        }
        if found.unique != wanted.unique || found.sparse != wanted.sparse {
            return IndexAction::OptionsDiffer {
                name: found.name.clone(),
                existing: options_text(found.unique, found.sparse),
                wanted: options_text(wanted.unique, wanted.sparse),
            };
        }
        return IndexAction::Exists {
            name: found.name.clone(),
        };
    }
    if let Some(taken) = existing.iter().find(|e| e.name == wanted.name) {
        return IndexAction::Conflict {
            reason: format!(
                "an index named {} exists on other keys ({})",
                taken.name, taken.keys
            ),
        };
    }
    IndexAction::Create
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing(name: &str, keys: Document, unique: bool, ttl: Option<u64>) -> ExistingIndex {
        ExistingIndex {
            name: name.to_owned(),
            keys,
            unique,
            sparse: false,
            expire_after: ttl.map(Duration::from_secs),
        }
    }

    fn wanted(name: &str) -> WantedIndex {
        let config = crate::config::from_toml("", &[]).unwrap();
        wanted_indexes(&config)
            .into_iter()
            .find(|w| w.name == name)
            .unwrap()
    }

    #[test]
    fn runs_need_the_merge_key_the_staging_ttl_and_the_timestamp_range() {
        let described = |config: &Config| -> Vec<String> {
            needed_by_runs(config)
                .iter()
                .map(WantedIndex::describe)
                .collect()
        };
        let regular = [
            "videocallauditlogs {timestamp: 1} (TTL)",
            "videocallmetrics {period: 1, date: 1} (unique)",
            "videocallmetrics_staging {at: 1} (TTL)",
        ];
        let config =
            crate::config::from_toml("[periods.hourly]\nincremental = false", &[]).unwrap();
        assert_eq!(described(&config), regular);
        // The default: incremental hourly runs need what they keep, too.
        let config = crate::config::from_toml("", &[]).unwrap();
        let kept = [
            "videocallmetrics_partials {_id.r: 1}",
            "videocallmetrics_partials {_id.w: 1}",
            "videocallmetrics_partials {at: 1} (TTL)",
            "videocallmetrics_users {_id.p: 1, _id.w: 1}",
            "videocallmetrics_users {at: 1} (TTL)",
        ];
        let expected: Vec<&str> = regular.iter().chain(kept.iter()).copied().collect();
        assert_eq!(described(&config), expected);
        let merge_key = wanted("period_1_date_1");
        assert!(is_absent(&merge_key, &[]));
        let plain = existing(
            "period_1_date_1",
            doc! {"period": 1, "date": 1},
            false,
            None,
        );
        assert!(
            is_absent(&merge_key, &[plain]),
            "not unique: $merge refuses it"
        );
        let unique = existing("pd", doc! {"period": 1_i64, "date": 1.0}, true, None);
        assert!(!is_absent(&merge_key, &[unique]));
        let timestamp = wanted("timestamp_1");
        let other_ttl = existing("timestamp_1", doc! {"timestamp": 1}, false, Some(60));
        assert!(
            !is_absent(&timestamp, &[other_ttl]),
            "a TTL of its own still serves the scans"
        );
    }

    #[test]
    fn the_audit_ttl_is_the_schemas_180_days() {
        assert_eq!(
            wanted("timestamp_1").expire_after,
            Some(Duration::from_secs(15_552_000))
        );
        assert!(wanted("period_1_date_1").unique);
    }

    #[test]
    fn the_archive_gets_its_timestamp_index_with_a_ttl_only_when_configured() {
        let archive_index = |toml: &str| {
            let config = crate::config::from_toml(toml, &[]).unwrap();
            wanted_indexes(&config)
                .into_iter()
                .find(|w| w.collection == "videocallauditlogs_archive")
                .unwrap()
        };
        let plain = archive_index("database = \"app\"");
        assert_eq!(
            (
                plain.database.as_str(),
                plain.name.as_str(),
                plain.expire_after
            ),
            ("app", "timestamp_1", None)
        );
        assert_eq!(plain.keys, doc! {"timestamp": 1});
        let kept = archive_index(
            "database = \"app\"\n[archive]\nretention = \"730d\"\ndatabase = \"cold\"",
        );
        assert_eq!(kept.database, "cold");
        assert_eq!(kept.expire_after, Some(Duration::from_secs(730 * 86_400)));
        assert_eq!(kept.ttl_setting, "archive.retention");
    }

    #[test]
    fn missing_indexes_are_created_and_present_ones_recognised_by_keys() {
        let w = wanted("userId_1_timestamp_-1");
        assert_eq!(plan(&w, &[]), IndexAction::Create);
        // Created by someone else under another name, with numbers stored as doubles.
        let other = existing(
            "by_user",
            doc! {"userId": 1.0, "timestamp": -1_i64},
            false,
            None,
        );
        assert_eq!(
            plan(&w, &[other]),
            IndexAction::Exists {
                name: "by_user".into()
            }
        );
        // Same fields, other direction: a different index.
        let reversed = existing("x", doc! {"userId": 1, "timestamp": 1}, false, None);
        assert_eq!(plan(&w, &[reversed]), IndexAction::Create);
    }

    #[test]
    fn a_different_or_missing_ttl_is_reported_not_changed() {
        let w = wanted("timestamp_1");
        let ninety_days = existing("timestamp_1", doc! {"timestamp": 1}, false, Some(7_776_000));
        assert_eq!(
            plan(&w, &[ninety_days]),
            IndexAction::TtlDiffers {
                name: "timestamp_1".into(),
                existing: Some(Duration::from_secs(7_776_000))
            }
        );
        // Mongoose's `index: true` creates timestamp_1 without a TTL.
        let plain = existing("timestamp_1", doc! {"timestamp": 1}, false, None);
        assert_eq!(
            plan(&w, &[plain]),
            IndexAction::TtlDiffers {
                name: "timestamp_1".into(),
                existing: None
            }
        );
        let same = existing(
            "timestamp_1",
            doc! {"timestamp": 1},
            false,
            Some(15_552_000),
        );
        assert_eq!(
            plan(&w, &[same]),
            IndexAction::Exists {
                name: "timestamp_1".into()
            }
        );
    }

    #[test]
    fn the_sessions_indexes_of_the_schema_and_other_options_reported_not_replaced() {
        let link = wanted("meetingLink_1");
        assert_eq!(link.collection, "sessions");
        assert!(link.unique && link.sparse);
        for name in [
            "videoCallStarted_1",
            "lastAccessedAt_1",
            "clientId_1_sessionDate_1",
            "psychologistId_1_sessionDate_1",
            "status_1_sessionDate_1",
            "createdAt_1",
        ] {
            let w = wanted(name);
            assert_eq!(w.collection, "sessions");
            assert!(!w.unique && !w.sparse && w.expire_after.is_none(), "{name}");
        }
        // The platform made meetingLink unique but not sparse: reported, never replaced.
        let not_sparse = existing("meetingLink_1", doc! {"meetingLink": 1}, true, None);
        assert_eq!(
            plan(&link, &[not_sparse]),
            IndexAction::OptionsDiffer {
                name: "meetingLink_1".into(),
                existing: "unique".into(),
                wanted: "unique, sparse".into()
            }
        );
        let same = ExistingIndex {
            sparse: true,
            ..existing("link", doc! {"meetingLink": 1.0}, true, None)
        };
        assert_eq!(
            plan(&link, &[same]),
            IndexAction::Exists {
                name: "link".into()
            }
        );
    }

    #[test]
    fn a_unique_index_holds_on_a_sharded_collection_only_when_it_starts_with_the_shard_key() {
        let period_date = doc! {"period": 1, "date": 1};
        assert!(unique_holds_when_sharded(&period_date, &doc! {"period": 1}));
        assert!(unique_holds_when_sharded(
            &period_date,
            &doc! {"period": 1, "date": 1}
        ));
        assert!(!unique_holds_when_sharded(
            &period_date,
            &doc! {"sessionId": "hashed"}
        ));
        assert!(!unique_holds_when_sharded(&period_date, &doc! {"date": 1}));
        assert!(!unique_holds_when_sharded(
            &period_date,
            &doc! {"period": 1, "date": 1, "_id": 1}
        ));
    }

    #[test]
    fn a_non_unique_period_date_index_is_a_conflict() {
        let w = wanted("period_1_date_1");
        let plain = existing(
            "period_1_date_1",
            doc! {"period": 1, "date": 1},
            false,
            None,
        );
        assert!(matches!(plan(&w, &[plain]), IndexAction::Conflict { .. }));
        let taken = existing("period_1_date_1", doc! {"period": 1}, false, None);
        assert!(matches!(plan(&w, &[taken]), IndexAction::Conflict { .. }));
    }
}
