//! The workloads seen recently, with their roles: what `imds-agent who`
//! shows. Bounded: past `CAPACITY` workloads, the one seen longest ago is
//! forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::attribution::Workload;
use crate::creds::Role;

/// How many workloads are remembered.
const CAPACITY: usize = 512;

/// One workload, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenWorkload {
    /// What it is (`unit nginx.service (uid 33)`, `container api (1a2b…)`).
    pub workload: String,
    /// Its systemd unit, if any.
    pub unit: Option<String>,
    /// Its cgroup, if known.
    pub cgroup: Option<String>,
    /// Its container's name, if it is one.
    pub container: Option<String>,
    /// Its socket's uid, if known.
    pub uid: Option<u32>,
    /// The role it got at its last request (`None`: no role).
    pub role: Option<String>,
    /// Its first request (RFC 3339).
    pub first_seen: String,
    /// Its last request (filled in when listed).
    pub last_seen: String,
    /// Requests it made.
    pub requests: u64,
}

#[derive(Debug)]
struct Entry {
    report: SeenWorkload,
    role: Option<Role>,
    last: SystemTime,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Seen {
    entries: Mutex<HashMap<Box<[u8]>, Entry>>,
}

impl Seen {
    /// Records a request of `workload` (known by its token `binding`),
    /// which got `role`.
    pub fn record(
        &self,
        binding: &[u8],
        workload: &Workload,
        role: Option<&Role>,
        now: SystemTime,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(binding) {
            entry.last = now;
            entry.report.requests += 1;
            let same_role = match (&entry.role, role) {
                (None, None) => true,
                (Some(a), Some(b)) => a.spec == b.spec,
                _ => false,
            };
            if !same_role {
                entry.role = role.cloned();
                entry.report.role = role.map(|r| r.spec.to_string());
            }
            return;
        }
        if entries.len() >= CAPACITY
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        let stamp = crate::timefmt::iso8601(now);
        entries.insert(
            binding.into(),
            Entry {
                report: describe(workload, role, stamp),
                role: role.cloned(),
                last: now,
            },
        );
    }

    /// Every workload remembered, most recent first.
    pub fn list(&self) -> Vec<SeenWorkload> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(&SystemTime, &SeenWorkload)> =
            entries.values().map(|e| (&e.last, &e.report)).collect();
        all.sort_by(|a, b| b.0.cmp(a.0));
        all.into_iter()
            .map(|(last, report)| SeenWorkload {
                last_seen: crate::timefmt::iso8601(*last),
                ..report.clone()
            })
            .collect()
    }

    /// How many workloads are remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn describe(workload: &Workload, role: Option<&Role>, stamp: String) -> SeenWorkload {
    let (unit, cgroup, uid) = match workload {
        Workload::Process(p) => (
            p.facts.unit.clone(),
            Some(p.cgroup.to_string()),
            Some(p.uid),
        ),
        _ => (None, None, None),
    };
    SeenWorkload {
        workload: workload.to_string(),
        unit,
        cgroup,
        container: workload.container().map(|c| c.name.clone()),
        uid,
        role: role.map(|r| r.spec.to_string()),
        first_seen: stamp.clone(),
        last_seen: stamp,
        requests: 1,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn counts_and_forgets_the_oldest() {
        let seen = Seen::default();
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
        let role = Role::parse("app").unwrap();
        for i in 0..CAPACITY as u64 + 1 {
            let ip = Workload::Address(format!("10.0.{}.{}", i / 250, i % 250).parse().unwrap());
            seen.record(&ip.token_binding(), &ip, Some(&role), at(i));
        }
        assert_eq!(seen.len(), CAPACITY, "bounded");
        let first = Workload::Address("10.0.0.0".parse().unwrap());
        assert!(
            !seen.list().iter().any(|w| w.workload == first.to_string()),
            "the oldest went"
        );
        let last = Workload::Address("10.0.2.12".parse().unwrap());
        seen.record(&last.token_binding(), &last, None, at(9999));
        let top = &seen.list()[0];
        assert_eq!(top.workload, last.to_string());
        assert_eq!((top.requests, top.role.as_deref()), (2, None));
    }
}
