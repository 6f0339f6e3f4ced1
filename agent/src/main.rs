//! The `imds-agent` binary: see `imds_agent::cli`.

fn main() -> std::process::ExitCode {
    imds_agent::cli::main()
}
