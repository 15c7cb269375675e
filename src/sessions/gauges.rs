//! The live session gauges: the schema's query patterns, counted (never listed), each a filter
//! an index of the sessions collection serves.
//!
//! | gauge | filter | index |
//! |---|---|---|
//! | active calls | `status: "In Progress"`, `videoCallStarted` set, `videoCallEnded: null` (the schema's "find active video calls") | `{status, sessionDate}` or `{videoCallStarted}` |
//! | stuck calls | the same, started before now − `stuck_call_after` | the same |
//! | upcoming within 1 h / 24 h / 7 d | `status: "Confirmed"`, `isVideoCall: true`, `sessionDate` in `[now, now + d)` (the schema's "upcoming video sessions", for everyone) | `{status, sessionDate}` |
//! | sessions by status | each of the six statuses, and `$nin` them for `other` | `{status, sessionDate}` |
//! | Confirmed without a link | `status: "Confirmed"`, `isVideoCall: true`, `meetingLink: null` | `{status, sessionDate}` |
//! | rule violations | sessions with `sessionDate` in the last `session_rules_lookback`, broken rule as `$expr` | `{status, sessionDate}` (see [`session_date_filter`]) |

use std::time::Duration;

use bson::{doc, Document};
use chrono::{DateTime, Utc};

use super::rules::{rule_count_pipeline, SessionRule, STATUSES};

/// The upcoming-session horizons and their labels.
pub const UPCOMING: [(&str, Duration); 3] = [
    ("1h", Duration::from_secs(3600)),
    ("24h", Duration::from_secs(86_400)),
    ("7d", Duration::from_secs(7 * 86_400)),
];

/// The `status` label of each status (snake case), and `other`.
pub const STATUS_LABELS: [&str; 7] = [
    "pending",
    "confirmed",
    "in_progress",
    "completed",
    "cancelled",
    "declined",
    "other",
];

/// Every query of one refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeQueries {
    pub active: Document,
    pub stuck: Document,
    /// In the order of [`UPCOMING`].
    pub upcoming: Vec<Document>,
    /// In the order of [`STATUS_LABELS`].
    pub by_status: Vec<Document>,
    pub confirmed_without_link: Document,
    /// In the order of [`SessionRule::ALL`]: aggregation pipelines ending in `$count`.
    pub rules: Vec<Vec<Document>>,
}

fn date(t: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_chrono(t)
}

fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(3650))
}

fn earlier(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t - chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(3650))
}

impl GaugeQueries {
    pub fn at(now: DateTime<Utc>, stuck_after: Duration, rules_lookback: Duration) -> Self {
        let active = doc! {
            "status": "In Progress",
            "videoCallStarted": {"$ne": null},
            "videoCallEnded": null,
        };
        let stuck = doc! {
            "status": "In Progress",
            "videoCallStarted": {"$lt": date(earlier(now, stuck_after))},
            "videoCallEnded": null,
        };
        let upcoming = UPCOMING
            .iter()
            .map(|(_, within)| {
                doc! {
                    "status": "Confirmed",
                    "sessionDate": {"$gte": date(now), "$lt": date(later(now, *within))},
                    "isVideoCall": true,
                }
            })
            .collect();
        let mut by_status: Vec<Document> = STATUSES.iter().map(|s| doc! {"status": *s}).collect();
        by_status.push(doc! {"status": {"$nin": STATUSES.to_vec()}});
        let rules = SessionRule::ALL
            .iter()
            .map(|rule| rule_count_pipeline(*rule, earlier(now, rules_lookback), now))
            .collect();
        GaugeQueries {
            active,
            stuck,
            upcoming,
            by_status,
            confirmed_without_link: doc! {
                "status": "Confirmed",
                "isVideoCall": true,
                "meetingLink": null,
            },
            rules,
        }
    }

    /// Every count filter with its gauge's name, for plans and tests (the rule pipelines apart).
    pub fn filters(&self) -> Vec<(String, &Document)> {
        let mut out = vec![
            ("active".to_owned(), &self.active),
            ("stuck".to_owned(), &self.stuck),
            ("without_link".to_owned(), &self.confirmed_without_link),
        ];
        for ((label, _), f) in UPCOMING.iter().zip(&self.upcoming) {
            out.push((format!("upcoming_{label}"), f));
        }
        for (label, f) in STATUS_LABELS.iter().zip(&self.by_status) {
            out.push((format!("status_{label}"), f));
        }
        out
    }
}

/// One refresh's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionGauges {
    pub active: u64,
    pub stuck: u64,
    /// In the order of [`UPCOMING`].
    pub upcoming: Vec<u64>,
    /// In the order of [`STATUS_LABELS`].
    pub by_status: Vec<u64>,
    pub confirmed_without_link: u64,
    /// In the order of [`SessionRule::ALL`].
    pub rules: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_queries_are_the_schema_s_patterns_at_a_pinned_now() {
        let now = utc("2026-03-10T12:00:00Z");
        let q = GaugeQueries::at(
            now,
            Duration::from_secs(4 * 3600),
            Duration::from_secs(7 * 86_400),
        );
        assert_eq!(
            q.stuck,
            doc! {"status": "In Progress", "videoCallStarted": {"$lt": date(utc("2026-03-10T08:00:00Z"))}, "videoCallEnded": null}
        );
        assert_eq!(
            q.upcoming[1],
            doc! {"status": "Confirmed", "sessionDate": {"$gte": date(now), "$lt": date(utc("2026-03-11T12:00:00Z"))}, "isVideoCall": true}
        );
        assert_eq!(q.by_status.len(), 7);
        assert_eq!(q.by_status[2], doc! {"status": "In Progress"});
        assert_eq!(q.rules.len(), 2);
        assert_eq!(q.filters().len(), 3 + 3 + 7);
        // Every filter leads with a field an index starts with.
        for (name, f) in q.filters() {
            let first = f.keys().next().unwrap();
            assert!(first == "status", "{name}: {f}");
        }
    }
}
