//! The daemon's own metrics (`vcmetrics_*`): their definitions, help texts and labels, in one
//! registry that `/metrics` encodes. Every label set is bounded (four periods, a few outcomes,
//! reasons and error kinds) and exists from the start at zero.

use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::archive::ArchiveOutcome;
use crate::daemon::records::{ArchiveView, LateReport, RunOutcome, RunRecord, SkipReason};
use crate::window::Period;

/// The one series of a family without labels, made when first set.
const NO_LABELS: &[&str] = &[];

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The daemon's own metrics: typed handles, registered in [`SelfMetrics::register`].
#[derive(Debug, Clone)]
pub struct SelfMetrics {
    registry: Registry,
    runs: IntCounterVec,
    run_errors: IntCounterVec,
    run_duration: HistogramVec,
    windows_written: IntCounterVec,
    ticks_skipped: IntCounterVec,
    last_success: GaugeVec,
    watermark: GaugeVec,
    data_lag: GaugeVec,
    leader: IntGauge,
    mongodb_up: IntGauge,
    missing_indexes: IntGauge,
    late_events: IntCounterVec,
    late_windows: IntCounterVec,
    late_unrepairable: IntCounterVec,
    late_oldest_age: GaugeVec,
    late_scan_duration: HistogramVec,
    late_mark: GaugeVec,
    archive_runs: IntCounterVec,
    archive_errors: IntCounterVec,
    archive_events: IntCounterVec,
    archive_duration: HistogramVec,
    /// Gauges without labels that exist once known (the archive's are read only when
    /// `archive.schedule` is set).
    archive_last_success: GaugeVec,
    archive_oldest: GaugeVec,
    archive_newest: GaugeVec,
    archive_archived_before: GaugeVec,
    archive_complete_from: GaugeVec,
    archive_batch_pending: GaugeVec,
    audit_oldest: GaugeVec,
    audit_retention: GaugeVec,
}

impl SelfMetrics {
    /// Creates every metric of the daemon, with help texts, in a registry of its own (prefix
    /// `vcmetrics_`), plus the build info and the process collector. Fails only on a duplicate
    /// or inconsistent definition, a bug every test shows.
    pub fn new() -> prometheus::Result<SelfMetrics> {
        let registry = Registry::new();
        let r = Registering(&registry);
        #[rustfmt::skip]
        let metrics = SelfMetrics {
            registry: registry.clone(),
            runs: r.counter("vcmetrics_runs_total", "Finished runs by period and outcome (success, failed).", &["period", "outcome"])?,
            run_errors: r.counter("vcmetrics_run_errors_total", "Failed runs by period and kind of error.", &["period", "kind"])?,
            run_duration: r.histogram("vcmetrics_run_duration_seconds", "Duration of finished runs, in seconds.", vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0], &["period"])?,
            windows_written: r.counter("vcmetrics_windows_written_total", "Windows written by successful runs.", &["period"])?,
            ticks_skipped: r.counter("vcmetrics_ticks_skipped_total", "Ticks that started no run, by reason (overlap, standby, mongodb_unavailable).", &["period", "reason"])?,
            last_success: r.gauge("vcmetrics_last_success_timestamp_seconds", "When the last successful run of the period finished (Unix time).", &["period"])?,
            watermark: r.gauge("vcmetrics_watermark_timestamp_seconds", "End of the newest closed window known complete (Unix time).", &["period"])?,
            data_lag: r.gauge("vcmetrics_data_lag_seconds", "Now minus the end of the newest complete window aggregated: alert when it exceeds a window or two.", &["period"])?,
            leader: r.int_gauge("vcmetrics_leader", "1 when this replica holds the lease and runs jobs, else 0.")?,
            mongodb_up: r.int_gauge("vcmetrics_mongodb_up", "1 when MongoDB answered the last ping, else 0.")?,
            missing_indexes: r.int_gauge("vcmetrics_database_missing_indexes", "Indexes the runs need that the database lacks (vcmetrics migrate creates them); 0 when set up.")?,
            late_events: r.counter("vcmetrics_late_events_total", "Audit events written after the runs that covered their window, found by their _id and counted by the period whose window they refreshed.", &["period"])?,
            late_windows: r.counter("vcmetrics_late_windows_refreshed_total", "Windows refreshed because late events fell in them.", &["period"])?,
            late_unrepairable: r.counter("vcmetrics_late_windows_unrepairable_total", "Windows with late events before the retention horizon, not rebuilt.", &["period"])?,
            late_oldest_age: r.gauge("vcmetrics_late_event_oldest_age_seconds", "Age (run time minus timestamp) of the oldest late event the period's last scan found; 0 when it found none.", &["period"])?,
            late_scan_duration: r.histogram("vcmetrics_late_scan_duration_seconds", "Duration of the late-event scans, in seconds.", vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0], &["period"])?,
            late_mark: r.gauge("vcmetrics_late_scan_mark_timestamp_seconds", "Write time (from the _id) where the period's next late-event scan starts (Unix time).", &["period"])?,
            archive_runs: r.counter("vcmetrics_archive_runs_total", "Finished scheduled archive runs by outcome (success, failed).", &["outcome"])?,
            archive_errors: r.counter("vcmetrics_archive_errors_total", "Failed scheduled archive runs by kind of error.", &["kind"])?,
            archive_events: r.counter("vcmetrics_archive_events_total", "Audit events moved into the archive by scheduled runs (copied, confirmed, deleted from the audit log).", &[])?,
            archive_duration: r.histogram("vcmetrics_archive_duration_seconds", "Duration of scheduled archive runs, in seconds.", vec![0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0], &[])?,
            archive_last_success: r.gauge("vcmetrics_archive_last_success_timestamp_seconds", "When the last archive run that reached its cutoff finished (Unix time).", &[])?,
            archive_oldest: r.gauge("vcmetrics_archive_oldest_event_timestamp_seconds", "Timestamp of the archive's oldest event (Unix time).", &[])?,
            archive_newest: r.gauge("vcmetrics_archive_newest_event_timestamp_seconds", "Timestamp of the archive's newest event (Unix time).", &[])?,
            archive_archived_before: r.gauge("vcmetrics_archive_archived_before_timestamp_seconds", "Every audit event before this instant is archived, as of the last finished run (Unix time).", &[])?,
            archive_complete_from: r.gauge("vcmetrics_archive_complete_from_timestamp_seconds", "Audit log and archive together hold every event from this instant: recompute and verify rebuild windows from here (Unix time).", &[])?,
            archive_batch_pending: r.gauge("vcmetrics_archive_batch_pending", "1 while a batch is recorded as moving: a run in progress, or one that stopped half-way (the next run finishes it).", &[])?,
            audit_oldest: r.gauge("vcmetrics_audit_oldest_event_timestamp_seconds", "Timestamp of the audit log's oldest event (Unix time): it must be archived before it reaches the TTL.", &[])?,
            audit_retention: r.gauge("vcmetrics_audit_retention_seconds", "The audit log's retention: its TTL (or audit_retention), in seconds.", &[])?,
        };
        metrics.create_bounded_series();
        register_build_and_process(&registry)?;
        Ok(metrics)
    }

    /// Every bounded combination of labels, at zero, so that `rate()` and alerts see a series
    /// before the first event rather than nothing.
    fn create_bounded_series(&self) {
        for outcome in [RunOutcome::Success, RunOutcome::Failed] {
            self.archive_runs.with_label_values(&[outcome.as_str()]);
        }
        for kind in crate::error::Error::METRIC_LABELS {
            self.archive_errors.with_label_values(&[kind]);
        }
        self.archive_events.with_label_values(NO_LABELS);
        for period in Period::ALL.map(Period::as_str) {
            for outcome in [RunOutcome::Success, RunOutcome::Failed] {
                self.runs.with_label_values(&[period, outcome.as_str()]);
            }
            for reason in [
                SkipReason::Overlap,
                SkipReason::Standby,
                SkipReason::MongodbUnavailable,
            ] {
                self.ticks_skipped
                    .with_label_values(&[period, reason.as_str()]);
            }
            self.windows_written.with_label_values(&[period]);
            for kind in crate::error::Error::METRIC_LABELS {
                self.run_errors.with_label_values(&[period, kind]);
            }
            // 0: no successful run yet (the Prometheus convention for "never").
            self.last_success.with_label_values(&[period]).set(0.0);
            self.run_duration.with_label_values(&[period]);
            self.late_events.with_label_values(&[period]);
            self.late_windows.with_label_values(&[period]);
            self.late_unrepairable.with_label_values(&[period]);
            self.late_scan_duration.with_label_values(&[period]);
        }
    }
}

/// Registers each metric as it is made: one line per metric above.
struct Registering<'a>(&'a Registry);

impl Registering<'_> {
    fn add<C: Collector + Clone + 'static>(&self, c: C) -> prometheus::Result<C> {
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
        self.add(GaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn int_gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.add(IntGauge::new(name, help)?)
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
        )?)
    }
}

/// `vcmetrics_build_info` and, on Linux, the process collector.
fn register_build_and_process(registry: &Registry) -> prometheus::Result<()> {
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
    Ok(())
}

impl SelfMetrics {
    /// The registry `/metrics` encodes.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every family the daemon declares, including those a scrape shows only after their first
    /// sample (the watermark, lag and last-success gauges appear after a period's first run).
    pub fn declared_families(&self) -> Vec<String> {
        let collectors: [&dyn Collector; 29] = [
            &self.runs,
            &self.run_errors,
            &self.run_duration,
            &self.windows_written,
            &self.ticks_skipped,
            &self.last_success,
            &self.watermark,
            &self.data_lag,
            &self.leader,
            &self.mongodb_up,
            &self.missing_indexes,
            &self.late_events,
            &self.late_windows,
            &self.late_unrepairable,
            &self.late_oldest_age,
            &self.late_scan_duration,
            &self.late_mark,
            &self.archive_runs,
            &self.archive_errors,
            &self.archive_events,
            &self.archive_duration,
            &self.archive_last_success,
            &self.archive_oldest,
            &self.archive_newest,
            &self.archive_archived_before,
            &self.archive_complete_from,
            &self.archive_batch_pending,
            &self.audit_oldest,
            &self.audit_retention,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    pub fn set_mongodb_up(&self, up: bool) {
        self.mongodb_up.set(i64::from(up));
    }

    pub fn set_missing_indexes(&self, count: usize) {
        self.missing_indexes
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn skipped(&self, period: Period, reason: SkipReason) {
        self.ticks_skipped
            .with_label_values(&[period.as_str(), reason.as_str()])
            .inc();
    }

    pub fn set_watermark(&self, period: Period, watermark: DateTime<Utc>) {
        self.watermark
            .with_label_values(&[period.as_str()])
            .set(unix_seconds(watermark));
    }

    /// The gauges that depend on the time: leadership, and each period's data lag (`now` minus
    /// its watermark).
    pub fn update_gauges(
        &self,
        now: DateTime<Utc>,
        leader: bool,
        watermarks: impl IntoIterator<Item = (Period, DateTime<Utc>)>,
    ) {
        self.leader.set(i64::from(leader));
        for (period, watermark) in watermarks {
            self.data_lag
                .with_label_values(&[period.as_str()])
                .set(unix_seconds(now) - unix_seconds(watermark));
        }
    }

    pub fn late_events_scanned(&self, period: Period, report: &LateReport) {
        let period = [period.as_str()];
        self.late_events
            .with_label_values(&period)
            .inc_by(report.events);
        self.late_windows
            .with_label_values(&period)
            .inc_by(report.windows as u64);
        self.late_unrepairable
            .with_label_values(&period)
            .inc_by(report.unrepairable as u64);
        if let Some(duration) = report.scan_duration {
            self.late_scan_duration
                .with_label_values(&period)
                .observe(duration.as_secs_f64());
            self.late_oldest_age
                .with_label_values(&period)
                .set(report.oldest_age.map_or(0.0, |a| a.as_secs_f64()));
        }
        if let Some(mark) = report.mark {
            self.late_mark
                .with_label_values(&period)
                .set(unix_seconds(mark));
        }
    }

    pub fn archive_run(
        &self,
        result: std::result::Result<&ArchiveOutcome, &'static str>,
        duration: std::time::Duration,
        finished_at: DateTime<Utc>,
    ) {
        self.archive_duration
            .with_label_values(NO_LABELS)
            .observe(duration.as_secs_f64());
        match result {
            Ok(outcome) => {
                self.archive_runs
                    .with_label_values(&[RunOutcome::Success.as_str()])
                    .inc();
                self.archive_events
                    .with_label_values(NO_LABELS)
                    .inc_by(outcome.moved);
                if outcome.finished.is_some() {
                    self.archive_last_success
                        .with_label_values(NO_LABELS)
                        .set(unix_seconds(finished_at));
                }
            }
            Err(kind) => {
                self.archive_runs
                    .with_label_values(&[RunOutcome::Failed.as_str()])
                    .inc();
                self.archive_errors.with_label_values(&[kind]).inc();
            }
        }
    }

    /// Where the archive stands; what is unknown (nothing archived yet) is left out.
    pub fn set_archive_view(&self, view: &ArchiveView) {
        let set = |gauge: &GaugeVec, t: Option<DateTime<Utc>>| {
            if let Some(t) = t {
                gauge.with_label_values(NO_LABELS).set(unix_seconds(t));
            }
        };
        set(&self.archive_oldest, view.archived.oldest);
        set(&self.archive_newest, view.archived.newest);
        let finished = view.state.finished;
        set(
            &self.archive_archived_before,
            finished.map(|f| f.archived_before),
        );
        set(&self.archive_complete_from, view.complete_from);
        set(&self.audit_oldest, view.audit_oldest);
        self.archive_batch_pending
            .with_label_values(NO_LABELS)
            .set(if view.state.batch.is_some() { 1.0 } else { 0.0 });
        if let Some(retention) = view.audit_retention {
            self.audit_retention
                .with_label_values(NO_LABELS)
                .set(retention.as_secs_f64());
        }
    }

    pub fn run_finished(&self, record: &RunRecord, finished_at: DateTime<Utc>) {
        let period = record.period.as_str();
        self.runs
            .with_label_values(&[period, record.outcome.as_str()])
            .inc();
        self.run_duration
            .with_label_values(&[period])
            .observe(record.duration.as_secs_f64());
        if let Some(kind) = record.error {
            self.run_errors.with_label_values(&[period, kind]).inc();
        }
        if record.outcome == RunOutcome::Success {
            self.windows_written
                .with_label_values(&[period])
                .inc_by(record.windows as u64);
            self.last_success
                .with_label_values(&[period])
                .set(unix_seconds(finished_at));
        }
    }
}
