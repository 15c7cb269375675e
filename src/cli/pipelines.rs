//! `vcmetrics pipelines`: print the exact commands a recompute of a range would send.

use bson::{Bson, Document};
use chrono::{DateTime, Utc};

use super::{parse_instant, RangeArgs};
use crate::config::Config;
use std::io::Write;

use crate::error::{Error, Result};
use crate::pipeline::{chunk_commands, Target};
use crate::rollup::{chunks, plan_range};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Print what a recompute at this instant would send (default: now). Decides which windows have
    /// closed, and the `createdAt`/`updatedAt` values bound into the commands.
    #[arg(long)]
    pub now: Option<String>,
}

/// Prints a JSON array of `{"database": ..., "command": ...}` objects in relaxed Extended JSON,
/// in the order a run sends them. Run one by hand in mongosh with
/// `db.getSiblingDB(database).runCommand(EJSON.parse(JSON.stringify(command)))`.
pub fn run(config: &Config, args: Args) -> Result<()> {
    let tz = config.calendar.time_zone();
    let range = args.range.resolve(tz)?;
    let now = match &args.now {
        Some(s) => parse_instant("--now", s, tz)?,
        None => Utc::now(),
    };
    let commands = commands(config, &range.periods, range.from, range.to, now)?;
    let json =
        Bson::Array(commands.into_iter().map(Bson::Document).collect()).into_relaxed_extjson();
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{json:#}") {
        // `vcmetrics pipelines ... | head` closing the pipe early is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output(e)),
        _ => Ok(()),
    }
}

fn commands(
    config: &Config,
    periods: &[crate::window::Period],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Document>> {
    let target = Target::of(config);
    let mut out = Vec::new();
    for &period in periods {
        let plan = plan_range(config, period, from, to, now);
        for chunk in chunks(&plan.windows, config.period(period).chunk_windows) {
            let c = chunk_commands(&target, period, chunk, now)?;
            for (database, command) in [
                (&c.seed.database, c.seed.to_command()),
                (&c.rollup.database, c.rollup.to_command()),
            ] {
                out.push(bson::doc! {"database": database, "command": command});
            }
        }
    }
    Ok(out)
}
