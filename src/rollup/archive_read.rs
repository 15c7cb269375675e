//! Chunks whose events `vcmetrics archive` may have moved: their scans read the archive too.

use bson::{doc, oid::ObjectId, Bson, Document};
use chrono::{DateTime, Utc};

use super::commands::{AggregateCommand, Target};
use crate::archive::state::ArchiveRead;
use crate::pipeline_files::PipelineError;

/// Where a chunk's scans find the archive's events: the archive itself when it shares the audit
/// log's database, else their copy in the staging collection (made by `bring`).
pub(super) struct ArchiveSource {
    pub collection: String,
    /// What the archive side matches besides the scan's own `$match`.
    pub only: Document,
    /// The copy of an archive in another database, and the run id its copies are staged under.
    pub bring: Option<(AggregateCommand, ObjectId)>,
}

pub(super) fn archive_source(
    target: &Target<'_>,
    counts: &[Document],
    read: &ArchiveRead,
    now: DateTime<Utc>,
) -> Result<ArchiveSource, PipelineError> {
    let mut only = Document::new();
    if !read.except_archive.is_empty() {
        only.insert("_id", doc! {"$nin": read.except_archive.clone()});
    }
    if target.archive_database == target.database {
        return Ok(ArchiveSource {
            collection: target.archive_collection.to_owned(),
            only,
            bring: None,
        });
    }
    // The chunk's timestamp range, exactly as the scans match it.
    let range = first_match(counts, "pipelines/rollup_counts.json")?
        .get("timestamp")
        .cloned()
        .ok_or(PipelineError::Shape {
            file: "pipelines/rollup_counts.json",
            expected: "a first $match on timestamp",
        })?;
    let bring_run = ObjectId::new();
    let mut wanted = only;
    wanted.insert("timestamp", range);
    let pipeline = vec![
        doc! {"$match": wanted},
        // A staged copy is keyed by this chunk's copy id, so concurrent runs never share one;
        // `at` lets the staging collection's TTL remove copies a dead run left behind.
        doc! {"$set": {"_id": {"r": bring_run, "e": "$_id"}, "at": date(now)}},
        doc! {"$merge": {
            "into": {"db": target.database, "coll": target.staging_collection},
            "on": "_id",
            "whenMatched": "keepExisting",
            "whenNotMatched": "insert",
        }},
    ];
    Ok(ArchiveSource {
        collection: target.staging_collection.to_owned(),
        only: doc! {"_id.r": bring_run},
        bring: Some((
            AggregateCommand {
                database: target.archive_database.to_owned(),
                collection: target.archive_collection.to_owned(),
                pipeline,
                time_limit: target.time_limit,
            },
            bring_run,
        )),
    })
}

/// The first stage's `$match` of a scan.
fn first_match<'d>(
    scan: &'d [Document],
    file: &'static str,
) -> Result<&'d Document, PipelineError> {
    scan.first()
        .and_then(|stage| stage.get_document("$match").ok())
        .ok_or(PipelineError::Shape {
            file,
            expected: "a pipeline starting with $match",
        })
}

/// Makes a scan read the archive too: its first `$match` leaves out the audit log's side of a
/// batch being deleted, and a `$unionWith` right after it adds the archive's events that pass
/// the same `$match` (the same indexed timestamp range), leaving out a batch being copied. The
/// stages after see one stream, each event once.
pub(super) fn read_archive_too(
    scan: &mut Vec<Document>,
    read: &ArchiveRead,
    archive_collection: &str,
    only: &Document,
) -> Result<(), PipelineError> {
    let file = "pipelines/rollup_*.json";
    let mut archive_match = first_match(scan, file)?.clone();
    archive_match.extend(only.clone());
    if !read.except_audit.is_empty() {
        if let Some(Bson::Document(first)) = scan[0].get_mut("$match") {
            first.insert("_id", doc! {"$nin": read.except_audit.clone()});
        }
    }
    scan.insert(
        1,
        doc! {"$unionWith": {
            "coll": archive_collection,
            "pipeline": [{"$match": archive_match}],
        }},
    );
    Ok(())
}

fn date(t: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_chrono(t))
}
