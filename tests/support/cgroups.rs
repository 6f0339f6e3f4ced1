//! A cgroup2 tree of the test's own: a private mount of the cgroup2 file
//! system in a temporary directory (`ip netns exec` hides /sys/fs/cgroup,
//! this mount stays visible), with a directory of the test's own under it.
//! Everything is removed on drop: stray processes are moved back to the
//! root first, then the directories go, then the mount.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::netns::unique;

/// The test's cgroups.
pub struct Cgroups {
    mount: tempfile::TempDir,
    /// The test's own directory, relative to the cgroup2 root
    /// (`/imds-e2e-…`).
    pub base: String,
    children: Vec<String>,
}

impl Cgroups {
    /// Mounts cgroup2 and makes `/imds-e2e-…/<name>` for every name.
    pub fn new(names: &[&str]) -> Cgroups {
        let mount = tempfile::tempdir().expect("a temporary directory");
        let status = Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(mount.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting cgroup2");
        let base = format!("/imds-e2e-{}", unique("c"));
        let cgroups = Cgroups {
            mount,
            base,
            children: names.iter().map(|n| n.to_string()).collect(),
        };
        std::fs::create_dir(cgroups.dir("")).expect("creating the test's cgroup");
        for name in names {
            std::fs::create_dir(cgroups.dir(name)).expect("creating a cgroup");
        }
        cgroups
    }

    /// The cgroup2 mount: the agent's `attribution.cgroup_root`.
    pub fn root(&self) -> &Path {
        self.mount.path()
    }

    /// The path of cgroup `name` as rules write it (`/imds-e2e-…/a`).
    pub fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// The directory of cgroup `name` (`""`: the test's own).
    pub fn dir(&self, name: &str) -> PathBuf {
        let relative = if name.is_empty() {
            self.base.clone()
        } else {
            self.path(name)
        };
        self.mount.path().join(relative.trim_start_matches('/'))
    }

    /// A command prefix that runs a program in network namespace `ns` and
    /// cgroup `name`: `ip netns exec NS sh -c 'echo $$ > …; exec "$@"' sh`.
    pub fn exec_prefix(&self, ns: &str, name: &str) -> Vec<String> {
        let procs = self.dir(name).join("cgroup.procs");
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.into(),
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$@\"", procs.display()),
            "sh".into(),
        ]
    }

    fn evacuate(&self, dir: &Path) {
        let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            return;
        };
        for pid in procs.lines() {
            let _ = std::fs::write(self.mount.path().join("cgroup.procs"), pid);
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for name in &self.children {
            let dir = self.dir(name);
            self.evacuate(&dir);
            let _ = std::fs::remove_dir(&dir);
        }
        let own = self.dir("");
        self.evacuate(&own);
        let _ = std::fs::remove_dir(&own);
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}
