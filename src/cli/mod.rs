//! The command line: one subcommand, one module, one args struct. Each module is glue between
//! the arguments, the configuration and the library; the work happens below.

pub mod archive;
pub mod check;
pub mod completions;
pub mod config;
pub mod generate;
pub mod health;
pub mod man;
pub mod migrate;
pub mod pipelines;
pub mod recompute;
pub mod roles;
pub mod run;
pub mod verify;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::{Parser, Subcommand};

use crate::config::{Config, ProcessEnv};
use crate::error::{Error, Result};
use crate::rollup::{plan_range, RangePlan};
pub use crate::window::parse_instant;
use crate::window::Period;

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
    /// Print the least-privilege MongoDB roles (createRole commands) for the configuration.
    Roles(roles::Args),
    /// Check the platform's data against the schema's validation rules; exit 3 when broken.
    Check(check::Args),
    /// Move audit events older than archive.after into the archive before the TTL deletes them.
    Archive(archive::Args),
    /// Print the effective configuration: every key, its value and where it came from.
    Config(config::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(completions::Args),
    /// Print the man pages (roff) into a directory: vcmetrics.1 and one per command.
    Man(man::Args),
}

/// `--period`, `--from`, `--to`, shared by the range commands.
#[derive(Debug, Clone, clap::Args)]
pub struct RangeArgs {
    /// hourly, daily, weekly, monthly, or all
    #[arg(long, value_parser = parse_period_choice)]
    pub period: PeriodChoice,
    /// Start of the range: RFC 3339 (2026-03-01T10:00:00Z), a date or local date-time in the
    /// configured time zone (2026-03-01, 2026-03-01T10:00), `now`, or `now-<duration>`
    /// (now-30d, now-6h). Widened to whole windows.
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

impl Range {
    /// Each period's closed windows of the range, as of `now`.
    pub fn plans(&self, config: &Config, now: DateTime<Utc>) -> Vec<RangePlan> {
        self.periods
            .iter()
            .map(|&p| plan_range(config, p, self.from, self.to, now))
            .collect()
    }
}

/// True when no window of the plans has closed: the answer needs no server.
pub fn nothing_closed(plans: &[RangePlan]) -> bool {
    plans.iter().all(|plan| plan.windows.is_empty())
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

/// A progress bar on stderr when it is a terminal, hidden otherwise (logs, CI, cron), drawn
/// with `template` (indicatif's).
pub fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The first SIGTERM or SIGINT starts a graceful shutdown (`run`) or stops after the current
/// batch (`archive`); a second one exits at once (130).
pub(crate) async fn forward_signals(shutdown: tokio::sync::watch::Sender<bool>) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        tracing::warn!("cannot listen for SIGTERM; stop with SIGINT");
        let _ = tokio::signal::ctrl_c().await;
        let _ = shutdown.send(true);
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    let _ = shutdown.send(true);
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}

pub fn load_config(cli_config: Option<&std::path::Path>) -> Result<Config> {
    Ok(crate::config::load(cli_config, &ProcessEnv)?)
}

/// Runs the parsed command line; the binary maps the error to an exit code.
pub async fn run(cli: Cli) -> Result<()> {
    // These need no valid configuration (or load it themselves).
    let command = match cli.command {
        Command::Config(args) => return config::run(cli.config.as_deref(), args),
        Command::Completions(args) => return completions::run(args),
        Command::Man(args) => return man::run(args),
        other => other,
    };
    let config = load_config(cli.config.as_deref())?;
    let cli = Cli {
        config: cli.config,
        command,
    };
    match cli.command {
        Command::Run(args) => run::run(&config, args).await,
        Command::Migrate(args) => migrate::run(&config, args).await,
        Command::Recompute(args) => recompute::run(&config, args).await,
        Command::Verify(args) => verify::run(&config, args).await,
        Command::Pipelines(args) => pipelines::run(&config, args),
        Command::Generate(args) => generate::run(&config, args).await,
        Command::Health(args) => health::run(&config, args).await,
        Command::Roles(args) => roles::run(&config, args),
        Command::Check(args) => check::run(&config, args).await,
        Command::Archive(args) => archive::run(&config, args).await,
        Command::Config(_) | Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
