//! The schema's validation rules for sessions, as checks and as server-side expressions:
//!
//! - **call duration**: a session whose `videoCallStarted` and `videoCallEnded` are both dates
//!   must have a numeric `callDuration` (minutes) within one minute of the rounded minutes
//!   between them (the schema's pre-save hook: `Math.abs(callDuration - duration) > 1` is an
//!   error). A missing or non-numeric `callDuration` on an ended call breaks the rule too.
//! - **meeting link**: a `meetingLink` that is set (not missing, not null) must be a string
//!   matching `^room-[a-f0-9-]+$`.
//!
//! The expressions evaluate safely whichever branches an engine evaluates (DocumentDB 0.108
//! evaluates both branches of `$cond`): no operator ever sees a value of the wrong type.

use bson::{doc, oid::ObjectId, Bson, Document};
use chrono::{DateTime, Utc};

/// The schema's meeting-link format.
pub const MEETING_LINK_PATTERN: &str = "^room-[a-f0-9-]+$";

/// The rules, in the order they are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionRule {
    CallDuration,
    MeetingLink,
}

impl SessionRule {
    pub const ALL: [SessionRule; 2] = [SessionRule::CallDuration, SessionRule::MeetingLink];

    /// The label and the name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionRule::CallDuration => "call_duration",
            SessionRule::MeetingLink => "meeting_link",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            SessionRule::CallDuration => {
                "callDuration differs from videoCallEnded - videoCallStarted by more than a minute"
            }
            SessionRule::MeetingLink => "meetingLink does not match ^room-[a-f0-9-]+$",
        }
    }

    /// An aggregation expression, true for a session that breaks the rule.
    pub fn broken_expression(self) -> Bson {
        match self {
            SessionRule::CallDuration => call_duration_broken(),
            SessionRule::MeetingLink => meeting_link_broken(),
        }
    }
}

/// `field` when it is a date, else null: safe input for date arithmetic.
fn date_or_null(field: &str) -> Bson {
    let path = format!("${field}");
    bson::bson!({"$cond": [{"$eq": [{"$type": &path}, "date"]}, &path, null]})
}

fn call_duration_broken() -> Bson {
    // Math.round, as the schema's hook: half up (`$round` would round half to even).
    let minutes = bson::bson!({"$floor": {"$add": [{"$divide": [
        {"$subtract": [date_or_null("videoCallEnded"), date_or_null("videoCallStarted")]},
        60000
    ]}, 0.5]}});
    // A number, or 0 in place of anything else (never used then: the type test decides first).
    let duration = bson::bson!({"$cond": [
        {"$in": [{"$type": "$callDuration"}, ["int", "long", "double", "decimal"]]},
        "$callDuration",
        0
    ]});
    bson::bson!({"$and": [
        {"$eq": [{"$type": "$videoCallStarted"}, "date"]},
        {"$eq": [{"$type": "$videoCallEnded"}, "date"]},
        {"$or": [
            {"$not": [{"$in": [{"$type": "$callDuration"}, ["int", "long", "double", "decimal"]]}]},
            {"$gt": [{"$abs": {"$subtract": [duration, minutes]}}, 1]}
        ]}
    ]})
}

fn meeting_link_broken() -> Bson {
    let text = bson::bson!({"$cond": [{"$eq": [{"$type": "$meetingLink"}, "string"]}, "$meetingLink", ""]});
    bson::bson!({"$and": [
        {"$not": [{"$in": [{"$type": "$meetingLink"}, ["missing", "null"]]}]},
        {"$or": [
            {"$ne": [{"$type": "$meetingLink"}, "string"]},
            {"$not": [{"$regexMatch": {"input": text.clone(), "regex": MEETING_LINK_PATTERN}}]},
            // PCRE's `$` also matches before a final newline; JavaScript's does not.
            {"$regexMatch": {"input": text, "regex": "\n"}}
        ]}
    ]})
}

/// The same rule in Rust, for a session read back (tests, and the reference for the expression).
pub fn call_duration_broken_at(
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
    call_duration: Option<f64>,
) -> bool {
    // Math.round: half up.
    let minutes = ((ended - started).num_milliseconds() as f64 / 60_000.0 + 0.5).floor();
    match call_duration {
        None => true,
        Some(d) => (d - minutes).abs() > 1.0,
    }
}

/// Whether a meeting link has the schema's format.
pub fn link_is_valid(link: &str) -> bool {
    link.strip_prefix("room-").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
    })
}

/// The link the schema gives a Confirmed session without one: `room-<id in hex>-<epoch ms>`.
pub fn meeting_link_for(id: ObjectId, at: DateTime<Utc>) -> String {
    format!("room-{}-{}", id.to_hex(), at.timestamp_millis())
}

/// The schema's six statuses.
pub const STATUSES: [&str; 6] = [
    "Pending",
    "Confirmed",
    "In Progress",
    "Completed",
    "Cancelled",
    "Declined",
];

/// The sessions with `sessionDate` in `[from, to)` that break `rule`, counted into `{n}`.
pub fn rule_count_pipeline(
    rule: SessionRule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Document> {
    let mut stages = rule_stages(rule, from, to);
    stages.push(doc! {"$count": "n"});
    stages
}

/// The stages that keep the sessions with `sessionDate` in `[from, to)` that break `rule`.
pub fn rule_stages(rule: SessionRule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Document> {
    vec![
        doc! {"$match": session_date_filter(from, to)},
        doc! {"$match": {"$expr": rule.broken_expression()}},
    ]
}

/// Sessions whose `sessionDate` is in `[from, to)`, written so that the `{status: 1,
/// sessionDate: 1}` index serves it (the schema has no index on `sessionDate` alone): the six
/// statuses, and everything else, each with the date range.
pub fn session_date_filter(from: DateTime<Utc>, to: DateTime<Utc>) -> Document {
    let range = doc! {
        "$gte": bson::DateTime::from_chrono(from),
        "$lt": bson::DateTime::from_chrono(to),
    };
    doc! {"$or": [
        {"status": {"$in": STATUSES.to_vec()}, "sessionDate": range.clone()},
        {"status": {"$nin": STATUSES.to_vec()}, "sessionDate": range},
    ]}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_link_format_is_the_schema_s() {
        let id = ObjectId::parse_str("650000000000000000000abc").unwrap();
        let link = meeting_link_for(id, utc("2026-03-01T10:00:00Z"));
        assert_eq!(link, "room-650000000000000000000abc-1772359200000");
        assert!(link_is_valid(&link));
        for bad in [
            "room-",
            "room-ABC",
            "room-12_3",
            "Room-123",
            "room-12 3",
            "",
            "https://x/room-1",
            "room-g1",
        ] {
            assert!(!link_is_valid(bad), "{bad}");
        }
        assert!(link_is_valid("room-1-2-abc"));
    }

    #[test]
    fn the_duration_rule_allows_one_minute_of_rounding() {
        let s = utc("2026-03-01T10:00:00Z");
        let e = utc("2026-03-01T10:45:29Z"); // 45.48 minutes: rounds to 45
        assert!(!call_duration_broken_at(s, e, Some(45.0)));
        assert!(!call_duration_broken_at(s, e, Some(46.0)));
        assert!(!call_duration_broken_at(s, e, Some(44.0)));
        assert!(call_duration_broken_at(s, e, Some(46.5)));
        assert!(call_duration_broken_at(s, e, Some(0.0)));
        assert!(call_duration_broken_at(s, e, None));
    }

    #[test]
    fn the_date_filter_keeps_the_status_prefix_for_the_index() {
        let f = session_date_filter(utc("2026-03-01T00:00:00Z"), utc("2026-03-08T00:00:00Z"));
        let branches = f.get_array("$or").unwrap();
        assert_eq!(branches.len(), 2);
        for b in branches {
            let b = b.as_document().unwrap();
            assert_eq!(b.keys().collect::<Vec<_>>(), ["status", "sessionDate"]);
        }
    }
}
