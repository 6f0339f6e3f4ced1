//! Extended attributes: how systemd marks a delegated cgroup.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// The attributes systemd (251+) sets to "1" on the cgroup of a
/// `Delegate=yes` unit. `trusted.*` can only be set (and read) with
/// CAP_SYS_ADMIN; `user.*` on a root-owned cgroup only by root.
const DELEGATE: [&std::ffi::CStr; 2] = [c"trusted.delegate", c"user.delegate"];

/// Whether the cgroup directory `path` is marked delegated.
pub fn is_delegated(path: &Path) -> bool {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    DELEGATE
        .iter()
        .any(|name| get(&path, name).as_deref() == Some(b"1"))
}

/// The value of attribute `name` of `path` (at most 16 bytes), if set.
#[allow(unsafe_code)]
fn get(path: &std::ffi::CStr, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let mut value = [0u8; 16];
    // SAFETY: both names are NUL-terminated strings that outlive the call,
    // and `value` is a writable buffer of the length passed.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let len = usize::try_from(len).ok()?;
    Some(value.get(..len)?.to_vec())
}
