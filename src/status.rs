//! What the daemon knows about itself: MongoDB reachability, leadership, runs and skipped ticks.
//!
//! Written by the daemon's tasks at the same call sites that log, read by the exporter, health
//! checks and tests. Each update goes both to a snapshot (for health and tests) and to typed
//! Prometheus handles in one registry (for `/metrics`). Every label set is bounded: four
//! periods, a few outcomes, reasons and error kinds.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::sync::watch;

use crate::lease::Leadership;
use crate::window::Period;

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunOutcome {
    Success,
    Failed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Failed => "failed",
        }
    }
}

/// Why a tick did not start a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// The previous run of the period was still going.
    Overlap,
    /// Another replica holds the lease.
    Standby,
    /// MongoDB did not answer the last ping.
    MongodbUnavailable,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Standby => "standby",
            SkipReason::MongodbUnavailable => "mongodb_unavailable",
        }
    }
}

/// One finished run, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub period: Period,
    pub outcome: RunOutcome,
    pub windows: usize,
    pub first_window: Option<DateTime<Utc>>,
    pub duration: Duration,
    /// The error's label (`Error::metric_label`) when it failed.
    pub error: Option<&'static str>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSnapshot {
    pub mongodb_up: bool,
    pub leader: bool,
    pub runs: BTreeMap<(Period, RunOutcome), u64>,
    pub skipped: BTreeMap<(Period, SkipReason), u64>,
    /// Ticks the scheduler should have delivered but did not; the daemon fired them itself.
    pub late_ticks: BTreeMap<Period, u64>,
    pub windows_written: BTreeMap<Period, u64>,
    pub last_success: BTreeMap<Period, DateTime<Utc>>,
    pub watermark: BTreeMap<Period, DateTime<Utc>>,
    /// The most recent runs, newest last (bounded).
    pub recent_runs: Vec<RunRecord>,
}

/// The daemon's own metrics: typed handles, registered in [`DaemonMetrics::register`].
#[derive(Debug, Clone)]
pub struct DaemonMetrics {
    runs: IntCounterVec,
    run_errors: IntCounterVec,
    run_duration: HistogramVec,
    windows_written: IntCounterVec,
    ticks_skipped: IntCounterVec,
    ticks_late: IntCounterVec,
    last_success: GaugeVec,
    watermark: GaugeVec,
    data_lag: GaugeVec,
    leader: IntGauge,
    mongodb_up: IntGauge,
}

impl DaemonMetrics {
    /// Creates every metric of the daemon, with help texts, in `registry` (prefix `vcmetrics_`),
    /// plus the build info and the process collector.
    pub fn register(registry: &Registry) -> prometheus::Result<DaemonMetrics> {
        fn add<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> prometheus::Result<C> {
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let metrics = DaemonMetrics {
            runs: add(registry, IntCounterVec::new(
                Opts::new("vcmetrics_runs_total", "Finished runs by period and outcome (success, failed)."),
                &["period", "outcome"],
            )?)?,
            run_errors: add(registry, IntCounterVec::new(
                Opts::new("vcmetrics_run_errors_total", "Failed runs by period and kind of error."),
                &["period", "kind"],
            )?)?,
            run_duration: add(registry, HistogramVec::new(
                HistogramOpts::new("vcmetrics_run_duration_seconds", "Duration of finished runs, in seconds.")
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
                &["period"],
            )?)?,
            windows_written: add(registry, IntCounterVec::new(
                Opts::new("vcmetrics_windows_written_total", "Windows written by successful runs."),
                &["period"],
            )?)?,
            ticks_skipped: add(registry, IntCounterVec::new(
                Opts::new("vcmetrics_ticks_skipped_total", "Ticks that started no run, by reason (overlap, standby, mongodb_unavailable)."),
                &["period", "reason"],
            )?)?,
            ticks_late: add(registry, IntCounterVec::new(
                Opts::new("vcmetrics_ticks_late_total", "Ticks the scheduler did not deliver in time; the daemon fired the period itself."),
                &["period"],
            )?)?,
            last_success: add(registry, GaugeVec::new(
                Opts::new("vcmetrics_last_success_timestamp_seconds", "When the last successful run of the period finished (Unix time)."),
                &["period"],
            )?)?,
            watermark: add(registry, GaugeVec::new(
                Opts::new("vcmetrics_watermark_timestamp_seconds", "End of the newest closed window known complete (Unix time)."),
                &["period"],
            )?)?,
            data_lag: add(registry, GaugeVec::new(
                Opts::new("vcmetrics_data_lag_seconds", "Now minus the end of the newest complete window aggregated: alert when it exceeds a window or two."),
                &["period"],
            )?)?,
            leader: add(registry, IntGauge::new("vcmetrics_leader", "1 when this replica holds the lease and runs jobs, else 0.")?)?,
            mongodb_up: add(registry, IntGauge::new("vcmetrics_mongodb_up", "1 when MongoDB answered the last ping, else 0.")?)?,
        };
        // Every bounded combination exists from the start at zero, so `rate()` and alerts see
        // a series before the first event rather than nothing.
        for period in Period::ALL.map(Period::as_str) {
            for outcome in [RunOutcome::Success, RunOutcome::Failed] {
                metrics.runs.with_label_values(&[period, outcome.as_str()]);
            }
            for reason in [
                SkipReason::Overlap,
                SkipReason::Standby,
                SkipReason::MongodbUnavailable,
            ] {
                metrics
                    .ticks_skipped
                    .with_label_values(&[period, reason.as_str()]);
            }
            metrics.windows_written.with_label_values(&[period]);
            metrics.ticks_late.with_label_values(&[period]);
            metrics.run_duration.with_label_values(&[period]);
        }
        let build = IntGaugeVec::new(
            Opts::new(
                "vcmetrics_build_info",
                "Version and commit of the running vcmetrics; always 1.",
            ),
            &["version", "commit"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("VCMETRICS_COMMIT")])
            .set(1);
        registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }
}

#[derive(Debug)]
pub struct Status {
    inner: Mutex<StatusSnapshot>,
    registry: Registry,
    metrics: DaemonMetrics,
    /// Counts finished runs; a watch, so a run that finishes while nobody waits is not lost.
    runs_finished: watch::Sender<u64>,
    /// Read live: leadership ends when its validity runs out, even while a renewal hangs.
    leadership: Leadership,
}

const RECENT_RUNS: usize = 64;

impl Status {
    /// Fails only on a duplicate or inconsistent metric definition, a bug every test shows.
    pub fn new() -> prometheus::Result<Status> {
        let registry = Registry::new();
        let metrics = DaemonMetrics::register(&registry)?;
        Ok(Status {
            inner: Mutex::new(StatusSnapshot::default()),
            registry,
            metrics,
            runs_finished: watch::Sender::new(0),
            leadership: Leadership::default(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut StatusSnapshot) -> T) -> T {
        // A panic while holding the lock cannot leave a counter half-written; keep serving.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The registry of the daemon's own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every family the daemon declares, including those a scrape shows only after their first
    /// sample (the watermark, lag and last-success gauges appear after a period's first run).
    pub fn declared_families(&self) -> Vec<String> {
        let m = &self.metrics;
        let collectors: [&dyn Collector; 11] = [
            &m.runs,
            &m.run_errors,
            &m.run_duration,
            &m.windows_written,
            &m.ticks_skipped,
            &m.ticks_late,
            &m.last_success,
            &m.watermark,
            &m.data_lag,
            &m.leader,
            &m.mongodb_up,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let mut snapshot = self.with(|s| s.clone());
        snapshot.leader = self.is_leader();
        snapshot
    }

    /// The lease state this replica's lease task maintains and the scheduler obeys.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    pub fn mongodb_up(&self) -> bool {
        self.with(|s| s.mongodb_up)
    }

    pub fn set_mongodb_up(&self, up: bool) {
        self.metrics.mongodb_up.set(i64::from(up));
        self.with(|s| s.mongodb_up = up)
    }

    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    pub fn skipped(&self, period: Period, reason: SkipReason) {
        self.metrics
            .ticks_skipped
            .with_label_values(&[period.as_str(), reason.as_str()])
            .inc();
        self.with(|s| *s.skipped.entry((period, reason)).or_default() += 1)
    }

    pub fn late_tick(&self, period: Period) {
        self.metrics
            .ticks_late
            .with_label_values(&[period.as_str()])
            .inc();
        self.with(|s| *s.late_ticks.entry(period).or_default() += 1)
    }

    /// Records a period's watermark; never moves it backwards (a stored value read after a
    /// run may be older than what the run just wrote).
    pub fn set_watermark(&self, period: Period, watermark: DateTime<Utc>) {
        let watermark = self.with(|s| {
            *s.watermark
                .entry(period)
                .and_modify(|w| *w = (*w).max(watermark))
                .or_insert(watermark)
        });
        self.metrics
            .watermark
            .with_label_values(&[period.as_str()])
            .set(unix_seconds(watermark));
    }

    /// Brings the gauges that depend on the time up to date: leadership, and each period's data
    /// lag (`now` minus its watermark). Called when a scrape encodes the daemon's metrics.
    pub fn update_gauges(&self, now: DateTime<Utc>) {
        self.metrics.leader.set(i64::from(self.is_leader()));
        for (period, watermark) in self.with(|s| s.watermark.clone()) {
            self.metrics
                .data_lag
                .with_label_values(&[period.as_str()])
                .set(unix_seconds(now) - unix_seconds(watermark));
        }
    }

    /// Changes whenever a run of any period finished (and its record is in place).
    pub fn subscribe_runs_finished(&self) -> watch::Receiver<u64> {
        self.runs_finished.subscribe()
    }

    pub fn record_run(&self, record: RunRecord, finished_at: DateTime<Utc>) {
        let period = record.period.as_str();
        self.metrics
            .runs
            .with_label_values(&[period, record.outcome.as_str()])
            .inc();
        self.metrics
            .run_duration
            .with_label_values(&[period])
            .observe(record.duration.as_secs_f64());
        if let Some(kind) = record.error {
            self.metrics
                .run_errors
                .with_label_values(&[period, kind])
                .inc();
        }
        if record.outcome == RunOutcome::Success {
            self.metrics
                .windows_written
                .with_label_values(&[period])
                .inc_by(record.windows as u64);
            self.metrics
                .last_success
                .with_label_values(&[period])
                .set(unix_seconds(finished_at));
        }
        self.with(|s| {
            *s.runs.entry((record.period, record.outcome)).or_default() += 1;
            if record.outcome == RunOutcome::Success {
                *s.windows_written.entry(record.period).or_default() += record.windows as u64;
                s.last_success.insert(record.period, finished_at);
            }
            if s.recent_runs.len() == RECENT_RUNS {
                s.recent_runs.remove(0);
            }
            s.recent_runs.push(record);
        });
        self.runs_finished.send_modify(|n| *n += 1);
    }
}
