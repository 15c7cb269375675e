//! `vcmetrics man <dir>`: the man pages, generated from the command-line definition
//! (clap_mangen): `vcmetrics.1` and one page per command (`vcmetrics-run.1`, ...).

use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the pages (created if missing), e.g. /usr/local/share/man/man1.
    pub dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.dir).map_err(Error::Output)?;
    clap_mangen::generate_to(Cli::command(), &args.dir).map_err(Error::Output)?;
    println!("man pages written to {}", args.dir.display());
    Ok(())
}
