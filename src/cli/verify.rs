//! `vcmetrics verify`: recompute a range without writing and compare with what is stored.

use chrono::Utc;

use super::{nothing_closed, RangeArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rollup::{self, Batch, Mode, Outcome};
use crate::store::MongoStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let range = args.range.resolve(config.calendar.time_zone())?;
    let now = Utc::now();
    let plans = range.plans(config, now);
    if nothing_closed(&plans) {
        for plan in &plans {
            println!(
                "{}: 0 windows checked (no window of the range has closed), 0 differ",
                plan.period
            );
        }
        return Ok(());
    }
    let store = MongoStore::connect(config).await?;
    let result = async {
        let mut drifted = 0;
        for plan in &plans {
            let period = plan.period;
            let batch = Batch {
                period,
                windows: &plan.windows,
                now,
                mode: Mode::Preview,
                chunk_windows: config.period(period).chunk_windows,
                fence: None,
            };
            let reports = rollup::process(&store, config, batch, |_| {}).await?;
            for r in &reports {
                let at = r.window.start.to_rfc3339();
                match &r.outcome {
                    Outcome::Unchanged => {}
                    Outcome::Created => {
                        drifted += 1;
                        println!("{period} {at}: no stored document");
                    }
                    Outcome::Changed(diffs) => {
                        drifted += 1;
                        let list: Vec<String> = diffs.iter().map(ToString::to_string).collect();
                        println!("{period} {at}: {}", list.join(", "));
                    }
                }
            }
            println!(
                "{period}: {} windows checked {}, {} differ",
                reports.len(),
                rollup::describe(&plan.windows),
                reports
                    .iter()
                    .filter(|r| r.outcome != Outcome::Unchanged)
                    .count()
            );
        }
        if drifted > 0 {
            return Err(Error::Drift { windows: drifted });
        }
        Ok(())
    }
    .await;
    store.shutdown().await;
    result
}
