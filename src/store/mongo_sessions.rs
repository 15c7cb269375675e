//! The platform's sessions collection on MongoDB: the data migration's batches and its record
//! (`sessions::migration`), the rule checks, the live gauges' counts (`sessions::gauges`).

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;

use super::MongoStore;
use crate::error::{Error, Result};
use crate::sessions::gauges::{GaugeQueries, SessionGauges};
use crate::sessions::migration::{record_id, Changes, Record};
use crate::sessions::rules::{meeting_link_for, rule_count_pipeline, rule_stages, SessionRule};

impl MongoStore {
    fn sessions(&self) -> mongodb::Collection<Document> {
        self.database.collection(&self.sessions_collection)
    }

    fn state(&self) -> mongodb::Collection<Document> {
        self.database.collection(&self.state_collection)
    }

    /// Sessions matching `filter`.
    pub async fn count_sessions(&self, filter: Document) -> Result<u64> {
        self.sessions()
            .count_documents(filter)
            .await
            .map_err(self.failed("count (sessions)"))
    }

    /// The `_id`s of the first `limit` sessions matching `filter`, in `_id` order.
    pub async fn session_ids(&self, filter: Document, limit: usize) -> Result<Vec<Bson>> {
        let docs: Vec<Document> = self
            .sessions()
            .find(filter)
            .projection(doc! {"_id": 1})
            .sort(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(self.failed("find (sessions)"))?
            .try_collect()
            .await
            .map_err(self.failed("find (sessions)"))?;
        Ok(ids(docs))
    }

    async fn aggregate_sessions(&self, pipeline: Vec<Document>) -> Result<Vec<Document>> {
        self.sessions()
            .aggregate(pipeline)
            .await
            .map_err(self.failed("aggregate (sessions)"))?
            .try_collect()
            .await
            .map_err(self.failed("aggregate (sessions)"))
    }

    /// Sets `field` to `value` on those of `ids` that do not have it; how many got it.
    pub async fn set_missing_field(&self, ids: &[Bson], field: &str, value: Bson) -> Result<u64> {
        let result = self
            .sessions()
            .update_many(
                doc! {"_id": {"$in": ids.to_vec()}, field: {"$exists": false}},
                doc! {"$set": {field: value}},
            )
            .await
            .map_err(self.failed("update (sessions)"))?;
        Ok(result.modified_count)
    }

    /// Gives each of `ids` (ObjectIds) its meeting link where it still has none; how many got one.
    pub async fn set_meeting_links(&self, ids: &[Bson], now: DateTime<Utc>) -> Result<u64> {
        let updates: Vec<Document> = ids
            .iter()
            .filter_map(Bson::as_object_id)
            .map(|id| {
                doc! {
                    "q": {"_id": id, "meetingLink": null},
                    "u": {"$set": {"meetingLink": meeting_link_for(id, now)}},
                }
            })
            .collect();
        if updates.is_empty() {
            return Ok(0);
        }
        let reply = self
            .database
            .run_command(
                doc! {"update": &self.sessions_collection, "updates": updates, "ordered": false},
            )
            .await
            .map_err(self.failed("update (meeting links)"))?;
        if let Ok(errors) = reply.get_array("writeErrors") {
            return Err(Error::MongoWrite {
                operation: "update (meeting links)",
                message: super::mongo::write_errors_text(errors),
            });
        }
        Ok(reply
            .get("nModified")
            .and_then(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)))
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    }

    /// Runs every query of a gauge refresh, one after the other (each is a count on an index).
    pub(super) async fn read_session_gauges(&self, q: &GaugeQueries) -> Result<SessionGauges> {
        let mut counts = Vec::new();
        for filter in q.upcoming.iter().chain(&q.by_status) {
            counts.push(self.count_sessions(filter.clone()).await?);
        }
        let by_status = counts.split_off(q.upcoming.len());
        let mut rules = Vec::new();
        for pipeline in &q.rules {
            rules.push(self.count_of(pipeline).await?);
        }
        Ok(SessionGauges {
            active: self.count_sessions(q.active.clone()).await?,
            stuck: self.count_sessions(q.stuck.clone()).await?,
            upcoming: counts,
            by_status,
            confirmed_without_link: self
                .count_sessions(q.confirmed_without_link.clone())
                .await?,
            rules,
        })
    }

    /// The `n` of a pipeline ending in `{$count: "n"}` (0 when nothing matched).
    async fn count_of(&self, pipeline: &[Document]) -> Result<u64> {
        let docs = self.aggregate_sessions(pipeline.to_vec()).await?;
        Ok(docs
            .first()
            .and_then(|d| d.get("n"))
            .and_then(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)))
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    }

    /// Sessions with `sessionDate` in `[from, to)` that break `rule`: how many, and the first
    /// `limit` `_id`s (in `_id` order).
    pub async fn session_rule_violations(
        &self,
        rule: SessionRule,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Result<(u64, Vec<Bson>)> {
        let count = self.count_of(&rule_count_pipeline(rule, from, to)).await?;
        let mut listing = rule_stages(rule, from, to);
        listing.extend([
            doc! {"$sort": {"_id": 1}},
            doc! {"$limit": i64::try_from(limit).unwrap_or(i64::MAX)},
            doc! {"$project": {"_id": 1}},
        ]);
        Ok((count, ids(self.aggregate_sessions(listing).await?)))
    }

    /// What the state collection says about a migration.
    pub async fn migration_record(&self, name: &str) -> Result<Record> {
        let d = self
            .state()
            .find_one(doc! {"_id": record_id(name)})
            .await
            .map_err(self.failed("find (migration record)"))?;
        Ok(Record::from_document(d.as_ref()))
    }

    /// Records that a run of the migration started (keeping an earlier start's time).
    pub async fn record_migration_started(&self, name: &str, now: DateTime<Utc>) -> Result<()> {
        self.state()
            .update_one(
                doc! {"_id": record_id(name)},
                doc! {
                    "$set": {"state": "started", "startedAt": bson::DateTime::from_chrono(now),
                             "version": env!("CARGO_PKG_VERSION")},
                    "$unset": {"appliedAt": ""},
                },
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(self.failed("update (migration record)"))
    }

    /// Records that the migration finished, and what it changed.
    pub async fn record_migration_applied(
        &self,
        name: &str,
        now: DateTime<Utc>,
        changes: &Changes,
    ) -> Result<()> {
        self.state()
            .update_one(
                doc! {"_id": record_id(name)},
                doc! {"$set": {
                    "state": "applied",
                    "appliedAt": bson::DateTime::from_chrono(now),
                    "version": env!("CARGO_PKG_VERSION"),
                    "changed": changes.to_document(),
                }},
            )
            .upsert(true)
            .await
            .map(drop)
            .map_err(self.failed("update (migration record)"))
    }
}

/// The `_id`s of the documents.
fn ids(docs: Vec<Document>) -> Vec<Bson> {
    docs.into_iter()
        .filter_map(|mut d| d.remove("_id"))
        .collect()
}
