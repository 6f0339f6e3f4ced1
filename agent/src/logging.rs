//! Log output: `tracing` events to the journal, with structured fields, or
//! to stderr as text, filtered by the configured level.
//!
//! In the journal every field of an event is a field of the entry, upper
//! case with an `F_` prefix: `journalctl -u imds-agent F_ROLE=web` finds
//! every request a workload made with role `web`.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogTarget;

/// Where journald listens.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The installed subscriber's filter, which a config reload replaces.
type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

static FILTER: OnceLock<FilterHandle> = OnceLock::new();

/// The filter for `level`, a `tracing` filter the config has already
/// checked; an unparsable one falls back to `info`.
fn filter(level: &str) -> EnvFilter {
    // libmnl's binding logs every netlink message at debug: noise, unless
    // asked for by name.
    let quiet = if level.contains("mnl") {
        String::new()
    } else {
        ",mnl=warn".to_owned()
    };
    EnvFilter::try_new(format!("{level}{quiet}")).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Filters by `level` from now on (a config reload). Fails if no
/// subscriber was installed by `init`.
pub fn set_level(level: &str) -> Result<(), String> {
    let handle = FILTER
        .get()
        .ok_or_else(|| "logging was not set up".to_owned())?;
    handle.reload(filter(level)).map_err(|e| e.to_string())
}

/// Installs the global subscriber, filtering by `level`.
pub fn init(level: &str, target: LogTarget) {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter(level));
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
    let installed = match journal {
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
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Whether systemd connected stderr to the journal (`$JOURNAL_STREAM`) and
/// the journal is there to take structured entries.
fn under_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && std::path::Path::new(JOURNAL_SOCKET).exists()
}
