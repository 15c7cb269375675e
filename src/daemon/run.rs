//! One run of one period: plan from the watermark, roll up, advance the watermark, record.

use tokio::time::Instant;
use tracing::{info, warn};

use super::incremental::run_incremental;
use super::late_events::refresh_late_windows;
use super::records::{RunOutcome, RunRecord};
use super::run_plan::{initial_watermark, plan_run, respect_retention};
use super::status::Status;
use super::tenure::{confirm_lease, rewrite_pending, Tenure};
use crate::archive::retention::retention_horizon;
use crate::archive::storage::RetentionStore;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{Chain, Error, Result};
use crate::rollup::storage::{LateEventStore, RollupStore, TickStore};
use crate::rollup::{self, Batch, Mode, Summary};
use crate::store::{LeaseStore, MarkStore};
use crate::window::Period;

/// How a run ended, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Succeeded; closed windows still waiting (a backlog larger than one run takes).
    Succeeded {
        backlog: usize,
    },
    Failed,
}

/// One run of one period: rewrite what a takeover made doubtful, plan from the watermark, roll
/// up, confirm the lease, advance the watermark, refresh late windows, record.
pub async fn run_period(
    store: &(impl RollupStore + TickStore + LateEventStore + RetentionStore + MarkStore + LeaseStore),
    config: &Config,
    clock: &impl Clock,
    status: &Status,
    period: Period,
    tenure: &Tenure,
) -> RunEnd {
    let started = Instant::now();
    let now = clock.now();
    let mut windows_planned = Vec::new();
    let result: Result<(usize, usize, usize, usize)> = async {
        let horizon = retention_horizon(store, config, now).await?;
        rewrite_pending(store, config, period, now, horizon, tenure).await?;
        let watermark = match store.watermark(period).await? {
            Some(stored) => {
                let w = respect_retention(&config.calendar, period, stored, horizon);
                if w > stored {
                    warn!(
                        period = %period, from = %stored.to_rfc3339(), to = %w.to_rfc3339(),
                        "windows never aggregated are past the audit log's retention: left without documents (recompute --force builds them from what is left)"
                    );
                }
                w
            }
            None => initial_watermark(&config.calendar, period, now, config.start_from, horizon),
        };
        if config.period(period).incremental {
            let ran = run_incremental(
                store,
                config,
                period,
                now,
                horizon,
                watermark,
                tenure,
                &mut windows_planned,
            )
            .await?;
            windows_planned.clone_from(&ran.windows);
            status.set_watermark(period, ran.watermark_after);
            if let Some(late) = &ran.late {
                status.record_late(period, late);
            }
            let summary = Summary::of(&ran.reports);
            return Ok((
                summary.created,
                summary.changed,
                summary.unchanged,
                ran.backlog,
            ));
        }
        let plan = plan_run(
            &config.calendar,
            period,
            config.period(period),
            now,
            watermark,
        );
        windows_planned.clone_from(&plan.windows);
        tenure.note(store, period, &plan.windows, now).await?;
        let batch = Batch {
            period,
            windows: &plan.windows,
            now,
            mode: Mode::Write,
            // One chunk for the whole run.
            chunk_windows: plan.windows.len(),
            fence: Some(&tenure.fence),
        };
        let reports = rollup::process(store, config, batch, |_| {}).await?;
        confirm_lease(store, &tenure.fence).await?;
        if plan.watermark_after > watermark {
            store
                .advance_watermark(period, plan.watermark_after, now)
                .await?;
        }
        status.set_watermark(period, plan.watermark_after);
        // Events written late into windows before this run's: found by their _ids.
        let before = plan
            .windows
            .first()
            .map_or(plan.watermark_after, |w| w.start);
        if let Some(late) =
            refresh_late_windows(store, config, period, now, before, horizon, tenure).await?
        {
            status.record_late(period, &late);
        }
        let summary = Summary::of(&reports);
        Ok((
            summary.created,
            summary.changed,
            summary.unchanged,
            plan.backlog_after,
        ))
    }
    .await;

    let duration = started.elapsed();
    let from = windows_planned.first().map(|w| w.start.to_rfc3339());
    let to = windows_planned.last().map(|w| w.end.to_rfc3339());
    let from = from.as_deref().unwrap_or("-");
    let to = to.as_deref().unwrap_or("-");
    let record = |outcome, error| RunRecord {
        period,
        outcome,
        windows: windows_planned.len(),
        duration,
        error,
    };
    match result {
        Ok((created, changed, unchanged, backlog)) => {
            info!(
                period = %period, from, to, windows = windows_planned.len(), created, changed,
                unchanged, backlog, duration_ms = duration.as_millis() as u64, outcome = "success",
                "run finished"
            );
            status.record_run(record(RunOutcome::Success, None), clock.now());
            RunEnd::Succeeded { backlog }
        }
        Err(e) => {
            warn!(
                period = %period, from, to, windows = windows_planned.len(),
                duration_ms = duration.as_millis() as u64, outcome = "failed",
                error = %Chain(&e), "run failed; retried at the next tick"
            );
            if matches!(e, Error::NotMigrated { .. }) {
                status.setup_suspect();
            }
            status.record_run(
                record(RunOutcome::Failed, Some(e.metric_label())),
                clock.now(),
            );
            RunEnd::Failed
        }
    }
}
