//! Project tasks: `cargo xtask test` runs every check CI runs, `cargo xtask
//! bench` measures the agent against ectou-metadata, `cargo xtask
//! build-ebpf` builds the eBPF programs, `cargo xtask install`
//! and `uninstall` put it in place as a systemd service.

mod apt;
mod bench;
mod ebpf;
mod install;
mod package;
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
    /// The credentials GET through alias mode and eBPF mode, side by side,
    /// in a network namespace of its own (root).
    BenchRedirect(bench::redirect::Options),
    /// One measurement from where it runs (`bench-redirect` starts it).
    #[command(hide = true)]
    BenchClient(bench::redirect::ClientOptions),
    /// One new workload's first credentials (`bench` starts it).
    #[command(hide = true)]
    BenchFirstRequest {
        /// The agent.
        #[arg(long)]
        addr: std::net::SocketAddr,
    },
    /// Build the eBPF programs (installing their toolchain on a fresh
    /// Debian machine when root) for the agent's `ebpf` feature.
    BuildEbpf(ebpf::Options),
    /// Install the agent as a systemd service: binary, unit, sample config
    /// and role rules (never overwriting an operator's files).
    Install(install::Options),
    /// Reverse `install`: stop and disable the service, remove its table
    /// and address, and the files (the config and rules only if unchanged).
    Uninstall(install::Options),
    /// Build a Debian package (target/debian/imds-agent_VERSION_ARCH.deb):
    /// enabled at install, not started; conffiles, man page, completions.
    Package(package::Options),
    /// Make (once) what the end-to-end tests use, the Python virtualenv and
    /// (as root) the Debian root the systemd tests boot, and print the
    /// environment to run one test binary with `cargo test --test NAME`.
    TestEnv,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test(options) => test::run(&options),
        Command::Bench(options) => bench::run(&options),
        Command::BenchRedirect(options) => bench::redirect::run(&options),
        Command::BenchClient(options) => bench::redirect::client(&options),
        Command::BenchFirstRequest { addr } => bench::first::client(addr),
        Command::BuildEbpf(options) => ebpf::build(&options).map(drop),
        Command::Install(options) => install::install(&options),
        Command::Uninstall(options) => install::uninstall(&options),
        Command::TestEnv => test::print_env(),
        Command::Package(options) => package::package(&options),
    }
}
