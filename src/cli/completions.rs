//! `vcmetrics completions <shell>`: shell completions generated from the command-line definition
//! (clap_complete), so they never drift from it.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: Args) -> Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "vcmetrics",
        &mut std::io::stdout(),
    );
    Ok(())
}
