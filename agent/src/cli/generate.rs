//! `imds-agent generate`: man pages and shell completions from the command
//! line's own definition, for packaging.

use std::process::ExitCode;

use super::Cli;

/// What `generate` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum Generated {
    /// imds-agent(1) and a page for each command.
    Man,
    /// Completions for bash.
    Bash,
    /// Completions for zsh.
    Zsh,
    /// Completions for fish.
    Fish,
}

/// Writes `what`: the man pages into `dir`, completions to stdout.
pub(super) fn generate(what: Generated, dir: Option<&std::path::Path>) -> ExitCode {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    let written = match (what, dir) {
        (Generated::Man, Some(dir)) => clap_mangen::generate_to(command, dir),
        (Generated::Man, None) => Err(std::io::Error::other("man pages need --dir")),
        (Generated::Bash | Generated::Zsh | Generated::Fish, _) => {
            let shell = match what {
                Generated::Bash => clap_complete::Shell::Bash,
                Generated::Zsh => clap_complete::Shell::Zsh,
                _ => clap_complete::Shell::Fish,
            };
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut command, "imds-agent", &mut out);
            Ok(())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imds-agent: generate: {e}");
            ExitCode::from(3)
        }
    }
}
