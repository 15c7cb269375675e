//! Finding late events by when they were written: `pipelines/late_windows.json`.
//!
//! The platform's audit documents have ObjectId `_id`s, made by the writer when it creates the
//! document; their first four bytes are its clock in seconds. An `_id` range is an index range
//! scan on the index every collection has. The scan takes the events written in
//! `[since, until)` — at most `limit` of them, in `_id` order — and returns, instead of the
//! events, one document per 15-minute bucket of the `timestamp`s that lie before `before` (every
//! zone offset is a multiple of 15 minutes, so a bucket lies in exactly one window of every
//! period), plus one for everything else scanned; each with the count, the first and last `_id`
//! and the oldest timestamp. Pure: builds the command and reads its answer.

use bson::oid::ObjectId;
use bson::{Bson, Document};
use chrono::{DateTime, Utc};

use super::commands::{AggregateCommand, Target};
use crate::pipeline_files::{stages, PipelineError};

/// `pipelines/late_windows.json`.
pub const LATE_WINDOWS_PIPELINE: &str = include_str!("../../pipelines/late_windows.json");

/// The bucket width: 15 minutes, which every UTC offset in the tz database divides.
pub const BUCKET_MS: i64 = 900_000;

/// One scan's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateScan {
    /// The first `_id` to look at (inclusive): the stored high-water mark.
    pub since: ObjectId,
    /// The first `_id` not to look at: the daemon's clock minus the settling time.
    pub until: ObjectId,
    /// Events timestamped before this are late: the start of the run's first window.
    pub before: DateTime<Utc>,
    /// At most this many events are scanned.
    pub limit: usize,
}

/// Late events in one 15-minute bucket of `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateBucket {
    pub start: DateTime<Utc>,
    pub events: u64,
    /// The smallest `_id` among them: where a scan cut before this bucket resumes.
    pub first_id: ObjectId,
    pub oldest: DateTime<Utc>,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LateScanResult {
    /// Events scanned (late or not); equal to the limit when the scan was cut short.
    pub scanned: u64,
    /// The largest `_id` scanned.
    pub last_id: Option<ObjectId>,
    /// Oldest bucket first.
    pub buckets: Vec<LateBucket>,
}

/// The ObjectId that sorts before every ObjectId made at `t` or later, and after all made
/// earlier (its counter and random bytes are zero). Instants before 1970 or after 2106 are
/// clamped to the ObjectId range.
pub fn object_id_at(t: DateTime<Utc>) -> ObjectId {
    let seconds = u32::try_from(t.timestamp().max(0)).unwrap_or(u32::MAX);
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&seconds.to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// The next ObjectId in sort order (the 12 bytes as one big-endian number plus one); `None`
/// after the largest.
pub fn next_object_id(id: ObjectId) -> Option<ObjectId> {
    let value = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[4..].copy_from_slice(&id.bytes());
        b
    });
    let next = value.checked_add(1).filter(|v| *v < (1u128 << 96))?;
    let mut bytes = [0u8; 12];
    bytes.copy_from_slice(&next.to_be_bytes()[4..]);
    Some(ObjectId::from_bytes(bytes))
}

impl LateScan {
    /// The aggregate on the audit log.
    pub fn command(&self, target: &Target<'_>) -> Result<AggregateCommand, PipelineError> {
        let limit = i64::try_from(self.limit).unwrap_or(i64::MAX);
        let pipeline = stages(
            "pipelines/late_windows.json",
            LATE_WINDOWS_PIPELINE,
            &[
                ("since", Bson::ObjectId(self.since)),
                ("until", Bson::ObjectId(self.until)),
                (
                    "before",
                    Bson::DateTime(bson::DateTime::from_chrono(self.before)),
                ),
                ("limit", Bson::Int64(limit)),
            ],
        )?;
        Ok(AggregateCommand {
            database: target.database.to_owned(),
            collection: target.audit_collection.to_owned(),
            pipeline,
            time_limit: target.time_limit,
        })
    }
}

/// A scan and the command that performs it: what the store runs.
#[derive(Debug, Clone, PartialEq)]
pub struct LateScanQuery {
    pub scan: LateScan,
    pub command: AggregateCommand,
}

impl LateScanQuery {
    pub fn new(scan: LateScan, target: &Target<'_>) -> Result<Self, PipelineError> {
        Ok(LateScanQuery {
            command: scan.command(target)?,
            scan,
        })
    }
}

/// The scan's answer did not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the late-event scan returned an unexpected document: {0}")]
pub struct BadScanDocument(pub String);

impl LateScanResult {
    /// Reads the scan's documents.
    pub fn from_documents(docs: &[Document]) -> Result<LateScanResult, BadScanDocument> {
        let bad = |d: &Document| BadScanDocument(d.to_string());
        let mut result = LateScanResult::default();
        for d in docs {
            let events = number(d.get("events")).ok_or_else(|| bad(d))?;
            let events = u64::try_from(events).map_err(|_| bad(d))?;
            let first_id = d.get_object_id("firstId").map_err(|_| bad(d))?;
            let last_id = d.get_object_id("lastId").map_err(|_| bad(d))?;
            result.scanned += events;
            result.last_id = result.last_id.max(Some(last_id));
            let start = match d.get("_id") {
                Some(Bson::Null) | None => continue,
                other => number(other)
                    .and_then(DateTime::<Utc>::from_timestamp_millis)
                    .ok_or_else(|| bad(d))?,
            };
            let oldest = match d.get("oldest") {
                Some(Bson::DateTime(t)) => t.to_chrono(),
                _ => start,
            };
            result.buckets.push(LateBucket {
                start,
                events,
                first_id,
                oldest,
            });
        }
        result.buckets.sort_by_key(|b| b.start);
        Ok(result)
    }
}

fn number(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        // Whole numbers only: a bucket start or a count.
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn object_ids_at_an_instant_bound_the_ids_made_then() {
        let t = utc("2026-03-10T12:00:00Z");
        let at = object_id_at(t);
        assert_eq!(at.timestamp().to_chrono(), t);
        let made_then = ObjectId::from_bytes({
            let mut b = at.bytes();
            b[11] = 1;
            b
        });
        assert!(at < made_then && made_then < object_id_at(t + chrono::Duration::seconds(1)));
        assert_eq!(next_object_id(at), Some(made_then));
        let carry =
            ObjectId::from_bytes([0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            next_object_id(carry).unwrap().bytes(),
            [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(next_object_id(ObjectId::from_bytes([0xff; 12])), None);
        assert_eq!(object_id_at(utc("1969-01-01T00:00:00Z")).bytes(), [0; 12]);
    }

    #[test]
    fn the_command_scans_an_id_range_on_the_audit_log_with_every_bound() {
        let config = crate::config::from_toml("database = \"platform\"", &[]).unwrap();
        let scan = LateScan {
            since: object_id_at(utc("2026-03-10T11:00:00Z")),
            until: object_id_at(utc("2026-03-10T11:59:00Z")),
            before: utc("2026-03-10T09:00:00Z"),
            limit: 1000,
        };
        let command = scan.command(&Target::of(&config)).unwrap();
        assert_eq!(command.collection, "videocallauditlogs");
        assert!(!command.writes());
        assert_eq!(
            command.pipeline[0],
            doc! {"$match": {"_id": {"$gte": scan.since, "$lt": scan.until}}}
        );
        assert_eq!(command.pipeline[1], doc! {"$sort": {"_id": 1}});
        assert_eq!(command.pipeline[2], doc! {"$limit": 1000_i64});
        let group = Bson::Document(command.pipeline[3].clone()).into_relaxed_extjson();
        assert!(
            group.to_string().contains("2026-03-10T09:00:00Z"),
            "{group}"
        );
    }

    #[test]
    fn the_answer_gives_buckets_oldest_first_and_counts_everything_scanned() {
        let (a, b, c) = (
            object_id_at(utc("2026-03-10T11:00:00Z")),
            object_id_at(utc("2026-03-10T11:10:00Z")),
            object_id_at(utc("2026-03-10T11:20:00Z")),
        );
        let late = utc("2026-03-09T10:15:00Z");
        let docs = [
            doc! {"_id": null, "events": 7, "firstId": a, "lastId": c, "oldest": null},
            doc! {"_id": late.timestamp_millis(), "events": 2_i64, "firstId": b, "lastId": b,
            "oldest": bson::DateTime::from_chrono(late + chrono::Duration::minutes(3))},
            doc! {"_id": 0.0, "events": 1, "firstId": a, "lastId": a, "oldest": bson::DateTime::from_millis(5)},
        ];
        let r = LateScanResult::from_documents(&docs).unwrap();
        assert_eq!(r.scanned, 10);
        assert_eq!(r.last_id, Some(c));
        assert_eq!(r.buckets.len(), 2);
        assert_eq!(r.buckets[0].start, DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(r.buckets[1].start, late);
        assert_eq!(r.buckets[1].events, 2);
        assert_eq!(r.buckets[1].first_id, b);
        assert_eq!(r.buckets[1].oldest, late + chrono::Duration::minutes(3));
        assert!(LateScanResult::from_documents(&[
            doc! {"_id": "x", "events": 1, "firstId": a, "lastId": a}
        ])
        .is_err());
        assert!(LateScanResult::from_documents(&[doc! {"_id": null, "events": 1}]).is_err());
        assert_eq!(
            LateScanResult::from_documents(&[]).unwrap(),
            LateScanResult::default()
        );
    }
}
