//! Sealed memory files (memfd_create(2) with `F_SEAL_*`): bytes that live
//! in memory only, which no holder of the file can change once sealed.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::FileExt as _;

/// memfd_create(2)'s `MFD_NOEXEC_SEAL` (linux/memfd.h).
const MFD_NOEXEC_SEAL: libc::c_uint = 0x0008;

/// The seals that make a file's bytes final.
const FINAL: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A memory file named `name` holding `bytes`, sealed: neither its size
/// nor its bytes can change, and no seal can be removed.
#[allow(unsafe_code)]
pub fn sealed(name: &str, bytes: &[u8]) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let create = |flags| {
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        unsafe { libc::memfd_create(name.as_ptr(), flags) }
    };
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // Never executable (Linux 6.3; `vm.memfd_noexec = 2` requires it);
    // older kernels refuse the flag, and get a file without it.
    let mut fd = create(flags | MFD_NOEXEC_SEAL);
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        fd = create(flags);
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    // SAFETY: F_ADD_SEALS takes an int of seal flags on a valid descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, FINAL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// The bytes of sealed memory file `fd`, if it is one and holds at most
/// `max` bytes. A file that is not sealed could have been changed by
/// whoever else holds it: refused.
#[allow(unsafe_code)]
pub fn read_sealed(fd: OwnedFd, max: u64) -> io::Result<Vec<u8>> {
    // SAFETY: F_GET_SEALS reads the seals of a valid descriptor.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err(io::Error::other(format!(
            "not a memory file: {}",
            io::Error::last_os_error()
        )));
    }
    if seals & FINAL != FINAL {
        return Err(io::Error::other("the memory file is not sealed"));
    }
    let file = File::from(fd);
    let size = file.metadata()?.len();
    if size > max {
        return Err(io::Error::other(format!(
            "the memory file holds {size} bytes, more than {max}"
        )));
    }
    let mut bytes = vec![0; usize::try_from(size).map_err(io::Error::other)?];
    // From the start, whatever the shared file offset is (the writer left
    // it at the end).
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_read_back_and_cannot_change() {
        let fd = sealed("imds-test", b"carried").unwrap();
        let copy = fd.try_clone().unwrap();
        let mut writer = File::from(fd);
        assert!(writer.write_all(b"x").is_err(), "sealed against writes");
        assert!(writer.set_len(0).is_err(), "sealed against shrinking");
        assert_eq!(
            read_sealed(copy.try_clone().unwrap(), 64).unwrap(),
            b"carried"
        );
        assert!(read_sealed(copy, 3).is_err(), "over the bound");
    }

    #[test]
    #[allow(unsafe_code)]
    fn an_unsealed_file_is_refused() {
        let file = tempfile::tempfile().unwrap();
        assert!(read_sealed(OwnedFd::from(file), 64).is_err());
        let name = std::ffi::CString::new("imds-open").unwrap();
        // SAFETY: as in `sealed`.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let err = read_sealed(fd, 64).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");
    }
}
