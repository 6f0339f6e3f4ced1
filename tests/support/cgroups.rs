//! A cgroup2 tree of the test's own: a private mount of the cgroup2 file
//! system in a temporary directory (`ip netns exec` hides /sys/fs/cgroup,
//! this mount stays visible), with a directory of the test's own under it.
//! Everything is removed on drop, deepest first (also what a test's
//! processes made themselves): stray processes are moved back to the root
//! first, then the directories go, then the mount.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::netns::unique;

/// The test's cgroups.
pub struct Cgroups {
    mount: tempfile::TempDir,
    /// The test's own directory, relative to the cgroup2 root
    /// (`/imds-e2e-…`).
    pub base: String,
}

impl Cgroups {
    /// Mounts cgroup2 and makes `/imds-e2e-…/<name>` for every name (in
    /// order: `a` before `a/b`).
    pub fn new(names: &[&str]) -> Cgroups {
        let mount = tempfile::tempdir().expect("a temporary directory");
        let status = Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(mount.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting cgroup2");
        let base = format!("/imds-e2e-{}", unique("c"));
        let cgroups = Cgroups { mount, base };
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

    /// Hands cgroup `name` to `uid` as systemd delegates a subtree: the
    /// directory and the files that let its owner make and fill cgroups
    /// below it.
    pub fn delegate(&self, name: &str, uid: u32) {
        let dir = self.dir(name);
        for path in [
            dir.clone(),
            dir.join("cgroup.procs"),
            dir.join("cgroup.threads"),
            dir.join("cgroup.subtree_control"),
        ] {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// A command prefix that runs a program in network namespace `ns` as
    /// `uid`, in cgroup `sub` that the user makes itself below the cgroup
    /// `delegated` (handed to it by `delegate`): what any user can do in
    /// their own subtree.
    pub fn exec_prefix_as(&self, ns: &str, delegated: &str, sub: &str, uid: u32) -> Vec<String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/sh/in_own_cgroup.sh");
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            ns.into(),
            script.display().to_string(),
            self.dir(delegated).display().to_string(),
            sub.into(),
            uid.to_string(),
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

impl Cgroups {
    /// Removes `dir` and every cgroup below it, deepest first.
    fn remove_tree(&self, dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    self.remove_tree(&entry.path());
                }
            }
        }
        self.evacuate(dir);
        let _ = std::fs::remove_dir(dir);
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.remove_tree(&self.dir(""));
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}
