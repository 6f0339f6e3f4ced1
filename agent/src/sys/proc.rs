//! Constants and limits of the process itself, in the units /proc uses.

/// Clock ticks a second (`_SC_CLK_TCK`), the unit of /proc's CPU times.
#[allow(unsafe_code)]
pub fn clock_ticks() -> i64 {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

/// The page size (`_SC_PAGESIZE`), the unit of /proc's memory sizes.
#[allow(unsafe_code)]
pub fn page_size() -> i64 {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }
}

/// The soft limit of open file descriptors (`RLIMIT_NOFILE`).
#[allow(unsafe_code)]
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0).then_some(limit.rlim_cur)
}

/// When the system booted, in seconds since the epoch: the wall clock less
/// the time since boot. /proc/stat's `btime` says the same, but the unit's
/// `ProcSubset=pid` hides /proc/stat.
#[allow(unsafe_code)]
pub fn boot_time() -> Option<f64> {
    let read = |clock| {
        let mut at = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into the struct given.
        (unsafe { libc::clock_gettime(clock, &raw mut at) } == 0)
            .then(|| at.tv_sec as f64 + at.tv_nsec as f64 / 1e9)
    };
    Some(read(libc::CLOCK_REALTIME)? - read(libc::CLOCK_BOOTTIME)?)
}
