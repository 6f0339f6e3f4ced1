//! Who runs in a cgroup: the uids of its processes, for prefetching the
//! roles of rules that name a uid. Read off the request path only (after a
//! walk of the cgroup tree), and bounded.

use std::collections::BTreeSet;
use std::path::Path;

/// Processes of one cgroup looked at, at most: a cgroup holding more is
/// judged by these (prefetch is a guess; the request decides).
const MAX_PROCESSES: usize = 256;

/// The effective uids of the processes in cgroup `path` below the cgroup2
/// mount `root` (what a socket they make is owned by). Empty when the
/// cgroup is gone or unreadable, or /proc hides other users' processes.
pub fn uids_in(root: &Path, path: &str) -> BTreeSet<u32> {
    let procs = root.join(path.trim_start_matches('/')).join("cgroup.procs");
    let Ok(text) = std::fs::read_to_string(&procs) else {
        return BTreeSet::new();
    };
    text.lines()
        .take(MAX_PROCESSES)
        .filter_map(|pid| pid.trim().parse::<u32>().ok())
        .filter_map(effective_uid)
        .collect()
}

/// The effective uid of process `pid` (`Uid:` in /proc/PID/status: real,
/// effective, saved, file system).
fn effective_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uid_of_this_process() {
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(effective_uid(std::process::id()), Some(me));
        assert_eq!(effective_uid(u32::MAX), None);
    }

    #[test]
    fn a_cgroup_that_is_not_there_holds_no_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(uids_in(dir.path(), "/nope").is_empty());
        std::fs::create_dir(dir.path().join("unit")).unwrap();
        let me = std::process::id();
        std::fs::write(
            dir.path().join("unit/cgroup.procs"),
            format!("{me}\nnot-a-pid\n4294967295\n"),
        )
        .unwrap();
        assert_eq!(
            uids_in(dir.path(), "/unit"),
            BTreeSet::from([nix::unistd::geteuid().as_raw()])
        );
    }
}
