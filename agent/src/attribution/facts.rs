//! What a cgroup path says about its workload, believing only names that
//! nobody but root could have given.
//!
//! Any user may make cgroups where the tree is delegated to them, and name
//! them as they like: systemd hands every user `user@UID.service` (try
//! `systemd-run --user --unit nginx.service`), `Delegate=yes` units hand
//! their subtree to the service, and root may `chown` any directory to a
//! user. So a name counts only when the directory it is in is root's and
//! not delegated; below the first delegated directory a path says nothing
//! root vouches for. The walk of the cgroup tree (`cgroup.rs`) knows each
//! directory's owner and marks each segment; this module only reads the
//! marks and the names, with no I/O.
//!
//! What follows from that:
//! - `unit`: a **system** unit, as systemd places them: the first segment
//!   that is not a slice, below root-named slices only
//!   (`/system.slice/nginx.service`, `/system.slice/nginx.service/worker`).
//!   A unit's sub-cgroups are the unit's.
//! - `user_unit`: below `user@UID.service` (a user's manager), the first
//!   segment that is not a slice is that user's unit: "user UID's unit X"
//!   and no more. The uid comes from the root-named `user@UID.service`.
//! - `trusted`: the path down to the deepest root-named cgroup; what `cgroup`
//!   rules match, so a glob can't be satisfied by a user's own directory.
//! - A container is never identified by a name here: only the container
//!   registry's record of a container's cgroup says a cgroup is a
//!   container's. `container_scope` is a hint that the registry should know
//!   this cgroup (wait for it), never a fact.

/// One segment of a cgroup path and whether root named it (its parent is
/// root's, not delegated, and root-named itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The directory's name.
    pub name: &'a str,
    /// Whether only root could have given that name.
    pub root_named: bool,
}

/// A user's unit, below their `user@UID.service`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserUnit {
    /// The user whose manager it is under.
    pub uid: u32,
    /// The unit's name, as the user gave it (`sync.service`).
    pub name: String,
}

/// What a cgroup's path says, as far as root vouches for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CgroupFacts {
    /// The system unit (`nginx.service`, `user@1000.service`,
    /// `docker-….scope`).
    pub unit: Option<String>,
    /// The user whose slice it is in (`user-1000.slice`).
    pub user_slice: Option<u32>,
    /// A unit of a user's own manager.
    pub user_unit: Option<UserUnit>,
    /// The path down to the deepest root-named cgroup (`/` when none).
    pub trusted: String,
    /// A root-named segment looks like a container runtime's cgroup
    /// (`docker-<id>.scope`, `/docker/<id>`, …): the container registry
    /// should know it.
    pub container_scope: bool,
}

impl CgroupFacts {
    /// A name for the workload (its `RoleSessionName`): the unit, a user's
    /// unit (with the uid: the name is the user's choice), or the last
    /// segment root named.
    pub fn label(&self) -> Option<String> {
        match (&self.user_unit, &self.unit) {
            (Some(user), _) => Some(format!("u{}-{}", user.uid, user.name)),
            (None, Some(unit)) => Some(unit.clone()),
            (None, None) => self
                .trusted
                .rsplit('/')
                .find(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }
}

/// The suffixes of systemd unit names that own cgroups.
const UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".swap"];
const CONTAINER_PREFIXES: &[&str] = &["docker-", "cri-containerd-", "crio-", "libpod-"];

/// Reads a path's segments, root to leaf.
pub fn facts(segments: &[Segment<'_>]) -> CgroupFacts {
    let mut facts = CgroupFacts::default();
    let trusted: Vec<&str> = segments
        .iter()
        .take_while(|s| s.root_named)
        .map(|s| s.name)
        .collect();
    facts.trusted = format!("/{}", trusted.join("/"));
    facts.container_scope = trusted
        .iter()
        .enumerate()
        .any(|(i, s)| names_container_cgroup(s, i));
    // Slices first, then the unit: how systemd lays the tree out.
    let mut rest = segments.iter();
    for segment in rest.by_ref() {
        if !segment.root_named {
            return facts;
        }
        if segment.name.ends_with(".slice") {
            if let Some(uid) = user_slice_uid(segment.name) {
                facts.user_slice = Some(uid);
            }
            continue;
        }
        if is_unit(segment.name) {
            facts.unit = Some(segment.name.to_owned());
        }
        break;
    }
    let Some(uid) = facts.unit.as_deref().and_then(user_manager_uid) else {
        return facts;
    };
    // Below a user's manager, whoever named them: the user's own units.
    let user_unit = rest
        .map(|s| s.name)
        .find(|name| !name.ends_with(".slice"))
        .filter(|name| is_unit(name));
    facts.user_unit = user_unit.map(|name| UserUnit {
        uid,
        name: name.to_owned(),
    });
    facts
}

/// `user@1000.service` → 1000: a user's systemd manager, whose subtree
/// systemd delegates to that user.
pub fn user_manager_uid(name: &str) -> Option<u32> {
    name.strip_prefix("user@")?
        .strip_suffix(".service")?
        .parse()
        .ok()
}

fn user_slice_uid(name: &str) -> Option<u32> {
    name.strip_prefix("user-")?
        .strip_suffix(".slice")?
        .parse()
        .ok()
}

fn is_unit(name: &str) -> bool {
    UNIT_SUFFIXES
        .iter()
        .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
}

/// Whether the segment at `depth` is named like a container runtime's
/// cgroup for container `id` (any id when `None`): `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, or
/// a bare id below the root (`/docker/<id>`, cgroupfs drivers).
fn names_container_cgroup(segment: &str, depth: usize) -> bool {
    container_id_in(segment, depth).is_some()
}

/// The container id a segment is named after, if it is.
pub fn container_id_in(segment: &str, depth: usize) -> Option<&str> {
    let scoped = segment
        .strip_suffix(".scope")
        .and_then(|s| CONTAINER_PREFIXES.iter().find_map(|p| s.strip_prefix(p)));
    let bare = (depth > 0).then_some(segment);
    scoped.or(bare).filter(|id| is_container_id(id))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What `path` says when root named all of it (tests, and paths known to
/// be root's).
pub fn of_root_named(path: &str) -> CgroupFacts {
    facts(&all_root_named(path))
}

/// The segments of `path`, every one named by root.
pub fn all_root_named(path: &str) -> Vec<Segment<'_>> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|name| Segment {
            name,
            root_named: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "692a086d46c2fec1d44f7ea5fa9673b9903cd6466e48696442026b8920e95b68";

    /// `path`, with every segment from `first_user_named` on named by a
    /// user.
    fn segments(path: &str, first_user_named: usize) -> Vec<Segment<'_>> {
        all_root_named(path)
            .into_iter()
            .enumerate()
            .map(|(i, s)| Segment {
                root_named: i < first_user_named,
                ..s
            })
            .collect()
    }

    fn unit(name: &str) -> Option<String> {
        Some(name.to_owned())
    }

    #[test]
    fn system_units_come_from_root_named_slices() {
        let web = facts(&all_root_named("/system.slice/nginx.service/worker"));
        assert_eq!(web.unit, unit("nginx.service"));
        assert_eq!(web.trusted, "/system.slice/nginx.service/worker");
        let nested = facts(&all_root_named("/system.slice/app.slice/web.service"));
        assert_eq!(nested.unit, unit("web.service"), "slices nest");
        // A unit's sub-cgroup named like a unit is still the outer unit's.
        let inner = facts(&all_root_named("/system.slice/a.service/b.service"));
        assert_eq!(inner.unit, unit("a.service"));
        // Not below slices: not a systemd unit.
        assert_eq!(facts(&all_root_named("/ci/nginx.service")).unit, None);
        assert_eq!(facts(&all_root_named("/")).trusted, "/");
        assert_eq!(facts(&all_root_named("/a.service")).unit, unit("a.service"));
        assert_eq!(facts(&all_root_named("/.service")).unit, None);
    }

    #[test]
    fn a_users_own_cgroups_are_that_users_units_at_most() {
        // What `systemd-run --user --unit nginx.service` makes.
        let path = "/user.slice/user-4242.slice/user@4242.service/app.slice/nginx.service";
        let got = facts(&segments(path, 3));
        assert_eq!(got.unit, unit("user@4242.service"), "not nginx.service");
        assert_eq!(got.user_slice, Some(4242));
        assert_eq!(
            got.user_unit,
            Some(UserUnit {
                uid: 4242,
                name: "nginx.service".into()
            })
        );
        assert_eq!(got.trusted, "/user.slice/user-4242.slice/user@4242.service");
        // Even if the walk saw the manager's directory as root's (systemd
        // chowns it a moment after making it), its name says it is a user's.
        let early = facts(&all_root_named(path));
        assert_eq!(early.unit, unit("user@4242.service"));
        assert_eq!(early.user_unit.unwrap().name, "nginx.service");
        // The manager's own cgroups.
        let manager = facts(&segments(
            "/user.slice/user-1000.slice/user@1000.service/init.scope",
            3,
        ));
        assert_eq!(manager.user_unit.unwrap().name, "init.scope");
        let bare = facts(&segments(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/mine",
            3,
        ));
        assert_eq!(bare.user_unit, None);
    }

    #[test]
    fn a_name_in_a_delegated_directory_is_no_unit() {
        // Root chowned /delegated.slice to a user, who made a unit-like name.
        let got = facts(&segments("/delegated.slice/nginx.service", 1));
        assert_eq!(got.unit, None);
        assert_eq!(got.trusted, "/delegated.slice");
        // A slice a user named: nothing below counts either.
        let got = facts(&segments("/system.slice/evil.slice/nginx.service", 1));
        assert_eq!(got.unit, None);
        assert_eq!(got.user_unit, None);
        // Below a Delegate=yes scope: the scope is the unit.
        let got = facts(&segments(
            &format!("/system.slice/docker-{ID}.scope/payload/system.slice/nginx.service"),
            2,
        ));
        assert_eq!(got.unit, Some(format!("docker-{ID}.scope")));
        assert!(got.container_scope);
    }

    #[test]
    fn container_names_are_hints_from_root_named_segments_only() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert!(facts(&all_root_named(&path)).container_scope, "{path}");
        }
        for path in [
            "/system.slice/docker-notanid.scope".to_owned(),
            format!("/{ID}"),
        ] {
            assert!(!facts(&all_root_named(&path)).container_scope, "{path}");
        }
        // A user's scope named after a running container's id.
        let forged = format!("/user.slice/user-4242.slice/user@4242.service/docker-{ID}.scope");
        assert!(!facts(&segments(&forged, 3)).container_scope);
        assert_eq!(container_id_in(&format!("docker-{ID}.scope"), 1), Some(ID));
    }
}
