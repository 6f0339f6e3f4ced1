//! Cgroups: from the id the kernel reports for a socket to the cgroup's
//! path, and from the path to what it says about the workload (systemd
//! unit, user, container).
//!
//! A cgroup v2 id is the inode number of its directory. The index maps ids
//! to paths from a walk of the cgroup2 mount, done off the request path by
//! `rescan` (on start, and when a lookup misses). Ids are not reused within
//! a boot, so a path, once known, stays right for as long as the id exists.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where cgroup2 is mounted, from `/proc/self/mountinfo` text: the unified
/// hierarchy (`/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "36 25 0:31 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw"
        let (before, after) = line.split_once(" - ")?;
        let fstype = after.split_whitespace().next()?;
        let root = before.split_whitespace().nth(3)?;
        let mount_point = before.split_whitespace().nth(4)?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape_mount(mount_point)))
    })
}

/// mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let octal: String = chars.by_ref().take(3).collect();
            if let Ok(byte) = u8::from_str_radix(&octal, 8) {
                out.push(char::from(byte));
                continue;
            }
            out.push('\\');
            out.push_str(&octal);
        } else {
            out.push(c);
        }
    }
    out
}

/// Maps cgroup ids to paths (relative to the cgroup2 root, starting with
/// `/`).
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    paths: RwLock<HashMap<u64, Arc<str>>>,
}

impl CgroupIndex {
    /// An empty index of the cgroup2 hierarchy mounted at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            paths: RwLock::default(),
        }
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of cgroup `id`, if the last walk saw it.
    pub fn path(&self, id: u64) -> Option<Arc<str>> {
        self.paths
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every path the last walk saw.
    pub fn all(&self) -> Vec<Arc<str>> {
        self.paths
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Walks the hierarchy and replaces the index. Blocking: run it off the
    /// request path.
    pub fn rescan(&self) -> io::Result<usize> {
        let mut found = HashMap::new();
        walk(&self.root, &self.root, &mut found)?;
        let count = found.len();
        *self.paths.write().unwrap_or_else(|e| e.into_inner()) = found;
        Ok(count)
    }
}

fn walk(root: &Path, dir: &Path, found: &mut HashMap<u64, Arc<str>>) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let relative = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let path = format!("/{}", relative.display());
    found.insert(meta.ino(), Arc::from(path.as_str()));
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A cgroup removed during the walk is simply not there.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            match walk(root, &entry.path(), found) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// What a cgroup path says about its workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CgroupFacts {
    /// The innermost systemd unit (`nginx.service`, `docker-….scope`).
    pub unit: Option<String>,
    /// The user whose slice it is in (`user-1000.slice`).
    pub user_slice: Option<u32>,
    /// The container it belongs to: a 64-hex-digit id from
    /// `docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
    /// `crio-<id>.scope` or `libpod-<id>.scope`.
    pub container_id: Option<String>,
}

const UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".swap", ".timer"];
const CONTAINER_PREFIXES: &[&str] = &["docker-", "cri-containerd-", "crio-", "libpod-"];

/// Reads `path` (`/system.slice/docker-<id>.scope`, …).
pub fn facts(path: &str) -> CgroupFacts {
    let mut facts = CgroupFacts::default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, segment) in segments.iter().enumerate() {
        if UNIT_SUFFIXES.iter().any(|s| segment.ends_with(s)) {
            facts.unit = Some((*segment).to_owned());
        }
        if let Some(uid) = segment
            .strip_prefix("user-")
            .and_then(|s| s.strip_suffix(".slice"))
            .and_then(|s| s.parse().ok())
        {
            facts.user_slice = Some(uid);
        }
        let scoped = segment
            .strip_suffix(".scope")
            .and_then(|s| CONTAINER_PREFIXES.iter().find_map(|p| s.strip_prefix(p)));
        // cgroupfs drivers: /docker/<id>, /kubepods/…/<id>, /libpod_parent/…
        let bare = (i > 0 && is_container_id(segment)).then_some(*segment);
        if let Some(id) = scoped.filter(|id| is_container_id(id)).or(bare) {
            facts.container_id = Some(id.to_owned());
        }
    }
    facts
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "692a086d46c2fec1d44f7ea5fa9673b9903cd6466e48696442026b8920e95b68";

    #[test]
    fn finds_the_unified_mount() {
        let hybrid = "24 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      25 24 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      26 24 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        let bind = "40 30 0:26 /sub /mnt/x rw - cgroup2 cgroup2 rw\n41 30 0:26 / /mnt/with\\040space rw - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(bind),
            Some(PathBuf::from("/mnt/with space")),
            "a sub-tree bind is not the root"
        );
        assert_eq!(cgroup2_mount("garbage\n"), None);
    }

    #[test]
    fn reads_workloads_from_paths() {
        let cases = [
            ("/", CgroupFacts::default()),
            (
                "/system.slice/nginx.service",
                CgroupFacts {
                    unit: Some("nginx.service".into()),
                    ..Default::default()
                },
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope",
                CgroupFacts {
                    unit: Some("app-firefox-1234.scope".into()),
                    user_slice: Some(1000),
                    ..Default::default()
                },
            ),
            (
                &format!("/system.slice/docker-{ID}.scope"),
                CgroupFacts {
                    unit: Some(format!("docker-{ID}.scope")),
                    container_id: Some(ID.into()),
                    ..Default::default()
                },
            ),
            (
                &format!("/docker/{ID}"),
                CgroupFacts {
                    container_id: Some(ID.into()),
                    ..Default::default()
                },
            ),
            (
                &format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
                CgroupFacts {
                    unit: Some(format!("cri-containerd-{ID}.scope")),
                    container_id: Some(ID.into()),
                    ..Default::default()
                },
            ),
            (
                &format!("/machine.slice/libpod-{ID}.scope/container"),
                CgroupFacts {
                    unit: Some(format!("libpod-{ID}.scope")),
                    container_id: Some(ID.into()),
                    ..Default::default()
                },
            ),
            (
                "/system.slice/docker-notanid.scope",
                CgroupFacts {
                    unit: Some("docker-notanid.scope".into()),
                    ..Default::default()
                },
            ),
            (&format!("/{ID}"), CgroupFacts::default()),
        ];
        for (path, want) in cases {
            assert_eq!(facts(path), want, "{path}");
        }
    }

    #[test]
    fn indexes_a_directory_tree_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/web.service")).unwrap();
        let index = CgroupIndex::new(dir.path().to_owned());
        assert_eq!(index.rescan().unwrap(), 3);
        let ino = std::fs::metadata(dir.path().join("system.slice/web.service"))
            .unwrap()
            .ino();
        assert_eq!(
            index.path(ino).as_deref(),
            Some("/system.slice/web.service")
        );
        let root_ino = std::fs::metadata(dir.path()).unwrap().ino();
        assert_eq!(index.path(root_ino).as_deref(), Some("/"));
        std::fs::remove_dir(dir.path().join("system.slice/web.service")).unwrap();
        index.rescan().unwrap();
        assert_eq!(index.path(ino), None, "a removed cgroup leaves the index");
    }
}
