//! What the server knows about one accepted connection, handed to the
//! handler as a request extension.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use crate::attribution::{ConnInfo, Workload};
use crate::creds::Role;

/// One accepted connection.
#[derive(Debug)]
pub struct Connection {
    /// Its two ends.
    pub info: ConnInfo,
    /// The socket, for per-response socket options. `None` for connections
    /// that are not sockets (tests that call the router directly).
    fd: Option<RawFd>,
    identity: Mutex<Option<Arc<Identity>>>,
    /// The role found for the identity, and the assignments' generation
    /// it was found in: requests on one connection come one at a time, and
    /// rarely does a role change between them.
    role: Mutex<Option<(u64, Option<Arc<Role>>)>>,
}

/// Who is behind a connection, worked out when it is accepted. A socket's
/// owner can't change while it is open, so a known identity is never
/// recomputed; an unknown one is, on the next request (a container that
/// was not registered yet may be by then).
#[derive(Debug)]
pub struct Identity {
    /// The workload.
    pub workload: Workload,
    /// Its token binding.
    pub binding: Box<[u8]>,
    /// What the credentials engine keeps it as.
    pub user: crate::creds::User,
}

impl Connection {
    /// A connection on socket `fd`.
    pub fn new(info: ConnInfo, fd: Option<RawFd>) -> Self {
        Self {
            info,
            fd,
            identity: Mutex::new(None),
            role: Mutex::new(None),
        }
    }

    /// The caller's identity, if it is known: not yet worked out, or
    /// `Unknown`, is `None`.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        let identity = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        identity
            .as_ref()
            .filter(|i| !matches!(i.workload, Workload::Unknown(_)))
            .cloned()
    }

    /// Records the caller's identity. A new one means a new role lookup.
    pub fn set_identity(&self, workload: Workload) -> Arc<Identity> {
        let binding = workload.token_binding().into_boxed_slice();
        let user = workload.credentials_user();
        let identity = Arc::new(Identity {
            workload,
            binding,
            user,
        });
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&identity));
        *self.role.lock().unwrap_or_else(|e| e.into_inner()) = None;
        identity
    }

    /// The caller's role: found with `find` unless found before in the
    /// same `generation` of the assignments.
    pub fn role(
        &self,
        generation: u64,
        find: impl FnOnce() -> Option<Arc<Role>>,
    ) -> Option<Arc<Role>> {
        let mut cached = self.role.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((found_in, role)) = &*cached
            && *found_in == generation
        {
            return role.clone();
        }
        let role = find();
        *cached = Some((generation, role.clone()));
        role
    }

    /// Sets the IP hop limit of the rest of this connection's packets.
    pub fn set_hop_limit(&self, hops: u8) -> std::io::Result<()> {
        let Some(fd) = self.fd else { return Ok(()) };
        // SAFETY: the server inserts this `Connection` only into requests
        // of the socket `fd`, and handlers run inside that connection's
        // future, which owns the socket: it is open while this runs.
        #[allow(unsafe_code)]
        unsafe {
            crate::sys::socket::set_hop_limit(fd, self.info.local, hops)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let addr = "127.0.0.1:80".parse().unwrap();
        Connection::new(
            ConnInfo {
                peer: "127.0.0.1:5000".parse().unwrap(),
                local: addr,
                target: addr,
            },
            None,
        )
    }

    /// A connection not identified yet (a container not registered yet)
    /// is identified again on its next request; a known one never is, and
    /// a new identity drops the role found for the old one.
    #[test]
    fn an_unknown_identity_is_not_kept() {
        let c = conn();
        c.set_identity(Workload::Unknown("10.0.0.2".parse().unwrap()));
        assert!(c.identity().is_none(), "asked again next time");
        let role = |name: &str| Some(Arc::new(Role::parse(name).unwrap()));
        assert_eq!(c.role(1, || role("none-yet")).unwrap().name, "none-yet");
        c.set_identity(Workload::Address("10.0.0.2".parse().unwrap()));
        assert!(c.identity().is_some());
        assert_eq!(
            c.role(1, || role("its-own")).unwrap().name,
            "its-own",
            "the old identity's role is gone"
        );
        assert_eq!(c.role(1, || role("again")).unwrap().name, "its-own");
    }
}
