//! The live session gauges on `/metrics` (`sessions::gauges`), served from memory: re-read with
//! the call metrics, so a scrape never waits on MongoDB. A failed read is counted
//! (`vcmetrics_sessions_read_errors_total`) and leaves the last values in place;
//! `vcmetrics_sessions_last_read_timestamp_seconds` says how old they are (0: never read).
//!
//! Labels are bounded: `within` (three horizons), `status` (six statuses and `other`), `rule`
//! (two rules). No id, user or link is ever a label.

use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Gauge, IntCounter, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::sessions::gauges::{SessionGauges, STATUS_LABELS, UPCOMING};
use crate::sessions::rules::SessionRule;

/// The session gauges' families for one read.
pub fn families(g: &SessionGauges) -> prometheus::Result<Vec<MetricFamily>> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
        let v = IntGaugeVec::new(Opts::new(name, help), labels)?;
        registry.register(Box::new(v.clone()))?;
        Ok(v)
    };
    let value = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    gauge(
        "vcmetrics_sessions_active_calls",
        "Sessions In Progress whose video call started and has not ended (the schema's active video calls).",
        &[],
    )?
    .with_label_values(&[] as &[&str])
    .set(value(g.active));
    gauge(
        "vcmetrics_sessions_stuck_calls",
        "Active video calls that started more than stuck_call_after ago: their end was never recorded.",
        &[],
    )?
    .with_label_values(&[] as &[&str])
    .set(value(g.stuck));
    let upcoming = gauge(
        "vcmetrics_sessions_upcoming",
        "Confirmed video sessions whose sessionDate is within the next 1h, 24h or 7d.",
        &["within"],
    )?;
    for ((label, _), n) in UPCOMING.iter().zip(&g.upcoming) {
        upcoming.with_label_values(&[*label]).set(value(*n));
    }
    let by_status = gauge(
        "vcmetrics_sessions_by_status",
        "Sessions by status: the schema's six, and other for anything else (missing included).",
        &["status"],
    )?;
    for (label, n) in STATUS_LABELS.iter().zip(&g.by_status) {
        by_status.with_label_values(&[*label]).set(value(*n));
    }
    gauge(
        "vcmetrics_sessions_confirmed_without_link",
        "Confirmed video sessions without a meetingLink (the schema says they must have one).",
        &[],
    )?
    .with_label_values(&[] as &[&str])
    .set(value(g.confirmed_without_link));
    let rules = gauge(
        "vcmetrics_sessions_rule_violations",
        "Sessions of the last session_rules_lookback (by sessionDate) that break a validation rule of the schema.",
        &["rule"],
    )?;
    for (rule, n) in SessionRule::ALL.iter().zip(&g.rules) {
        rules.with_label_values(&[rule.as_str()]).set(value(*n));
    }
    Ok(registry.gather())
}

/// The gauges as text, with the read's health.
#[derive(Debug)]
pub struct SessionMetricsCache {
    text: RwLock<Bytes>,
    last: Mutex<Option<SessionGauges>>,
    health: Registry,
    read_errors: IntCounter,
    last_read: Gauge,
}

impl SessionMetricsCache {
    pub fn new() -> prometheus::Result<Self> {
        let health = Registry::new();
        let read_errors = IntCounter::new(
            "vcmetrics_sessions_read_errors_total",
            "Reads of the session gauges that failed (the last values stay in place).",
        )?;
        let last_read = Gauge::new(
            "vcmetrics_sessions_last_read_timestamp_seconds",
            "When the session gauges were last read successfully (Unix time); 0 until the first read.",
        )?;
        health.register(Box::new(read_errors.clone()))?;
        health.register(Box::new(last_read.clone()))?;
        let cache = SessionMetricsCache {
            text: RwLock::default(),
            last: Mutex::default(),
            health,
            read_errors,
            last_read,
        };
        cache.encode()?;
        Ok(cache)
    }

    pub fn text(&self) -> Bytes {
        self.text.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A successful read at `at`.
    pub fn set(&self, gauges: SessionGauges, at: DateTime<Utc>) -> prometheus::Result<()> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(gauges);
        self.last_read.set(at.timestamp_millis() as f64 / 1000.0);
        self.encode()
    }

    /// A failed read: counted; the values stay.
    pub fn failed(&self) -> prometheus::Result<()> {
        self.read_errors.inc();
        self.encode()
    }

    fn encode(&self) -> prometheus::Result<()> {
        let mut all = self.health.gather();
        if let Some(g) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            all.extend(families(g)?);
        }
        let mut text = Vec::with_capacity(4096);
        TextEncoder::new().encode(&all, &mut text)?;
        *self.text.write().unwrap_or_else(|p| p.into_inner()) = Bytes::from(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> SessionGauges {
        SessionGauges {
            active: 3,
            stuck: 1,
            upcoming: vec![2, 5, 9],
            by_status: vec![1, 2, 3, 4, 5, 6, 7],
            confirmed_without_link: 2,
            rules: vec![4, 1],
        }
    }

    #[test]
    fn before_the_first_read_only_the_read_health_is_exported() {
        let cache = SessionMetricsCache::new().unwrap();
        let text = String::from_utf8(cache.text().to_vec()).unwrap();
        assert!(
            text.contains("vcmetrics_sessions_read_errors_total 0"),
            "{text}"
        );
        assert!(
            text.contains("vcmetrics_sessions_last_read_timestamp_seconds 0"),
            "{text}"
        );
        assert!(!text.contains("vcmetrics_sessions_active_calls"), "{text}");
    }

    #[test]
    fn a_failed_read_is_counted_and_keeps_the_last_values() {
        let cache = SessionMetricsCache::new().unwrap();
        let at = DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        cache.set(gauges(), at).unwrap();
        cache.failed().unwrap();
        let text = String::from_utf8(cache.text().to_vec()).unwrap();
        for line in [
            "vcmetrics_sessions_active_calls 3",
            "vcmetrics_sessions_stuck_calls 1",
            "vcmetrics_sessions_upcoming{within=\"24h\"} 5",
            "vcmetrics_sessions_by_status{status=\"in_progress\"} 3",
            "vcmetrics_sessions_by_status{status=\"other\"} 7",
            "vcmetrics_sessions_confirmed_without_link 2",
            "vcmetrics_sessions_rule_violations{rule=\"call_duration\"} 4",
            "vcmetrics_sessions_rule_violations{rule=\"meeting_link\"} 1",
            "vcmetrics_sessions_read_errors_total 1",
            "vcmetrics_sessions_last_read_timestamp_seconds 1773144000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // Bounded labels only.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(labels) = l.split_once('{').map(|(_, r)| r) {
                let name = labels.split('=').next().unwrap();
                assert!(["within", "status", "rule"].contains(&name), "{l}");
            }
        }
    }
}
