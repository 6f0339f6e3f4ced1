//! The process's own metrics under the names every Prometheus client uses
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, ...), read from /proc/self when the metrics are read.
//! Nothing here is on the request path.

use std::fmt::Write as _;

use super::help;
use crate::sys::proc;

/// What /proc/self says of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory, in bytes.
    pub virtual_bytes: u64,
    /// When the process started, in seconds since the epoch (if the boot
    /// time is known).
    pub start_time_seconds: Option<f64>,
}

/// Reads /proc/self/stat; `None` if it can't be read or parsed.
pub fn read_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stats(
        &stat,
        proc::boot_time(),
        proc::clock_ticks(),
        proc::page_size(),
    )
}

/// `stat` is /proc/self/stat, `boot` when the system booted (seconds since
/// the epoch); `ticks` clock ticks per second, `page` the page size.
fn parse_stats(stat: &str, boot: Option<f64>, ticks: i64, page: i64) -> Option<ProcessStats> {
    if ticks <= 0 || page <= 0 {
        return None;
    }
    // The command name is in parentheses and may hold spaces and
    // parentheses itself: the fields start after the last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // Field n of proc(5) is fields[n - 3]: the state (field 3) comes first.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime, start, vsize, rss) =
        (field(14)?, field(15)?, field(22)?, field(23)?, field(24)?);
    let ticks = ticks as f64;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_bytes: rss.saturating_mul(page.unsigned_abs()),
        virtual_bytes: vsize,
        start_time_seconds: boot.map(|boot| boot + start as f64 / ticks),
    })
}

/// Open file descriptors and their limit.
fn fds() -> (Option<usize>, Option<u64>) {
    let open = std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count);
    (open, proc::open_files_limit())
}

/// The process's metrics, in the text format; what can't be read is left
/// out rather than reported as 0.
pub fn render(out: &mut String) {
    if let Some(stats) = read_stats() {
        help(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", stats.cpu_seconds);
        help(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory, in bytes.",
        );
        let _ = writeln!(
            out,
            "process_resident_memory_bytes {}",
            stats.resident_bytes
        );
        help(
            out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory, in bytes.",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {}", stats.virtual_bytes);
        if let Some(start) = stats.start_time_seconds {
            help(
                out,
                "process_start_time_seconds",
                "gauge",
                "When the process started, in seconds since the epoch.",
            );
            let _ = writeln!(out, "process_start_time_seconds {start:.2}");
        }
    }
    let (open, max) = fds();
    if let Some(open) = open {
        help(out, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(out, "process_open_fds {open}");
    }
    if let Some(max) = max {
        help(
            out,
            "process_max_fds",
            "gauge",
            "The limit of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        // A command name with spaces and a ')' of its own.
        let stat = "4242 (imds) a (b)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 300 18446744073709551615";
        let stats = parse_stats(stat, Some(1_700_000_000.0), 100, 4096).unwrap();
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.resident_bytes, 300 * 4096);
        assert_eq!(stats.virtual_bytes, 123_456_789);
        assert_eq!(stats.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(parse_stats("garbage", None, 100, 4096), None);
        let unknown_boot = parse_stats(stat, None, 100, 4096).unwrap();
        assert_eq!(unknown_boot.start_time_seconds, None);
        assert_eq!(unknown_boot.cpu_seconds, 3.0);
    }

    #[test]
    fn reads_this_process() {
        let stats = read_stats().expect("/proc/self/stat");
        assert!(stats.resident_bytes > 0);
        let started = stats.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started > now - 86_400.0 * 365.0 && started <= now + 1.0,
            "{started}"
        );
        let mut out = String::new();
        render(&mut out);
        assert!(
            out.contains("process_open_fds ") && out.contains("process_max_fds "),
            "{out}"
        );
    }
}
