//! The `vcmetrics` binary: parse the command line, start logging, run, map errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vcmetrics::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(code)
        }
    }
}

/// Logs go to stderr: text (coloured on a terminal), or one JSON object per line with
/// `VCMETRICS_LOG_FORMAT=json`. `VCMETRICS_LOG` is an env-filter (default `info`); one that does
/// not parse is said on stderr, and the default applies.
fn init_logging() {
    let filter = match std::env::var("VCMETRICS_LOG") {
        Ok(text) => EnvFilter::try_new(&text).unwrap_or_else(|e| {
            eprintln!("warning: VCMETRICS_LOG={text:?} is not a log filter ({e}); using \"info\"");
            EnvFilter::new("info")
        }),
        Err(_) => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("VCMETRICS_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
