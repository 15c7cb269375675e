//! `vcmetrics recompute`: rebuild the metrics of a range of windows from the audit log.

use chrono::Utc;

use super::{nothing_closed, RangeArgs};
use crate::archive::retention::retention_horizon;
use crate::config::Config;
use crate::error::Result;
use crate::rollup::{self, check_retention, Batch, Mode, Outcome, RangePlan, Summary};
use crate::store::MongoStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Write nothing; print which windows would change and how.
    #[arg(long)]
    pub dry_run: bool,
    /// Also rebuild windows that start before the audit log's retention horizon.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let range = args.range.resolve(config.calendar.time_zone())?;
    let now = Utc::now();
    let plans = range.plans(config, now);
    if nothing_closed(&plans) {
        for plan in &plans {
            print_summary(plan, &Summary::default(), args.dry_run);
        }
        return Ok(());
    }
    let store = MongoStore::connect(config).await?;
    let result = async {
        let horizon = retention_horizon(&store, config, now).await?;
        // Every period passes the guard before anything is written.
        for plan in &plans {
            check_retention(plan, horizon, args.force)?;
        }
        let mode = if args.dry_run {
            Mode::Preview
        } else {
            Mode::Write
        };
        for plan in &plans {
            let bar = super::progress_bar(
                plan.windows.len() as u64,
                "{prefix:>8} [{bar:40}] {pos}/{len} windows, eta {eta}",
            );
            bar.set_prefix(plan.period.as_str());
            let batch = Batch {
                period: plan.period,
                windows: &plan.windows,
                now,
                mode,
                chunk_windows: config.period(plan.period).chunk_windows,
                fence: None,
            };
            let reports =
                rollup::process(&store, config, batch, |done| bar.set_position(done as u64))
                    .await?;
            bar.finish_and_clear();
            if args.dry_run {
                for r in &reports {
                    let at = r.window.start.to_rfc3339();
                    match &r.outcome {
                        Outcome::Created => println!("would create {} {at}", plan.period),
                        Outcome::Changed(diffs) => {
                            let list: Vec<String> = diffs.iter().map(ToString::to_string).collect();
                            println!("would change {} {at}: {}", plan.period, list.join(", "));
                        }
                        Outcome::Unchanged => {}
                    }
                }
            }
            print_summary(plan, &Summary::of(&reports), args.dry_run);
        }
        Ok(())
    }
    .await;
    store.shutdown().await;
    result
}

/// One line per period: how many windows, their span, what happened to them.
fn print_summary(plan: &RangePlan, s: &Summary, dry_run: bool) {
    println!(
        "{}: {} windows {}: {} new, {} changed, {} unchanged{}{}",
        plan.period,
        s.windows,
        rollup::describe(&plan.windows),
        s.created,
        s.changed,
        s.unchanged,
        if plan.not_closed > 0 {
            format!("; {} not closed yet, left to the daemon", plan.not_closed)
        } else {
            String::new()
        },
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
    );
}
