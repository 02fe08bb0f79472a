//! This process's own CPU time and memory, read from the kernel: what `/metrics` reports under the names of
//! Prometheus' process collector, so a fleet's dashboards read perch like any other exporter.

use std::time::Duration;

/// A reading of the process's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time of every thread, since the process started.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_s: f64,
    /// Threads of the process.
    pub threads: u64,
    /// Open file descriptors, and the limit on them.
    pub open_fds: u64,
    pub max_fds: u64,
}

/// The fields of `/proc/self/stat` perch reads, in clock ticks and pages as the kernel gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0 here, so field N is index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat { utime: n(14)?, stime: n(15)?, threads: n(20)?, start_ticks: n(22)?, vsize: n(23)?, rss_pages: n(24)? })
}

/// `btime` of `/proc/stat`: when the system booted, seconds since the Unix epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

impl ProcessStats {
    /// Reads this process's figures; `None` where `/proc` is not mounted.
    pub fn read() -> Option<Self> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        // SAFETY: sysconf only reads system constants.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let (ticks, page) = (ticks.max(1) as u64, page.max(1) as u64);
        let boot = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(boot_time).unwrap_or(0);
        let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the limit into the struct it is given.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 0 };
        Some(Self {
            cpu: Duration::from_secs_f64((stat.utime + stat.stime) as f64 / ticks as f64),
            resident_bytes: stat.rss_pages * page,
            virtual_bytes: stat.vsize,
            start_time_s: boot as f64 + stat.start_ticks as f64 / ticks as f64,
            threads: stat.threads,
            open_fds,
            max_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis of its own.
        let line = "4242 (perch (a) b) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 25 0 0 20 0 31 0 123456 789012345 4567 \
                    18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, Stat { utime: 150, stime: 25, threads: 31, start_ticks: 123456, vsize: 789012345, rss_pages: 4567 });
        assert_eq!(parse_stat("4242 (perch) S 1"), None, "a cut line is refused, not misread");
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1790000000\nprocesses 5\n"), Some(1_790_000_000));
    }

    #[test]
    fn this_process_is_read_and_its_cpu_time_grows_with_work() {
        let before = ProcessStats::read().expect("/proc is mounted on Linux");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = ProcessStats::read().unwrap();
        assert!(after.cpu >= before.cpu + Duration::from_millis(100), "{before:?} -> {after:?}");
        assert!(after.resident_bytes > 1 << 20 && after.virtual_bytes >= after.resident_bytes, "{after:?}");
        assert!(after.threads >= 1 && after.open_fds >= 3 && after.max_fds >= after.open_fds, "{after:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(after.start_time_s > now - 3600.0 && after.start_time_s <= now + 1.0, "started {} (now {now})", after.start_time_s);
    }
}
