//! Log output: `tracing` events to the journal, with structured fields, or
//! to stderr as text, filtered by the configured level.
//!
//! In the journal every field of an event is a field of the entry, upper
//! case with an `F_` prefix: `journalctl -u imds-agent F_ROLE=web` finds
//! every request a workload made with role `web`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogTarget;

/// Where journald listens.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Installs the global subscriber. `level` is a `tracing` filter that the
/// config has already checked; an unparsable one falls back to `info`.
pub fn init(level: &str, target: LogTarget) {
    // libmnl's binding logs every netlink message at debug: noise, unless
    // asked for by name.
    let quiet = if level.contains("mnl") {
        String::new()
    } else {
        ",mnl=warn".to_owned()
    };
    let filter =
        EnvFilter::try_new(format!("{level}{quiet}")).unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = match target {
        LogTarget::Stderr => None,
        LogTarget::Auto if !under_journal() => None,
        LogTarget::Auto | LogTarget::Journald => match tracing_journald::layer() {
            Ok(layer) => Some(layer.with_syslog_identifier("imds-agent".to_owned())),
            Err(e) => {
                eprintln!("imds-agent: cannot log to the journal ({e}); logging to stderr");
                None
            }
        },
    };
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match journal {
        Some(journal) => registry.with(journal).try_init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .try_init(),
    };
}

/// Whether systemd connected stderr to the journal (`$JOURNAL_STREAM`) and
/// the journal is there to take structured entries.
fn under_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && std::path::Path::new(JOURNAL_SOCKET).exists()
}
