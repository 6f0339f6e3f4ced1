//! Cgroups: from the id the kernel reports for a socket to the cgroup's
//! path, its parent, and what the path says about the workload (`facts.rs`:
//! systemd unit, user, as far as root named it).
//!
//! A cgroup v2 id is the inode number of its directory. The index maps ids
//! to entries from a walk of the cgroup2 mount, done off the request path
//! by `rescan` (on start, and when a lookup misses). Ids are not reused
//! within a boot, so an entry, once known, stays right for as long as the
//! id exists. The walk notes who owns each directory: a name counts only
//! where root alone can make directories.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::facts::{self, CgroupFacts, Segment};

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

/// One cgroup, as the last walk saw it.
#[derive(Debug, Clone)]
pub struct CgroupEntry {
    /// Its path (relative to the cgroup2 root, starting with `/`).
    pub path: Arc<str>,
    /// Its parent's id (`None` for the root).
    pub parent: Option<u64>,
    /// What its path says, as far as root vouches for it.
    pub facts: Arc<CgroupFacts>,
}

/// Maps cgroup ids to what the cgroups are.
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    entries: RwLock<HashMap<u64, CgroupEntry>>,
}

impl CgroupIndex {
    /// An empty index of the cgroup2 hierarchy mounted at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            entries: RwLock::default(),
        }
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Cgroup `id`, if the last walk saw it.
    pub fn entry(&self, id: u64) -> Option<CgroupEntry> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Whether the last walk saw cgroup `id`.
    pub fn contains(&self, id: u64) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    /// The path of cgroup `id`, if the last walk saw it.
    pub fn path(&self, id: u64) -> Option<Arc<str>> {
        self.entry(id).map(|e| e.path)
    }

    /// `id` and its ancestors, innermost first (as far as the last walk saw
    /// them).
    pub fn ancestry(&self, id: u64) -> Vec<u64> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut chain = vec![id];
        let mut at = id;
        while let Some(parent) = entries.get(&at).and_then(|e| e.parent) {
            // Ids are inode numbers of directories in a tree: no cycles, but
            // a bound costs nothing.
            if chain.len() > 512 {
                break;
            }
            chain.push(parent);
            at = parent;
        }
        chain
    }

    /// Every cgroup the last walk saw.
    pub fn all(&self) -> Vec<CgroupEntry> {
        self.entries
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
        // The root itself must be there; anything below that can't be read
        // is left out (see `Walk::dir`).
        std::fs::metadata(&self.root)?;
        let mut walk = Walk {
            root: &self.root,
            found: &mut found,
            segments: Vec::new(),
        };
        walk.dir(&self.root, None, true, None);
        let count = found.len();
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = found;
        Ok(count)
    }
}

/// One walk of the tree: the names from the root to where it is, each with
/// whether root named it.
struct Walk<'a> {
    root: &'a Path,
    found: &'a mut HashMap<u64, CgroupEntry>,
    segments: Vec<(String, bool)>,
}

impl Walk<'_> {
    /// Indexes `dir` (child of `parent`; `root_named`: whether only root
    /// could have named it) and everything below it. A subtree that can't
    /// be read is left out, never the walk: any user can make a cgroup of
    /// its own unreadable (`chmod 000`) or nest cgroups deeper than a path
    /// may be long, and neither may stop the agent seeing everyone else.
    ///
    /// `budget` is what is left of the cgroups one delegated subtree may
    /// add to the index (`None` where root named everything): a user may
    /// make cgroups by the hundred thousand in its own, and the walk must
    /// stay short for everyone else.
    fn dir(
        &mut self,
        dir: &Path,
        parent: Option<u64>,
        root_named: bool,
        mut budget: Option<&mut usize>,
    ) {
        if let Some(left) = budget.as_deref_mut() {
            if *left == 0 {
                return;
            }
            *left -= 1;
        }
        let meta = match std::fs::metadata(dir) {
            Ok(meta) => meta,
            Err(e) => {
                self.skipped(dir, &e);
                return;
            }
        };
        let relative = dir.strip_prefix(self.root).unwrap_or(Path::new(""));
        let segments: Vec<Segment<'_>> = self
            .segments
            .iter()
            .map(|(name, root_named)| Segment {
                name,
                root_named: *root_named,
            })
            .collect();
        let entry = CgroupEntry {
            path: Arc::from(format!("/{}", relative.display()).as_str()),
            parent,
            facts: Arc::new(facts::facts(&segments)),
        };
        let id = meta.ino();
        self.found.insert(id, entry);
        if self.segments.len() >= MAX_DEPTH {
            self.skipped(dir, &io::Error::other("deeper than the walk goes"));
            return;
        }
        // Names made in this directory are root's only if it is root's and
        // root gave it to nobody: not a user's (owner), not delegated
        // (systemd marks `Delegate=yes` cgroups), not a user's manager. The
        // root of the walk is the agent's own world: in a container, the
        // host delegated it to the container's systemd, which is this
        // system's root.
        let name = self.segments.last().map_or("", |(n, _)| n.as_str());
        let children_root_named = parent.is_none()
            || (root_named
                && meta.uid() == 0
                && meta.mode() & 0o022 == 0
                && facts::user_manager_uid(name).is_none()
                && !crate::sys::xattr::is_delegated(dir));
        // Where names stop being root's, a subtree's budget starts.
        let mut fresh = SUBTREE_BUDGET;
        let mut budget = match budget {
            Some(left) => Some(left),
            None if !children_root_named => Some(&mut fresh),
            None => None,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                self.skipped(dir, &e);
                return;
            }
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            self.segments.push((
                entry.file_name().to_string_lossy().into_owned(),
                children_root_named,
            ));
            self.dir(
                &entry.path(),
                Some(id),
                children_root_named,
                budget.as_deref_mut(),
            );
            self.segments.pop();
        }
    }

    /// A subtree left out of this walk: its cgroups are not found (their
    /// workloads get no role) until it can be read.
    fn skipped(&self, dir: &Path, error: &io::Error) {
        // Removed during the walk: simply not there.
        if error.kind() != io::ErrorKind::NotFound {
            tracing::debug!(dir = %dir.display(), %error, "cgroup subtree left out of the walk");
        }
    }
}

/// The id of container `id`'s cgroup on `path` (the unified-hierarchy path
/// of one of its processes, as `/proc/<pid>/cgroup` shows it) below the
/// cgroup2 mount `root`: the directory named after the container
/// (`docker-<id>.scope`, `/docker/<id>`, …), if root named it, as the
/// walk would see it. A directory of that name in a user's own subtree is
/// not the container's, nor is a process in one.
pub fn container_cgroup(root: &Path, path: &str, id: &str) -> Option<u64> {
    let mut dir = root.to_path_buf();
    // The root's children are root-named (see `Walk::dir`).
    let mut names_root_named = true;
    for (depth, segment) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        dir.push(segment);
        let meta = std::fs::metadata(&dir).ok()?;
        if names_root_named && facts::container_id_in(segment, depth) == Some(id) {
            return Some(meta.ino());
        }
        names_root_named = names_root_named
            && meta.uid() == 0
            && meta.mode() & 0o022 == 0
            && facts::user_manager_uid(segment).is_none()
            && !crate::sys::xattr::is_delegated(&dir);
    }
    None
}

/// How deep the walk goes. systemd's deepest trees are under ten levels;
/// deeper is a user nesting cgroups of its own.
const MAX_DEPTH: usize = 64;

/// How many cgroups one subtree a user (or a delegated service) names may
/// add to the index; the rest are left out (their workloads get no role).
const SUBTREE_BUDGET: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A directory a user owns makes every name below it the user's: the
    /// walk marks them, and the facts then trust none of them.
    #[test]
    #[cfg_attr(
        not(feature = "root-tests"),
        ignore = "needs root (chown): `cargo xtask test` runs it"
    )]
    fn names_below_a_users_directory_are_not_roots() {
        let dir = tempfile::tempdir().unwrap();
        let delegated = dir.path().join("work.slice/mine.slice");
        std::fs::create_dir_all(delegated.join("nginx.service")).unwrap();
        std::fs::create_dir_all(dir.path().join("system.slice/nginx.service/sub")).unwrap();
        std::os::unix::fs::chown(&delegated, Some(4242), Some(4242)).unwrap();
        // What a user can do to its own cgroups: nest them deeper than any
        // path may be long. The walk leaves the depths out and goes on.
        let mut deep = delegated.join("deep");
        for _ in 0..MAX_DEPTH + 5 {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        // Or make more of them than the walk takes from one subtree.
        for i in 0..SUBTREE_BUDGET {
            std::fs::create_dir(delegated.join(format!("many-{i}"))).unwrap();
        }
        let index = CgroupIndex::new(dir.path().to_owned());
        index.rescan().unwrap();
        let at = |path: &str| {
            let ino = std::fs::metadata(dir.path().join(path)).unwrap().ino();
            index.entry(ino).unwrap()
        };
        let forged = at("work.slice/mine.slice/nginx.service");
        assert_eq!(forged.facts.unit, None);
        assert_eq!(forged.facts.trusted, "/work.slice/mine.slice");
        assert!(
            index
                .entry(std::fs::metadata(&deep).unwrap().ino())
                .is_none(),
            "too deep: left out"
        );
        let mine = index
            .all()
            .iter()
            .filter(|e| e.path.starts_with("/work.slice/mine.slice"))
            .count();
        assert!(mine <= SUBTREE_BUDGET + 1, "{mine} cgroups of one subtree");
        let real = at("system.slice/nginx.service/sub");
        assert_eq!(real.facts.unit.as_deref(), Some("nginx.service"));
        assert_eq!(real.facts.trusted, "/system.slice/nginx.service/sub");
        let sub_ino = std::fs::metadata(dir.path().join("system.slice/nginx.service/sub"))
            .unwrap()
            .ino();
        let chain: Vec<String> = index
            .ancestry(sub_ino)
            .iter()
            .map(|id| index.path(*id).unwrap().to_string())
            .collect();
        assert_eq!(
            chain,
            [
                "/system.slice/nginx.service/sub",
                "/system.slice/nginx.service",
                "/system.slice",
                "/"
            ]
        );
    }

    /// A container's cgroup is the one root named after it, found from any
    /// of its processes' paths; a user's look-alike is nobody's.
    #[test]
    #[cfg_attr(
        not(feature = "root-tests"),
        ignore = "needs root (chown): `cargo xtask test` runs it"
    )]
    fn a_containers_cgroup_is_the_one_root_named() {
        let id = "692a086d46c2fec1d44f7ea5fa9673b9903cd6466e48696442026b8920e95b68";
        let dir = tempfile::tempdir().unwrap();
        let scope = dir.path().join(format!("system.slice/docker-{id}.scope"));
        std::fs::create_dir_all(scope.join("init.scope")).unwrap();
        let user = dir.path().join("user.slice/u4242");
        std::fs::create_dir_all(user.join(format!("docker-{id}.scope"))).unwrap();
        std::os::unix::fs::chown(&user, Some(4242), Some(4242)).unwrap();
        let ino = std::fs::metadata(&scope).unwrap().ino();
        let path = format!("/system.slice/docker-{id}.scope/init.scope");
        assert_eq!(container_cgroup(dir.path(), &path, id), Some(ino));
        let forged = format!("/user.slice/u4242/docker-{id}.scope");
        assert_eq!(container_cgroup(dir.path(), &forged, id), None);
        assert_eq!(container_cgroup(dir.path(), &path, &"b".repeat(64)), None);
    }
}
