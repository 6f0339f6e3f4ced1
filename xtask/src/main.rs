//! Project tasks: `cargo xtask test` runs every check CI runs, `cargo xtask
//! bench` measures the agent against ectou-metadata.

mod bench;
mod python;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Formatting, lints and every test (the root-only ones when root).
    Test(test::Options),
    /// The request benchmark, against the agent and ectou-metadata.
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test(options) => test::run(&options),
        Command::Bench(options) => bench::run(&options),
    }
}
