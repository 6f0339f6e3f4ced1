//! SIGHUP before the agent catches it.

/// Ignores SIGHUP until the config reloader catches it: the agent sets up
/// the host (seconds, with eBPF or many roles) before its runtime starts,
/// and a `kill -HUP` (an operator's, a log rotation's) in that window
/// would otherwise end it with the default action. The reloader's handler
/// replaces this once it runs. The helpers forked meanwhile (the stop
/// helper, the executable helper) keep ignoring it, which suits them:
/// they end with the agent, not at a hangup.
pub fn ignore_until_caught() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installs no handler, only SIG_IGN: nothing runs in signal
    // context.
    #[allow(unsafe_code)]
    let ignored = unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) };
    if let Err(e) = ignored {
        // Logging is not set up yet.
        eprintln!("imds-agent: cannot ignore SIGHUP during the start: {e}");
    }
}
