//! Log output: `tracing` events to stderr, filtered by the configured level.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is a `tracing` filter that the
/// config has already checked; an unparsable one falls back to `info`.
pub fn init(level: &str) {
    // libmnl's binding logs every netlink message at debug: noise, unless
    // asked for by name.
    let quiet = if level.contains("mnl") {
        String::new()
    } else {
        ",mnl=warn".to_owned()
    };
    let filter =
        EnvFilter::try_new(format!("{level}{quiet}")).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
