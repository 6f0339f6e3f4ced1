//! Project tasks: `cargo xtask test` runs every check CI runs, `cargo xtask
//! bench` measures the agent against ectou-metadata, `cargo xtask install`
//! and `uninstall` put it in place as a systemd service.

mod bench;
mod install;
mod python;
mod rootfs;
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
    /// Install the agent as a systemd service: binary, unit, sample config
    /// and role rules (never overwriting an operator's files).
    Install(install::Options),
    /// Reverse `install`: stop and disable the service, remove its table
    /// and address, and the files (the config and rules only if unchanged).
    Uninstall(install::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test(options) => test::run(&options),
        Command::Bench(options) => bench::run(&options),
        Command::Install(options) => install::install(&options),
        Command::Uninstall(options) => install::uninstall(&options),
    }
}
