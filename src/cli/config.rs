//! `vcmetrics config`: the effective configuration (every key, its value, where it came from;
//! the password redacted), or with `--check` only whether it is valid, as `promtool check
//! config` does for Prometheus.

use std::io::Write;
use std::path::Path;

use crate::config::{self, effective, ConfigError, ProcessEnv};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only validate: exit 0 when the configuration is valid, else 2 with every problem, one a
    /// line, each naming its key or environment variable.
    #[arg(long)]
    pub check: bool,
}

/// Loads the configuration itself (the other commands get it loaded), so that problems are
/// printed one a line and the origins are known.
pub fn run(file: Option<&Path>, args: Args) -> Result<()> {
    let (config, origins) = match config::load_traced(file, &ProcessEnv) {
        Ok(loaded) => loaded,
        Err(ConfigError::Invalid(problems)) => {
            for p in &problems {
                eprintln!("{}: {}", p.key, p.message);
            }
            return Err(Error::Usage(format!(
                "{} problem(s) in the configuration",
                problems.len()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let text = if args.check {
        format!(
            "configuration OK ({})\n",
            file.map_or_else(
                || "no file: defaults and environment".to_owned(),
                |f| format!("file {}", f.display())
            )
        )
    } else {
        effective::render(&config, &origins, file)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(Error::Output)
}
