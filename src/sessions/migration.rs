//! The schema's data migration "add video call fields", as a named, recorded migration.
//!
//! 1. Sessions without `isVideoCall` get `callDuration: 0`, `accessCount: 0`,
//!    `lastAccessedAt: <run time>` and `isVideoCall: true` — each only where the field is
//!    missing, never replacing a value, and `isVideoCall` last: a batch interrupted before it is
//!    found again by the next run and finished.
//! 2. Confirmed sessions without a `meetingLink` (missing or null) get
//!    `room-<session id in hex>-<epoch ms>`, only where there is still none.
//!
//! Both steps work in batches of `_id`s taken in `_id` order, so a run can be killed at any
//! point and re-run: what is done stays done (it no longer matches), what is not is found again.
//! The state collection records the run (`{_id: "migration:<name>"}`: started, applied, by which
//! version, what changed); a second run says "already applied" unless forced.

use std::collections::BTreeMap;

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};

/// The one data migration vcmetrics knows.
pub const ADD_VIDEO_CALL_FIELDS: &str = "add-video-call-fields";

/// Sessions step 1 applies to (the schema's own filter).
pub fn without_video_fields() -> Document {
    doc! {"isVideoCall": {"$exists": false}}
}

/// Sessions step 2 applies to: Confirmed, no link, and an ObjectId `_id` (the link is made of
/// it; other `_id`s are counted and left alone).
pub fn confirmed_without_link() -> Document {
    doc! {"status": "Confirmed", "meetingLink": null, "_id": {"$type": "objectId"}}
}

/// Confirmed sessions without a link whose `_id` is not an ObjectId (no link can be made).
pub fn confirmed_without_link_nor_object_id() -> Document {
    doc! {"status": "Confirmed", "meetingLink": null, "_id": {"$not": {"$type": "objectId"}}}
}

/// The fields of step 1 and their values, in the order they are set (`isVideoCall` last).
pub fn video_call_fields(now: DateTime<Utc>) -> [(&'static str, Bson); 4] {
    [
        ("callDuration", Bson::Int32(0)),
        ("accessCount", Bson::Int32(0)),
        (
            "lastAccessedAt",
            Bson::DateTime(bson::DateTime::from_chrono(now)),
        ),
        ("isVideoCall", Bson::Boolean(true)),
    ]
}

/// What a run changed (or, dry, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Per field of step 1: sessions that got it.
    pub fields: BTreeMap<&'static str, u64>,
    /// Step 2: sessions that got a meeting link.
    pub links: u64,
    /// Confirmed sessions without a link left alone: their `_id` is not an ObjectId.
    pub links_impossible: u64,
}

impl Changes {
    pub fn to_document(&self) -> Document {
        let mut fields = Document::new();
        for (k, v) in &self.fields {
            fields.insert(*k, i64::try_from(*v).unwrap_or(i64::MAX));
        }
        doc! {
            "fields": fields,
            "meetingLinks": i64::try_from(self.links).unwrap_or(i64::MAX),
            "meetingLinksImpossible": i64::try_from(self.links_impossible).unwrap_or(i64::MAX),
        }
    }

    /// One line per step, for people.
    pub fn describe(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would get" } else { "got" };
        let fields: Vec<String> = [
            "isVideoCall",
            "callDuration",
            "accessCount",
            "lastAccessedAt",
        ]
        .iter()
        .map(|f| format!("{f} {}", self.fields.get(f).copied().unwrap_or(0)))
        .collect();
        let mut text = format!(
            "step 1, sessions without isVideoCall: {} {verb} the video-call fields ({})\n\
             step 2, Confirmed sessions without a meetingLink: {} {verb} one",
            self.fields.get("isVideoCall").copied().unwrap_or(0),
            fields.join(", "),
            self.links
        );
        if self.links_impossible > 0 {
            text += &format!(
                "\n        {} more have an _id that is not an ObjectId: left without a link",
                self.links_impossible
            );
        }
        text
    }
}

/// The state document's `_id` for a migration.
pub fn record_id(name: &str) -> String {
    format!("migration:{name}")
}

/// What the state collection says about a migration.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    NeverRun,
    /// Started and not finished (killed, or failed): a run goes on from where it is.
    Started {
        at: DateTime<Utc>,
        version: String,
    },
    Applied {
        at: DateTime<Utc>,
        version: String,
    },
}

impl Record {
    pub fn from_document(d: Option<&Document>) -> Record {
        let Some(d) = d else {
            return Record::NeverRun;
        };
        let version = d.get_str("version").unwrap_or("?").to_owned();
        match (
            d.get_str("state"),
            d.get_datetime("appliedAt"),
            d.get_datetime("startedAt"),
        ) {
            (Ok("applied"), Ok(at), _) => Record::Applied {
                at: at.to_chrono(),
                version,
            },
            (_, _, Ok(at)) => Record::Started {
                at: at.to_chrono(),
                version,
            },
            _ => Record::Started {
                at: DateTime::<Utc>::UNIX_EPOCH,
                version,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_video_call_is_set_last() {
        let fields = video_call_fields(Utc::now());
        assert_eq!(fields.last().unwrap().0, "isVideoCall");
        assert_eq!(fields.len(), 4);
    }

    #[test]
    fn records_read_back() {
        let t = bson::DateTime::from_millis(1_700_000_000_000);
        assert_eq!(Record::from_document(None), Record::NeverRun);
        assert_eq!(
            Record::from_document(Some(
                &doc! {"state": "applied", "appliedAt": t, "startedAt": t, "version": "0.1.0"}
            )),
            Record::Applied {
                at: t.to_chrono(),
                version: "0.1.0".into()
            }
        );
        assert_eq!(
            Record::from_document(Some(
                &doc! {"state": "started", "startedAt": t, "version": "0.1.0"}
            )),
            Record::Started {
                at: t.to_chrono(),
                version: "0.1.0".into()
            }
        );
    }

    #[test]
    fn changes_are_described_per_step() {
        let mut c = Changes::default();
        c.fields.insert("isVideoCall", 3);
        c.fields.insert("callDuration", 2);
        c.links = 4;
        let text = c.describe(true);
        assert!(
            text.contains("step 1, sessions without isVideoCall: 3 would get"),
            "{text}"
        );
        assert!(text.contains("callDuration 2, accessCount 0"), "{text}");
        assert!(
            text.contains("step 2, Confirmed sessions without a meetingLink: 4 would get one"),
            "{text}"
        );
        assert_eq!(
            c.to_document()
                .get_document("fields")
                .unwrap()
                .get_i64("isVideoCall")
                .unwrap(),
            3
        );
    }
}
