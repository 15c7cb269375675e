//! `vcmetrics pipelines`: print the exact commands a recompute of a range would send.

use bson::{doc, Bson, Document};
use chrono::{DateTime, Utc};

use super::{parse_instant, RangeArgs};
use crate::config::Config;
use std::io::Write;

use crate::archive::retention::horizon;
use crate::archive::state::ArchiveRead;
use crate::error::{Error, Result};
use crate::rollup::commands::Target;
use crate::rollup::late_scan::{object_id_at, LateScan};
use crate::rollup::{check_retention, plan_chunks, plan_range, tick};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Print what a recompute at this instant would send (default: now). Decides which windows have
    /// closed, and the `createdAt`/`updatedAt` values bound into the commands.
    #[arg(long)]
    pub now: Option<String>,
    /// Also print windows that start before the audit log's retention horizon (as recompute
    /// --force would rebuild them).
    #[arg(long)]
    pub force: bool,
    /// Print the read-only aggregate `recompute --dry-run` and `verify` send instead: one per
    /// chunk, returning the documents a run would write.
    #[arg(long, conflicts_with = "late_scan")]
    pub dry_run: bool,
    /// Print the late-event scan a daemon run at --now sends instead: --from is the period's
    /// late-event mark (events written from then on, by their `_id`), --to is where the run's
    /// windows start (events timestamped before it are late). One aggregate per period.
    #[arg(long)]
    pub late_scan: bool,
    /// Print an incremental hourly run at --now instead: --from is its mark (the first minute of
    /// writes not yet kept), --to its origin (the first hourly window kept incrementally). It
    /// keeps every settled minute of writes, merges the user sets, and writes every hourly window
    /// from the origin's to the one open at --now.
    #[arg(long, conflicts_with_all = ["late_scan", "dry_run", "archive"])]
    pub tick: bool,
    /// Print the commands as they are for windows whose events `vcmetrics archive` may have
    /// moved: each scan also reads the archive (`$unionWith`, after copying it into the staging
    /// collection when it lives in another database).
    #[arg(long, conflicts_with = "late_scan")]
    pub archive: bool,
}

/// Prints a JSON array of `{"database": ..., "command": ...}` objects in relaxed Extended JSON,
/// in the order a run sends them (a run sends each chunk's three scans at once; one after the other
/// gives the same result). Run one by hand in mongosh with
/// `db.getSiblingDB(database).runCommand(EJSON.parse(JSON.stringify(command)))`.
pub fn run(config: &Config, args: Args) -> Result<()> {
    let tz = config.calendar.time_zone();
    let now = match &args.now {
        Some(s) => parse_instant("--now", s, tz)?,
        None => Utc::now(),
    };
    if args.late_scan {
        // Two unrelated instants (a write time and a window start), in no required order.
        let since = parse_instant("--from", &args.range.from, tz)?;
        let first_window = parse_instant("--to", &args.range.to, tz)?;
        let commands = args
            .range
            .period
            .periods()
            .into_iter()
            .map(|period| late_scan_command(config, period, since, first_window, now))
            .collect::<Result<Vec<_>>>()?;
        return print(commands);
    }
    if args.tick {
        let since = parse_instant("--from", &args.range.from, tz)?;
        let origin = parse_instant("--to", &args.range.to, tz)?;
        return print(tick_commands(
            config,
            args.range.period,
            since,
            origin,
            now,
        )?);
    }
    let range = args.range.resolve(tz)?;
    // The same guard as recompute's: commands printed for windows the TTL has thinned would
    // overwrite correct history with undercounts if run by hand. Without a server the horizon
    // comes from the configuration: `audit_retention`, else `audit_ttl` (what migrate sets).
    let horizon = horizon(
        Some(config.audit_retention.unwrap_or(config.audit_ttl)),
        now,
    );
    for &period in &range.periods {
        check_retention(
            &plan_range(config, period, range.from, range.to, now),
            horizon,
            args.force,
        )?;
    }
    let commands = commands(
        config,
        &range.periods,
        range.from,
        range.to,
        now,
        args.dry_run,
        args.archive,
    )?;
    if commands.is_empty() {
        // Still a valid (empty) JSON array on stdout, for scripts; the reason for people.
        eprintln!(
            "no window of the range has closed by {}: nothing to send",
            now.to_rfc3339()
        );
    }
    print(commands)
}

/// The scan a run of `period` at `now` sends with its mark at `since`, its windows starting at
/// the window of `first_window`.
fn late_scan_command(
    config: &Config,
    period: crate::window::Period,
    since: DateTime<Utc>,
    first_window: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Document> {
    let settle = chrono::Duration::from_std(config.late_events.settle).unwrap_or_default();
    let scan = LateScan {
        since: object_id_at(since),
        until: object_id_at(now - settle),
        before: config.calendar.window_start(period, first_window),
        limit: config.late_events.scan_limit,
    };
    let command = scan.command(&Target::of(config))?;
    Ok(doc! {"database": &command.database, "command": command.to_command()})
}

/// An incremental hourly run at `now` with its mark at `since`, writing every hourly window from
/// the one of `origin` to the open one.
fn tick_commands(
    config: &Config,
    periods: super::PeriodChoice,
    since: DateTime<Utc>,
    origin: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<Document>> {
    if periods.periods() != [tick::PERIOD] {
        return Err(Error::Usage(format!(
            "--tick prints the {} period's incremental runs: give --period {}",
            tick::PERIOD,
            tick::PERIOD
        )));
    }
    let settle = chrono::Duration::from_std(config.late_events.settle).unwrap_or_default();
    let origin = config.calendar.window_start(tick::PERIOD, origin);
    let until = tick::slice_start(now - settle).max(tick::slice_start(since));
    let open = config.calendar.window_containing(tick::PERIOD, now);
    let windows = config
        .calendar
        .windows_covering(tick::PERIOD, origin, open.end.max(origin));
    let commands = tick::tick_commands(&Target::of(config), origin, since, until, &windows, now)?;
    Ok(commands
        .into_iter()
        .map(|(database, command)| doc! {"database": database, "command": command})
        .collect())
}

fn print(commands: Vec<Document>) -> Result<()> {
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
    dry_run: bool,
    archive: bool,
) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    let archive = archive.then(ArchiveRead::default);
    for &period in periods {
        let plan = plan_range(config, period, from, to, now);
        let chunk_windows = config.period(period).chunk_windows;
        let chunks = plan_chunks(
            config,
            period,
            &plan.windows,
            chunk_windows,
            now,
            archive.as_ref(),
        )?;
        for chunk in chunks {
            let c = chunk.commands;
            if dry_run {
                // A copied archive is read from the staging collection; the cleanup removes it.
                let preview = c.bring.iter().chain([&c.preview]);
                for command in preview {
                    out.push(doc! {"database": &command.database, "command": command.to_command()});
                }
                if c.bring.is_some() {
                    out.push(
                        doc! {"database": &c.cleanup.database, "command": c.cleanup.to_command()},
                    );
                }
                continue;
            }
            for (database, command) in c.in_order() {
                out.push(doc! {"database": database, "command": command});
            }
        }
    }
    Ok(out)
}
