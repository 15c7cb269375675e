//! The archive on MongoDB: its record in the state collection (`archive::state`), and the moves
//! of one batch: the `_id`s to move, the server-side copy, the check, the delete.

use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use super::mongo::{bson_date, is_duplicate_key};
use super::{ArchiveStore, MarkStore, MongoStore};
use crate::archive::{ArchiveState, EventSpan, Finished, MovingBatch, Phase};
use crate::error::{Error, Result};
use crate::window::Period;

/// The `_id` of the archive's document in the state collection.
pub const ARCHIVE_STATE_ID: &str = "archive";

fn until(now: DateTime<Utc>, hold: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(hold)
        .ok()
        .and_then(|hold| now.checked_add_signed(hold))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A state document that does not say what it must is an error, never a guess: a wrong reach
/// or batch would make rollups miss or double-count archived events.
fn malformed(field: &str, value: Option<&Bson>) -> Error {
    Error::MongoWrite {
        operation: "find (archive state)",
        message: format!(
            "the archive state document has an unexpected `{field}` ({value:?}); fix or delete it only after reading the archival runbook (docs/archival.md)"
        ),
    }
}

fn optional_date(d: &Document, field: &str) -> Result<Option<DateTime<Utc>>> {
    match d.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::DateTime(t)) => Ok(Some(t.to_chrono())),
        other => Err(malformed(field, other)),
    }
}

fn parse_state(d: &Document) -> Result<ArchiveState> {
    let seq = match d.get("seq") {
        None => 0,
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => i64::from(*n),
        other => return Err(malformed("seq", other)),
    };
    let batch = match d.get("batch") {
        None | Some(Bson::Null) => None,
        Some(Bson::Document(b)) => {
            let phase = b
                .get_str("phase")
                .ok()
                .and_then(Phase::parse)
                .ok_or_else(|| malformed("batch.phase", b.get("phase")))?;
            let ids = b
                .get_array("ids")
                .map_err(|_| malformed("batch.ids", b.get("ids")))?
                .clone();
            Some(MovingBatch { ids, phase })
        }
        other => return Err(malformed("batch", other)),
    };
    let finished = match optional_date(d, "archivedBefore")? {
        None => None,
        Some(archived_before) => Some(Finished {
            archived_before,
            complete_from: optional_date(d, "completeFrom")?,
            at: optional_date(d, "finishedAt")?
                .ok_or_else(|| malformed("finishedAt", d.get("finishedAt")))?,
            moved: match d.get("moved") {
                Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
                Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
                other => return Err(malformed("moved", other)),
            },
        }),
    };
    let holder = match (d.get_str("holder").ok(), optional_date(d, "holdUntil")?) {
        (Some(holder), Some(until)) => Some((holder.to_owned(), until)),
        _ => None,
    };
    Ok(ArchiveState {
        dropped_before: optional_date(d, "droppedBefore")?,
        reach: optional_date(d, "reach")?,
        seq,
        batch,
        finished,
        holder,
    })
}

impl MongoStore {
    fn audit(&self) -> mongodb::Collection<Document> {
        self.database.collection(&self.audit_collection)
    }

    fn archive(&self) -> mongodb::Collection<Document> {
        self.client
            .database(&self.archive_database)
            .collection(&self.archive_collection)
    }

    fn archive_record(&self) -> mongodb::Collection<Document> {
        self.database.collection(&self.state_collection)
    }

    pub(super) async fn read_archive_state(&self) -> Result<ArchiveState> {
        let found = self
            .archive_record()
            .find_one(doc! {"_id": ARCHIVE_STATE_ID})
            .await
            .map_err(self.failed("find (archive state)"))?;
        found.map_or_else(|| Ok(ArchiveState::default()), |d| parse_state(&d))
    }

    /// Archived events timestamped before `before` (what `archive --drop-before` would drop).
    pub async fn count_archived_before(&self, before: DateTime<Utc>) -> Result<u64> {
        self.archive()
            .count_documents(doc! {"timestamp": {"$lt": bson_date(before)}})
            .await
            .map_err(self.failed("count (archive)"))
    }
}

impl ArchiveStore for MongoStore {
    async fn begin_archive(
        &self,
        holder: &str,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<bool> {
        let result = self
            .archive_record()
            .update_one(
                doc! {
                    "_id": ARCHIVE_STATE_ID,
                    "$or": [
                        {"holder": holder},
                        {"holder": null},
                        {"holdUntil": {"$lte": bson_date(now)}},
                    ],
                },
                doc! {
                    "$max": {"reach": bson_date(cutoff)},
                    "$set": {"holder": holder, "holdUntil": bson_date(until(now, hold))},
                    // Readers that planned with the old reach read again.
                    "$inc": {"seq": 1_i64},
                },
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => Ok(true),
            // Held by another run: the filter missed and the upsert hit the existing _id.
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(self.failed("update (archive lock)")(e)),
        }
    }

    async fn record_archive_batch(
        &self,
        holder: &str,
        batch: Option<&MovingBatch>,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<()> {
        let batch = match batch {
            None => Bson::Null,
            Some(b) => Bson::Document(doc! {"ids": b.ids.clone(), "phase": b.phase.as_str()}),
        };
        let result = self
            .archive_record()
            .update_one(
                doc! {"_id": ARCHIVE_STATE_ID, "holder": holder},
                doc! {
                    "$set": {"batch": batch, "holdUntil": bson_date(until(now, hold))},
                    "$inc": {"seq": 1_i64},
                },
            )
            .await
            .map_err(self.failed("update (archive batch)"))?;
        if result.matched_count == 0 {
            return Err(Error::Busy(format!(
                "{holder} lost the archive lock (it expired and another run took it); this run stops, the other goes on"
            )));
        }
        Ok(())
    }

    async fn finish_archive(&self, holder: &str, finished: &Finished) -> Result<()> {
        let result = self
            .archive_record()
            .update_one(
                doc! {"_id": ARCHIVE_STATE_ID, "holder": holder},
                doc! {
                    "$set": {
                        "archivedBefore": bson_date(finished.archived_before),
                        "completeFrom": finished.complete_from.map_or(Bson::Null, bson_date),
                        "finishedAt": bson_date(finished.at),
                        "moved": i64::try_from(finished.moved).unwrap_or(i64::MAX),
                        "holder": null,
                        "holdUntil": null,
                    },
                },
            )
            .await
            .map_err(self.failed("update (archive finished)"))?;
        if result.matched_count == 0 {
            return Err(Error::Busy(format!(
                "{holder} lost the archive lock before recording its end; the next run records it"
            )));
        }
        Ok(())
    }

    async fn release_archive(&self, holder: &str) -> Result<()> {
        self.archive_record()
            .update_one(
                doc! {"_id": ARCHIVE_STATE_ID, "holder": holder},
                doc! {"$set": {"holder": null, "holdUntil": null}},
            )
            .await
            .map(drop)
            .map_err(self.failed("update (archive lock)"))
    }

    async fn lowest_late_mark(&self) -> Result<Option<ObjectId>> {
        let mut lowest: Option<ObjectId> = None;
        for period in Period::ALL {
            if let Some(mark) = MarkStore::late_mark(self, period).await? {
                lowest = Some(lowest.map_or(mark, |l| l.min(mark)));
            }
        }
        Ok(lowest)
    }

    async fn archivable(
        &self,
        cutoff: DateTime<Utc>,
        written_before: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<Bson>> {
        let filter = archivable_filter(cutoff, written_before);
        // Oldest first along the timestamp index; only the `_id`s come back.
        let docs: Vec<Document> = self
            .audit()
            .find(filter)
            .sort(doc! {"timestamp": 1})
            .projection(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(self.failed("find (events to archive)"))?
            .try_collect()
            .await
            .map_err(self.failed("find (events to archive)"))?;
        Ok(docs
            .into_iter()
            .filter_map(|mut d| d.remove("_id"))
            .collect())
    }

    async fn copy_to_archive(&self, ids: &[Bson]) -> Result<()> {
        // Server-side: the events go from collection to collection, never through vcmetrics.
        // `keepExisting`: an event copied by a run that stopped before its delete stays as it is.
        let pipeline = vec![
            doc! {"$match": {"_id": {"$in": ids}}},
            doc! {"$merge": {
                "into": {"db": &self.archive_database, "coll": &self.archive_collection},
                "on": "_id",
                "whenMatched": "keepExisting",
                "whenNotMatched": "insert",
            }},
        ];
        self.audit()
            .aggregate(pipeline)
            .await
            .map_err(self.failed("aggregate (copy to archive)"))?
            .try_collect::<Vec<_>>()
            .await
            .map(drop)
            .map_err(self.failed("aggregate (copy to archive)"))
    }

    async fn archived(&self, ids: &[Bson]) -> Result<Vec<Bson>> {
        let docs: Vec<Document> = self
            .archive()
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"_id": 1})
            .await
            .map_err(self.failed("find (archived events)"))?
            .try_collect()
            .await
            .map_err(self.failed("find (archived events)"))?;
        Ok(docs
            .into_iter()
            .filter_map(|mut d| d.remove("_id"))
            .collect())
    }

    async fn delete_audit_events(&self, ids: &[Bson]) -> Result<u64> {
        self.audit()
            .delete_many(doc! {"_id": {"$in": ids}})
            .await
            .map(|r| r.deleted_count)
            .map_err(self.failed("delete (archived events)"))
    }

    async fn archivable_span(
        &self,
        cutoff: DateTime<Utc>,
        written_before: Option<ObjectId>,
    ) -> Result<EventSpan> {
        let filter = archivable_filter(cutoff, written_before);
        let count = self
            .audit()
            .count_documents(filter.clone())
            .await
            .map_err(self.failed("count (events to archive)"))?;
        let (oldest, newest) = timestamp_extremes(&self.audit(), filter)
            .await
            .map_err(self.failed("find (events to archive)"))?;
        Ok(EventSpan {
            count,
            oldest,
            newest,
        })
    }

    async fn archive_span(&self) -> Result<EventSpan> {
        let count = self
            .archive()
            .estimated_document_count()
            .await
            .map_err(self.failed("count (archive)"))?;
        let (oldest, newest) = timestamp_extremes(&self.archive(), doc! {})
            .await
            .map_err(self.failed("find (archive)"))?;
        Ok(EventSpan {
            count,
            oldest,
            newest,
        })
    }

    async fn drop_archived_before(&self, before: DateTime<Utc>) -> Result<u64> {
        // Recorded first: the guard refuses those windows before their events disappear.
        self.archive_record()
            .update_one(
                doc! {"_id": ARCHIVE_STATE_ID},
                doc! {"$max": {"droppedBefore": bson_date(before)}},
            )
            .upsert(true)
            .await
            .map_err(self.failed("update (archive state)"))?;
        self.archive()
            .delete_many(doc! {"timestamp": {"$lt": bson_date(before)}})
            .await
            .map(|r| r.deleted_count)
            .map_err(self.failed("delete (dropped archive events)"))
    }

    async fn oldest_audit_event(&self) -> Result<Option<DateTime<Utc>>> {
        let found = self
            .audit()
            .find_one(doc! {"timestamp": {"$type": "date"}})
            .sort(doc! {"timestamp": 1})
            .projection(doc! {"_id": 0, "timestamp": 1})
            .await
            .map_err(self.failed("find (oldest audit event)"))?;
        Ok(found.and_then(|d| match d.get("timestamp") {
            Some(Bson::DateTime(t)) => Some(t.to_chrono()),
            _ => None,
        }))
    }
}

/// The audit events an archive run may take: timestamped before `cutoff` and, with
/// `written_before`, written before it (see [`ArchiveStore::archivable`]).
fn archivable_filter(cutoff: DateTime<Utc>, written_before: Option<ObjectId>) -> Document {
    let mut filter = doc! {"timestamp": {"$lt": bson_date(cutoff)}};
    if let Some(id) = written_before {
        // An `_id` that is not an ObjectId tells no write time: no late-event scan ever reads
        // it, so nothing is gained by keeping it back.
        filter.insert(
            "$or",
            vec![
                doc! {"_id": {"$lt": id}},
                doc! {"_id": {"$not": {"$type": "objectId"}}},
            ],
        );
    }
    filter
}

/// The oldest and newest date `timestamp` among the documents matching `filter`, along the
/// timestamp index (two single-document reads).
async fn timestamp_extremes(
    collection: &mongodb::Collection<Document>,
    filter: Document,
) -> mongodb::error::Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
    let mut ends = [None, None];
    for (end, direction) in ends.iter_mut().zip([1, -1]) {
        let mut dated = filter.clone();
        // Only dates: a malformed timestamp (a string, an array) sorts elsewhere.
        dated.insert("timestamp", merge_type(filter.get("timestamp")));
        let found = collection
            .find_one(dated)
            .sort(doc! {"timestamp": direction})
            .projection(doc! {"_id": 0, "timestamp": 1})
            .await?;
        *end = found.and_then(|d| match d.get("timestamp") {
            Some(Bson::DateTime(t)) => Some(t.to_chrono()),
            _ => None,
        });
    }
    Ok((ends[0], ends[1]))
}

/// A `timestamp` condition that also requires a date.
fn merge_type(condition: Option<&Bson>) -> Bson {
    let mut c = match condition {
        Some(Bson::Document(c)) => c.clone(),
        _ => Document::new(),
    };
    c.insert("$type", "date");
    Bson::Document(c)
}
