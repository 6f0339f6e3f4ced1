//! What `GET /metrics` reports, in Prometheus' text format (0.0.4).
//!
//! Counters and the latency histograms are process-wide atomics, so the
//! request path pays one relaxed increment per counter and takes no lock.
//! Gauges that describe state (readiness, rules, roles and their expiry)
//! are computed when the metrics are read, and so are the process's own
//! (`process`).

mod histogram;
pub mod process;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::imds::Class;
use histogram::Histogram;

const CLASSES: [Class; 6] = [
    Class::Token,
    Class::Credentials,
    Class::Iam,
    Class::Metadata,
    Class::UserData,
    Class::Refused,
];

/// The statuses counted one by one; anything else counts as `other`.
const STATUSES: [u16; 9] = [200, 400, 401, 403, 404, 405, 500, 502, 503];

/// Request histogram bounds, in microseconds.
const BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 1_000_000,
];

/// STS call histogram bounds, in microseconds: a call takes tens of
/// milliseconds in-region and times out after seconds.
const STS_BUCKETS_US: [u64; 11] = [
    10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    30_000_000,
];

/// The STS calls the agent makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsAction {
    /// `AssumeRole`.
    AssumeRole,
    /// `GetSessionToken`.
    GetSessionToken,
    /// `GetCallerIdentity`.
    GetCallerIdentity,
}

const STS_ACTIONS: [(StsAction, &str); 3] = [
    (StsAction::AssumeRole, "AssumeRole"),
    (StsAction::GetSessionToken, "GetSessionToken"),
    (StsAction::GetCallerIdentity, "GetCallerIdentity"),
];

/// How an STS call ended, as an operator alerts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StsOutcome {
    /// STS answered with what was asked for.
    Success,
    /// STS throttled the call (the account's rate quota, which can't be
    /// raised: a fleet restarting at once is the usual cause).
    Throttled,
    /// STS refused: the agent's identity may not do this.
    AccessDenied,
    /// Anything else: unreachable, a 5xx, bad keys, a bad parameter.
    Error,
}

const STS_OUTCOMES: [(StsOutcome, &str); 4] = [
    (StsOutcome::Success, "success"),
    (StsOutcome::Throttled, "throttled"),
    (StsOutcome::AccessDenied, "access_denied"),
    (StsOutcome::Error, "error"),
];

/// How a credentials request was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From the cache, at once.
    Cached,
    /// After waiting for the role's first fetch.
    AfterFirstFetch,
}

/// The process's counters.
#[derive(Debug)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len() + 1]; CLASSES.len()],
    latency: Histogram<{ BUCKETS_US.len() }>,
    sts: [[AtomicU64; STS_OUTCOMES.len()]; STS_ACTIONS.len()],
    sts_latency: [Histogram<{ STS_BUCKETS_US.len() }>; STS_ACTIONS.len()],
    served: [AtomicU64; 2],
    forwarded: [AtomicU64; 2],
    refused_connections: AtomicU64,
}

static METRICS: Metrics = Metrics::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// A counter at zero (arrays of atomics are built from it).
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

impl Metrics {
    const fn new() -> Self {
        Self {
            requests: [const { [ZERO; STATUSES.len() + 1] }; CLASSES.len()],
            latency: Histogram::new(BUCKETS_US),
            sts: [const { [ZERO; STS_OUTCOMES.len()] }; STS_ACTIONS.len()],
            sts_latency: [const { Histogram::new(STS_BUCKETS_US) }; STS_ACTIONS.len()],
            served: [ZERO; 2],
            forwarded: [ZERO; 2],
            refused_connections: ZERO,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, class: Class, status: u16, latency: Duration) {
        let class = CLASSES.iter().position(|c| *c == class).unwrap_or(0);
        let status = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        self.requests[class][status].fetch_add(1, Relaxed);
        self.latency.observe(latency);
    }

    /// Counts one STS call, which took `took`.
    pub fn sts_call(&self, action: StsAction, outcome: StsOutcome, took: Duration) {
        let index = STS_ACTIONS
            .iter()
            .position(|(a, _)| *a == action)
            .unwrap_or(0);
        let kind = STS_OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(STS_OUTCOMES.len() - 1);
        self.sts[index][kind].fetch_add(1, Relaxed);
        self.sts_latency[index].observe(took);
    }

    /// Counts one credentials answer.
    pub fn credentials_served(&self, how: Served) {
        self.served[usize::from(how == Served::AfterFirstFetch)].fetch_add(1, Relaxed);
    }

    /// Counts one request forwarded to the real IMDS (proxy mode).
    pub fn forwarded(&self, ok: bool) {
        self.forwarded[usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// Counts one connection closed because its workload (or owner) had
    /// its share of connections open.
    pub fn connection_refused(&self) {
        self.refused_connections.fetch_add(1, Relaxed);
    }

    /// Every request answered so far.
    pub fn requests_total(&self) -> u64 {
        self.latency.count()
    }

    /// The counters and the histogram, in the text format.
    pub fn render(&self, out: &mut String) {
        help(
            out,
            "imds_requests_total",
            "counter",
            "Requests answered, by what they asked for and the status.",
        );
        for (c, class) in CLASSES.iter().enumerate() {
            for (s, counter) in self.requests[c].iter().enumerate() {
                let value = counter.load(Relaxed);
                if value == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(s)
                    .map_or("other".to_owned(), ToString::to_string);
                let _ = writeln!(
                    out,
                    "imds_requests_total{{class=\"{}\",status=\"{status}\"}} {value}",
                    class.as_str()
                );
            }
        }
        help(
            out,
            "imds_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer.",
        );
        self.latency
            .render(out, "imds_request_duration_seconds", "");
        help(
            out,
            "imds_sts_calls_total",
            "counter",
            "STS calls made, by action and outcome (success, throttled, access_denied, error).",
        );
        for (i, (_, name)) in STS_ACTIONS.iter().enumerate() {
            for ((_, outcome), counter) in STS_OUTCOMES.iter().zip(&self.sts[i]) {
                let _ = writeln!(
                    out,
                    "imds_sts_calls_total{{action=\"{name}\",outcome=\"{outcome}\"}} {}",
                    counter.load(Relaxed)
                );
            }
        }
        help(
            out,
            "imds_sts_call_duration_seconds",
            "histogram",
            "Time an STS call took, whatever its outcome, by action.",
        );
        for (i, (_, name)) in STS_ACTIONS.iter().enumerate() {
            self.sts_latency[i].render(
                out,
                "imds_sts_call_duration_seconds",
                &format!("action=\"{name}\","),
            );
        }
        help(
            out,
            "imds_credentials_served_total",
            "counter",
            "Credentials answers, by whether they waited for a first fetch (no request ever waits on a refresh).",
        );
        for (how, counter) in ["cached", "after_first_fetch"].iter().zip(&self.served) {
            let _ = writeln!(
                out,
                "imds_credentials_served_total{{from=\"{how}\"}} {}",
                counter.load(Relaxed)
            );
        }
        help(
            out,
            "imds_proxy_requests_total",
            "counter",
            "Requests forwarded to the real IMDS (proxy mode), by outcome.",
        );
        for (outcome, counter) in ["success", "error"].iter().zip(&self.forwarded) {
            let _ = writeln!(
                out,
                "imds_proxy_requests_total{{outcome=\"{outcome}\"}} {}",
                counter.load(Relaxed)
            );
        }
        help(
            out,
            "imds_connections_refused_total",
            "counter",
            "Connections closed at once: their workload or its owner had its share of connections open.",
        );
        let _ = writeln!(
            out,
            "imds_connections_refused_total {}",
            self.refused_connections.load(Relaxed)
        );
    }
}

/// `# HELP` and `# TYPE` lines for a metric.
pub fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the format requires.
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `imds_agent_build_info`: always 1, its labels say which build runs.
pub fn render_build_info(out: &mut String) {
    help(
        out,
        "imds_agent_build_info",
        "gauge",
        "Always 1; the version label says which build is running.",
    );
    let _ = writeln!(
        out,
        "imds_agent_build_info{{version=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::new();
        m.request(Class::Credentials, 200, Duration::from_micros(80));
        m.request(Class::Credentials, 200, Duration::from_micros(300));
        m.request(Class::Refused, 418, Duration::from_secs(5));
        m.sts_call(
            StsAction::AssumeRole,
            StsOutcome::Success,
            Duration::from_millis(20),
        );
        m.sts_call(
            StsAction::AssumeRole,
            StsOutcome::Error,
            Duration::from_secs(3),
        );
        m.sts_call(
            StsAction::AssumeRole,
            StsOutcome::Throttled,
            Duration::from_secs(40),
        );
        m.credentials_served(Served::Cached);
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "imds_requests_total{class=\"credentials\",status=\"200\"} 2",
            "imds_requests_total{class=\"refused\",status=\"other\"} 1",
            "imds_request_duration_seconds_bucket{le=\"0.0001\"} 1",
            "imds_request_duration_seconds_bucket{le=\"0.0005\"} 2",
            "imds_request_duration_seconds_bucket{le=\"1\"} 2",
            "imds_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "imds_request_duration_seconds_count 3",
            "imds_request_duration_seconds_sum 5.00038",
            "imds_sts_calls_total{action=\"AssumeRole\",outcome=\"success\"} 1",
            "imds_sts_calls_total{action=\"AssumeRole\",outcome=\"error\"} 1",
            "imds_sts_calls_total{action=\"AssumeRole\",outcome=\"throttled\"} 1",
            "imds_sts_calls_total{action=\"AssumeRole\",outcome=\"access_denied\"} 0",
            "imds_sts_call_duration_seconds_bucket{action=\"AssumeRole\",le=\"0.025\"} 1",
            "imds_sts_call_duration_seconds_bucket{action=\"AssumeRole\",le=\"5\"} 2",
            "imds_sts_call_duration_seconds_bucket{action=\"AssumeRole\",le=\"30\"} 2",
            "imds_sts_call_duration_seconds_bucket{action=\"AssumeRole\",le=\"+Inf\"} 3",
            "imds_sts_call_duration_seconds_count{action=\"GetSessionToken\"} 0",
            "imds_credentials_served_total{from=\"cached\"} 1",
            "# TYPE imds_request_duration_seconds histogram",
        ] {
            assert!(out.contains(line), "{line} missing from:\n{out}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
