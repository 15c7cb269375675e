//! The metrics document: its fields, what each one means, and how two versions of it differ.
//!
//! The numbers themselves are computed by the `pipelines/rollup_*.json` files on the server; this module only
//! names the fields (`docs/metric-definitions.md`'s table is checked against this list), reads documents
//! back and compares them for `verify` and `recompute --dry-run`.

use std::collections::BTreeMap;
use std::fmt;

use bson::{Bson, Document};
use chrono::{DateTime, Utc};

use crate::window::Period;

/// How a field combines events; used to decide how exactly two values must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An integer count of events or users: must match exactly.
    Count,
    /// A sum or mean of event values (floating point): equal within a relative 1e-9, because
    /// the server may add doubles in a different order on another run.
    Measure,
}

#[derive(Debug, Clone, Copy)]
pub struct MetricField {
    pub name: &'static str,
    pub kind: FieldKind,
    pub meaning: &'static str,
}

const fn count(name: &'static str, meaning: &'static str) -> MetricField {
    MetricField {
        name,
        kind: FieldKind::Count,
        meaning,
    }
}

const fn measure(name: &'static str, meaning: &'static str) -> MetricField {
    MetricField {
        name,
        kind: FieldKind::Measure,
        meaning,
    }
}

/// Every numeric field of a metrics document, schema fields first, then vcmetrics' extras.
/// `errorCounts` (a map) is handled separately.
pub const FIELDS: &[MetricField] = &[
    count("totalAttempts", "events with action join_attempt"),
    count("successfulConnections", "events with action connection_established"),
    count("failedConnections", "events with action connection_failed"),
    count("totalCalls", "events with action call_start"),
    count("completedCalls", "events with action call_end"),
    measure("totalDuration", "sum of duration over call_end events whose duration is a number >= 0"),
    measure("averageDuration", "totalDuration / callsWithDuration; 0 when there are none"),
    measure("averageConnectionTime", "mean of metadata.connectionTime (ms) over connection_established events where it is a number >= 0; 0 when none"),
    count("uniqueUsers", "distinct non-null userId values among the window's counting events"),
    count("joinSuccesses", "events with action join_success"),
    count("joinDenials", "events with action join_denied"),
    count("permissionDenials", "events with action permission_denied"),
    count("errorsOccurred", "events with action error_occurred"),
    count("invalidEvents", "documents with a date timestamp in the window whose action is not one of the nine"),
    count("callsWithDuration", "call_end events that contributed to totalDuration"),
    measure("totalConnectionTime", "sum of metadata.connectionTime over the events averaged in averageConnectionTime"),
    count("connectionsWithTime", "connection_established events averaged in averageConnectionTime"),
    count("callEndsWithoutDuration", "call_end events without a duration > 0 (the schema requires one)"),
    count("errorsWithoutCode", "error_occurred events without an errorCode (a non-empty string; the schema requires one)"),
];

/// The name of the map field of error counts.
pub const ERROR_COUNTS: &str = "errorCounts";

/// One stored or computed metrics document, read leniently: a field that is missing or not a
/// number is absent, so a diff can say so instead of failing.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowMetrics {
    pub period: Option<Period>,
    pub date: DateTime<Utc>,
    pub values: BTreeMap<&'static str, f64>,
    pub error_counts: Option<BTreeMap<String, f64>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metrics document has no date `date` field: {0}")]
pub struct NoDate(pub String);

impl WindowMetrics {
    /// The document of a window without events: what the pipeline writes when nothing happened.
    pub fn zero(period: Period, date: DateTime<Utc>) -> Self {
        WindowMetrics {
            period: Some(period),
            date,
            values: FIELDS.iter().map(|f| (f.name, 0.0)).collect(),
            error_counts: Some(BTreeMap::new()),
            created_at: None,
            updated_at: None,
        }
    }

    pub fn from_document(doc: &Document) -> Result<Self, NoDate> {
        let date = match doc.get("date") {
            Some(Bson::DateTime(d)) => d.to_chrono(),
            _ => return Err(NoDate(doc.to_string())),
        };
        let values = FIELDS
            .iter()
            .filter_map(|f| doc.get(f.name).and_then(number).map(|v| (f.name, v)))
            .collect();
        let error_counts = doc.get_document(ERROR_COUNTS).ok().map(|m| {
            m.iter()
                .filter_map(|(k, v)| number(v).map(|v| (k.clone(), v)))
                .collect()
        });
        let instant = |key: &str| match doc.get(key) {
            Some(Bson::DateTime(d)) => Some(d.to_chrono()),
            _ => None,
        };
        Ok(WindowMetrics {
            period: doc.get_str("period").ok().and_then(|p| p.parse().ok()),
            date,
            values,
            error_counts,
            created_at: instant("createdAt"),
            updated_at: instant("updatedAt"),
        })
    }

    /// The computed fields where `self` (stored) and `computed` differ. `createdAt` and
    /// `updatedAt` are bookkeeping, not metrics, and are not compared.
    pub fn diff(&self, computed: &WindowMetrics) -> Vec<FieldDiff> {
        let mut diffs = Vec::new();
        for field in FIELDS {
            let (a, b) = (self.values.get(field.name), computed.values.get(field.name));
            let same = match (a, b) {
                (Some(a), Some(b)) => match field.kind {
                    FieldKind::Count => a == b,
                    FieldKind::Measure => approx_eq(*a, *b),
                },
                (None, None) => true,
                _ => false,
            };
            if !same {
                diffs.push(FieldDiff {
                    field: field.name.to_owned(),
                    stored: a.copied(),
                    computed: b.copied(),
                });
            }
        }
        let empty = BTreeMap::new();
        let stored_errors = self.error_counts.as_ref();
        let computed_errors = computed.error_counts.as_ref();
        if stored_errors.is_none() != computed_errors.is_none() {
            diffs.push(FieldDiff {
                field: ERROR_COUNTS.to_owned(),
                stored: None,
                computed: None,
            });
        }
        let (se, ce) = (
            stored_errors.unwrap_or(&empty),
            computed_errors.unwrap_or(&empty),
        );
        let codes: std::collections::BTreeSet<&String> = se.keys().chain(ce.keys()).collect();
        for code in codes {
            let (a, b) = (se.get(code).copied(), ce.get(code).copied());
            if a != b {
                diffs.push(FieldDiff {
                    field: format!("{ERROR_COUNTS}.{code}"),
                    stored: a,
                    computed: b,
                });
            }
        }
        diffs
    }
}

/// A BSON int32, int64 or double as `f64`; anything else is not a number.
pub fn number(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(i) => Some(f64::from(*i)),
        // Counts stay far below 2^53, where f64 stops being exact.
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

fn approx_eq(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// One field that differs between the stored and the computed document.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDiff {
    pub field: String,
    pub stored: Option<f64>,
    pub computed: Option<f64>,
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<f64>| v.map_or_else(|| "missing".to_owned(), |v| v.to_string());
        write!(
            f,
            "{}: {} -> {}",
            self.field,
            show(self.stored),
            show(self.computed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_field_is_produced_by_the_rollup_pipeline_and_documented_in_the_readme() {
        let readme = include_str!("../docs/metric-definitions.md");
        for field in FIELDS.iter().map(|f| f.name).chain([ERROR_COUNTS]) {
            assert!(
                include_str!("../pipelines/rollup_finish.json").contains(&format!("\"{field}\"")),
                "{field} not in pipelines/rollup_finish.json"
            );
            assert!(
                readme.contains(&format!("`{field}`")),
                "{field} not in docs/metric-definitions.md"
            );
        }
    }

    #[test]
    fn a_zero_document_round_trips_and_equals_itself() {
        let z = WindowMetrics::zero(Period::Hourly, at("2026-01-01T00:00:00Z"));
        assert!(z.diff(&z).is_empty());
    }

    #[test]
    fn diff_names_changed_missing_and_vanished_fields() {
        let mut stored = doc! {
            "period": "daily", "date": bson::DateTime::from_chrono(at("2026-01-01T00:00:00Z")),
            "errorCounts": {"E1": 2, "GONE": 1},
        };
        for f in FIELDS {
            stored.insert(f.name, 0_i32);
        }
        stored.insert("totalCalls", 3_i64);
        stored.insert("totalDuration", 10.0_f64);
        stored.remove("uniqueUsers");
        let stored = WindowMetrics::from_document(&stored).unwrap();
        let mut computed = WindowMetrics::zero(Period::Daily, at("2026-01-01T00:00:00Z"));
        computed.values.insert("totalCalls", 4.0);
        computed.values.insert("totalDuration", 10.0 + 1e-12);
        computed.error_counts = Some([("E1".to_owned(), 2.0)].into_iter().collect());
        let diffs: Vec<String> = stored
            .diff(&computed)
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            diffs,
            vec![
                "totalCalls: 3 -> 4",
                "uniqueUsers: missing -> 0",
                "errorCounts.GONE: 1 -> missing",
            ]
        );
    }

    #[test]
    fn a_document_without_a_date_is_rejected() {
        assert!(WindowMetrics::from_document(&doc! {"period": "daily"}).is_err());
    }
}
