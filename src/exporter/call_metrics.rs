//! The call metrics as Prometheus series: every field of the metrics document of each period's
//! open and last closed window.
//!
//! Labels are `period`, `window` (`open`, `last_closed`) and, for error counts, `code` — nothing
//! else from a document can become a label, so no user, session, room, IP address or user agent
//! ever reaches Prometheus. Error codes beyond the top N of a window are summed under `other`.
//! Pure: documents in, metric families out.

use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts, Registry};

use crate::metrics_document::WindowMetrics;
use crate::window::Period;

/// Which of a period's windows a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRole {
    Open,
    LastClosed,
}

impl WindowRole {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowRole::Open => "open",
            WindowRole::LastClosed => "last_closed",
        }
    }
}

/// One exported window.
#[derive(Debug, Clone)]
pub struct ExportedWindow {
    pub period: Period,
    pub role: WindowRole,
    pub metrics: WindowMetrics,
}

/// Document field → series name, help, and the factor to base units (milliseconds → seconds).
pub const SERIES: &[(&str, &str, &str, f64)] = &[
    (
        "totalAttempts",
        "vcmetrics_window_join_attempts",
        "Events with action join_attempt in the window (totalAttempts).",
        1.0,
    ),
    (
        "successfulConnections",
        "vcmetrics_window_connections_established",
        "Events with action connection_established (successfulConnections).",
        1.0,
    ),
    (
        "failedConnections",
        "vcmetrics_window_connections_failed",
        "Events with action connection_failed (failedConnections).",
        1.0,
    ),
    (
        "totalCalls",
        "vcmetrics_window_calls_started",
        "Events with action call_start (totalCalls).",
        1.0,
    ),
    (
        "completedCalls",
        "vcmetrics_window_calls_completed",
        "Events with action call_end (completedCalls).",
        1.0,
    ),
    (
        "totalDuration",
        "vcmetrics_window_call_duration_seconds",
        "Sum of call_end durations, seconds (totalDuration).",
        1.0,
    ),
    (
        "averageDuration",
        "vcmetrics_window_call_duration_average_seconds",
        "Mean call_end duration, seconds (averageDuration).",
        1.0,
    ),
    (
        "averageConnectionTime",
        "vcmetrics_window_connection_time_average_seconds",
        "Mean connection time, seconds (averageConnectionTime, stored in ms).",
        0.001,
    ),
    (
        "uniqueUsers",
        "vcmetrics_window_unique_users",
        "Distinct users among the window's counting events (uniqueUsers).",
        1.0,
    ),
    (
        "joinSuccesses",
        "vcmetrics_window_join_successes",
        "Events with action join_success (joinSuccesses).",
        1.0,
    ),
    (
        "joinDenials",
        "vcmetrics_window_join_denials",
        "Events with action join_denied (joinDenials).",
        1.0,
    ),
    (
        "permissionDenials",
        "vcmetrics_window_permission_denials",
        "Events with action permission_denied (permissionDenials).",
        1.0,
    ),
    (
        "errorsOccurred",
        "vcmetrics_window_errors_occurred",
        "Events with action error_occurred (errorsOccurred).",
        1.0,
    ),
    (
        "invalidEvents",
        "vcmetrics_window_invalid_events",
        "Audit documents in the window with an unknown or missing action (invalidEvents).",
        1.0,
    ),
    (
        "callsWithDuration",
        "vcmetrics_window_calls_with_duration",
        "call_end events with a usable duration (callsWithDuration).",
        1.0,
    ),
    (
        "totalConnectionTime",
        "vcmetrics_window_connection_time_seconds",
        "Sum of connection times, seconds (totalConnectionTime, stored in ms).",
        0.001,
    ),
    (
        "connectionsWithTime",
        "vcmetrics_window_connections_with_time",
        "connection_established events with a usable connection time (connectionsWithTime).",
        1.0,
    ),
    (
        "callEndsWithoutDuration",
        "vcmetrics_window_call_ends_without_duration",
        "call_end events without a duration > 0, which the schema requires (callEndsWithoutDuration).",
        1.0,
    ),
    (
        "errorsWithoutCode",
        "vcmetrics_window_errors_without_code",
        "error_occurred events without an errorCode, which the schema requires (errorsWithoutCode).",
        1.0,
    ),
];

pub const ERROR_SERIES: &str = "vcmetrics_window_error_events";
pub const START_SERIES: &str = "vcmetrics_window_start_timestamp_seconds";
pub const UPDATED_SERIES: &str = "vcmetrics_window_updated_timestamp_seconds";
/// Label values of error codes are cut to this many characters.
const MAX_CODE_LEN: usize = 100;

/// Builds the metric families of the given windows.
pub fn families(
    windows: &[ExportedWindow],
    top_error_codes: usize,
) -> prometheus::Result<Vec<MetricFamily>> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let fields = SERIES
        .iter()
        .map(|(field, name, help, scale)| {
            Ok((*field, gauge(name, help, &["period", "window"])?, *scale))
        })
        .collect::<prometheus::Result<Vec<_>>>()?;
    let errors = gauge(
        ERROR_SERIES,
        "Counting events with an error code in the window, by code (errorCounts); codes past the top N are summed as \"other\".",
        &["period", "window", "code"],
    )?;
    let start = gauge(
        START_SERIES,
        "Start of the window (Unix time).",
        &["period", "window"],
    )?;
    let updated = gauge(
        UPDATED_SERIES,
        "When the window's document was last written (Unix time).",
        &["period", "window"],
    )?;

    for w in windows {
        let labels = [w.period.as_str(), w.role.as_str()];
        for (field, g, scale) in &fields {
            if let Some(v) = w.metrics.values.get(field) {
                g.with_label_values(&labels).set(v * scale);
            }
        }
        start
            .with_label_values(&labels)
            .set(w.metrics.date.timestamp_millis() as f64 / 1000.0);
        if let Some(t) = w.metrics.updated_at {
            updated
                .with_label_values(&labels)
                .set(t.timestamp_millis() as f64 / 1000.0);
        }
        let mut codes: Vec<(&String, f64)> = w
            .metrics
            .error_counts
            .iter()
            .flatten()
            .map(|(code, n)| (code, *n))
            .collect();
        codes.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut other = 0.0;
        for (i, (code, n)) in codes.into_iter().enumerate() {
            if i < top_error_codes && code != "other" {
                let code: String = code.chars().take(MAX_CODE_LEN).collect();
                errors
                    .with_label_values(&[labels[0], labels[1], &code])
                    .add(n);
            } else {
                other += n;
            }
        }
        if other > 0.0 {
            errors
                .with_label_values(&[labels[0], labels[1], "other"])
                .add(other);
        }
    }
    Ok(registry.gather())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use chrono::{DateTime, Utc};
    use prometheus::{Encoder, TextEncoder};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(period: Period, role: WindowRole, doc: bson::Document) -> ExportedWindow {
        ExportedWindow {
            period,
            role,
            metrics: WindowMetrics::from_document(&doc).unwrap(),
        }
    }

    fn text(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn a_known_document_gives_exactly_the_expected_series() {
        let doc = doc! {
            "period": "hourly", "date": bson::DateTime::from_chrono(at("2026-03-01T10:00:00Z")),
            "totalAttempts": 3, "successfulConnections": 2, "failedConnections": 1, "totalCalls": 2,
            "completedCalls": 1, "totalDuration": 90.5, "averageDuration": 90.5,
            "averageConnectionTime": 250.0, "uniqueUsers": 2, "joinSuccesses": 2, "joinDenials": 0,
            "permissionDenials": 0, "errorsOccurred": 1, "invalidEvents": 4, "callsWithDuration": 1,
            "totalConnectionTime": 500.0, "connectionsWithTime": 2,
            "callEndsWithoutDuration": 0, "errorsWithoutCode": 1,
            "errorCounts": {"ICE_TIMEOUT": 2, "_media_err": 1},
            "updatedAt": bson::DateTime::from_chrono(at("2026-03-01T10:05:00Z")),
            // Not metrics: must not turn into series or labels.
            "userId": "64b000000000000000000001", "ipAddress": "203.0.113.7",
        };
        let f = families(&[window(Period::Hourly, WindowRole::Open, doc)], 20).unwrap();
        let text = text(&f);
        let l = "period=\"hourly\",window=\"open\"";
        let mut expected = vec![
            format!("vcmetrics_window_call_duration_average_seconds{{{l}}} 90.5"),
            format!("vcmetrics_window_call_duration_seconds{{{l}}} 90.5"),
            format!("vcmetrics_window_call_ends_without_duration{{{l}}} 0"),
            format!("vcmetrics_window_calls_completed{{{l}}} 1"),
            format!("vcmetrics_window_calls_started{{{l}}} 2"),
            format!("vcmetrics_window_calls_with_duration{{{l}}} 1"),
            format!("vcmetrics_window_connection_time_average_seconds{{{l}}} 0.25"),
            format!("vcmetrics_window_connection_time_seconds{{{l}}} 0.5"),
            format!("vcmetrics_window_connections_established{{{l}}} 2"),
            format!("vcmetrics_window_connections_failed{{{l}}} 1"),
            format!("vcmetrics_window_connections_with_time{{{l}}} 2"),
            format!("vcmetrics_window_error_events{{code=\"ICE_TIMEOUT\",{l}}} 2"),
            format!("vcmetrics_window_error_events{{code=\"_media_err\",{l}}} 1"),
            format!("vcmetrics_window_errors_occurred{{{l}}} 1"),
            format!("vcmetrics_window_errors_without_code{{{l}}} 1"),
            format!("vcmetrics_window_invalid_events{{{l}}} 4"),
            format!("vcmetrics_window_join_attempts{{{l}}} 3"),
            format!("vcmetrics_window_join_denials{{{l}}} 0"),
            format!("vcmetrics_window_join_successes{{{l}}} 2"),
            format!("vcmetrics_window_permission_denials{{{l}}} 0"),
            format!("vcmetrics_window_start_timestamp_seconds{{{l}}} 1772359200"),
            format!("vcmetrics_window_unique_users{{{l}}} 2"),
            format!("vcmetrics_window_updated_timestamp_seconds{{{l}}} 1772359500"),
        ];
        expected.sort();
        let mut got = series(&text);
        got.sort();
        assert_eq!(got, expected);
        assert!(
            !text.contains("203.0.113.7") && !text.contains("64b0000"),
            "{text}"
        );
    }

    #[test]
    fn error_codes_past_the_top_n_are_summed_as_other() {
        let mut counts = bson::Document::new();
        for i in 0..100 {
            counts.insert(format!("E{i:03}"), i + 1);
        }
        let doc = doc! {"period": "daily", "date": bson::DateTime::from_chrono(at("2026-03-01T00:00:00Z")), "errorCounts": counts};
        let f = families(&[window(Period::Daily, WindowRole::LastClosed, doc)], 20).unwrap();
        let text = text(&f);
        let errors: Vec<&str> = series(&text)
            .into_iter()
            .filter(|l| l.starts_with(ERROR_SERIES))
            .collect();
        assert_eq!(errors.len(), 21);
        // The top 20 are E080..E099 (81..100 events); the other 80 codes hold 1+...+80 = 3240.
        assert!(errors.contains(&"vcmetrics_window_error_events{code=\"E099\",period=\"daily\",window=\"last_closed\"} 100"));
        assert!(errors.contains(&"vcmetrics_window_error_events{code=\"other\",period=\"daily\",window=\"last_closed\"} 3240"));
        assert!(!text.contains("E079"));
    }

    #[test]
    fn only_period_window_and_code_are_ever_labels() {
        let doc = doc! {"period": "weekly", "date": bson::DateTime::from_chrono(at("2026-03-02T00:00:00Z")), "errorCounts": {"X": 1}};
        let f = families(&[window(Period::Weekly, WindowRole::Open, doc)], 20).unwrap();
        for family in &f {
            for metric in family.get_metric() {
                for label in metric.get_label() {
                    assert!(
                        ["period", "window", "code"].contains(&label.name()),
                        "{}",
                        label.name()
                    );
                }
            }
        }
        // Every field of the document has a series.
        for field in crate::metrics_document::FIELDS {
            assert!(
                SERIES.iter().any(|(f, ..)| f == &field.name),
                "{} is not exported",
                field.name
            );
        }
    }
}
