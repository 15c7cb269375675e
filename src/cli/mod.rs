//! The command line: one subcommand, one module, one args struct. Each module is glue between
//! the arguments, the configuration and the library; the work happens below.

pub mod generate;
pub mod health;
pub mod migrate;
pub mod pipelines;
pub mod recompute;
pub mod run;
pub mod verify;

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use clap::{Parser, Subcommand};

use crate::config::{self, Config, ProcessEnv};
use crate::error::{Error, Result};
use crate::window::{Calendar, Period};

/// vcmetrics: hourly, daily, weekly and monthly video-call metrics from MongoDB audit logs.
#[derive(Debug, Parser)]
#[command(name = "vcmetrics", version, about)]
pub struct Cli {
    /// TOML configuration file; MONGODB_URI and VCMETRICS_* environment variables override it.
    #[arg(long, short = 'c', global = true, env = "VCMETRICS_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: refresh every period on its schedule, catch up after downtime.
    Run(run::Args),
    /// Create the indexes both collections need (idempotent); never silently changes a TTL.
    Migrate(migrate::Args),
    /// Rebuild the metrics documents of a range of windows from the audit log.
    Recompute(recompute::Args),
    /// Compare stored metrics documents with the audit log, writing nothing; exit 3 on drift.
    Verify(verify::Args),
    /// Print the exact MongoDB commands a recompute of a range would send, as Extended JSON.
    Pipelines(pipelines::Args),
    /// Write realistic demo audit events (call flows, daily rhythm, errors, malformed, late).
    Generate(generate::Args),
    /// Exit 0 when the running daemon's /healthz (or --ready: /readyz) answers 200.
    Health(health::Args),
}

/// `--period`, `--from`, `--to`, shared by the range commands.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// hourly, daily, weekly, monthly, or all
    #[arg(long, value_parser = parse_period_choice)]
    pub period: PeriodChoice,
    /// Start of the range: RFC 3339 (2026-03-01T10:00:00Z), or a date or local date-time in the
    /// configured time zone (2026-03-01, 2026-03-01T10:00). Widened to whole windows.
    #[arg(long)]
    pub from: String,
    /// End of the range (exclusive), same forms as --from. Widened to whole windows.
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodChoice {
    One(Period),
    All,
}

impl PeriodChoice {
    pub fn periods(self) -> Vec<Period> {
        match self {
            PeriodChoice::One(p) => vec![p],
            PeriodChoice::All => Period::ALL.to_vec(),
        }
    }
}

fn parse_period_choice(s: &str) -> Result<PeriodChoice, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(PeriodChoice::All);
    }
    s.parse::<Period>()
        .map(PeriodChoice::One)
        .map_err(|_| "expected hourly, daily, weekly, monthly or all".to_owned())
}

/// A validated range: periods and the instants it spans.
#[derive(Debug, Clone)]
pub struct Range {
    pub periods: Vec<Period>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl RangeArgs {
    pub fn resolve(&self, tz: Tz) -> Result<Range> {
        let from = parse_instant("--from", &self.from, tz)?;
        let to = parse_instant("--to", &self.to, tz)?;
        if from >= to {
            return Err(Error::Usage(format!(
                "--from ({}) must be before --to ({})",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
        }
        Ok(Range {
            periods: self.period.periods(),
            from,
            to,
        })
    }
}

/// Parses an instant given on the command line: RFC 3339, `now`, `now-<duration>` (`now-30d`), or
/// a date or date-time without offset, which is local time in `tz`.
pub fn parse_instant(flag: &str, s: &str, tz: Tz) -> Result<DateTime<Utc>> {
    if let Some(rest) = s.strip_prefix("now") {
        let ago = match rest.strip_prefix('-') {
            Some(d) => humantime::parse_duration(d)
                .ok()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{flag} {s:?}: {d:?} is not a duration (e.g. now-30d)"
                    ))
                })?,
            None if rest.is_empty() => chrono::Duration::zero(),
            None => {
                return Err(Error::Usage(format!(
                    "{flag} {s:?} is not a time (try now or now-30d)"
                )))
            }
        };
        return Utc::now()
            .checked_sub_signed(ago)
            .ok_or_else(|| Error::Usage(format!("{flag} {s:?} is too far in the past")));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        // A date means that day's start, also where a clock change skips its midnight.
        return Ok(Calendar::new(tz, Weekday::Mon).day_start(date));
    }
    let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .map_err(|_| {
            Error::Usage(format!(
                "{flag} {s:?} is not a time (expected 2026-03-01T10:00:00Z, 2026-03-01T10:00 or 2026-03-01)"
            ))
        })?;
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            Error::Usage(format!(
                "{flag} {s:?} does not exist in {tz} (skipped by a clock change)"
            ))
        })
}

pub fn load_config(cli_config: Option<&std::path::Path>) -> Result<Config> {
    Ok(config::load(cli_config, &ProcessEnv)?)
}

/// Runs the parsed command line; the binary maps the error to an exit code.
pub async fn run(cli: Cli) -> Result<()> {
    let config = load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Run(args) => run::run(&config, args).await,
        Command::Migrate(args) => migrate::run(&config, args).await,
        Command::Recompute(args) => recompute::run(&config, args).await,
        Command::Verify(args) => verify::run(&config, args).await,
        Command::Pipelines(args) => pipelines::run(&config, args),
        Command::Generate(args) => generate::run(&config, args).await,
        Command::Health(args) => health::run(&config, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_in_three_forms() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let expect = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_instant("--from", "2026-03-01T10:00:00Z", berlin).unwrap(),
            expect("2026-03-01T10:00:00Z")
        );
        assert_eq!(
            parse_instant("--from", "2026-03-01T10:00", berlin).unwrap(),
            expect("2026-03-01T09:00:00Z")
        );
        assert_eq!(
            parse_instant("--from", "2026-07-01", berlin).unwrap(),
            expect("2026-06-30T22:00:00Z")
        );
        let err = parse_instant("--from", "yesterday", berlin).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err
            .to_string()
            .starts_with("--from \"yesterday\" is not a time"));
        assert!(parse_instant("--to", "2026-03-29T02:30", berlin).is_err());
        let ago = Utc::now() - parse_instant("--from", "now-2h", berlin).unwrap();
        assert!((ago - chrono::Duration::hours(2)).num_seconds().abs() <= 1);
        assert!(parse_instant("--from", "now-soon", berlin).is_err());
        // Havana skips midnight on 2026-03-08: the day starts at the transition.
        let havana: Tz = "America/Havana".parse().unwrap();
        assert_eq!(
            parse_instant("--from", "2026-03-08", havana).unwrap(),
            expect("2026-03-08T05:00:00Z")
        );
    }

    #[test]
    fn from_must_precede_to() {
        let args = RangeArgs {
            period: PeriodChoice::One(Period::Daily),
            from: "2026-03-02".into(),
            to: "2026-03-01".into(),
        };
        let err = args.resolve(Tz::UTC).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("must be before --to"));
    }
}
