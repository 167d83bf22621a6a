//! CPU and memory of node processes from Linux's `/proc`: pure parsers of the text, and one
//! reader around them.

/// Clock ticks per second of `/proc/PID/stat`'s times. The kernel reports them in `USER_HZ`,
/// which is 100 on every architecture Linux exports to user space (whatever `CONFIG_HZ` is), so
/// no `sysconf(_SC_CLK_TCK)` call (and no unsafe code) is needed.
pub const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) from the text of `/proc/PID/stat`, or `None` if it is not
/// shaped like one. The command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so fields are counted after its last `)`.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state (field 3) … utime (14), stime (15).
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Resident memory in bytes from the text of `/proc/PID/status` (its `VmRSS:` line, in kB),
/// or `None` when absent (a kernel thread, or a process that is exiting).
pub fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_ascii_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(kb * 1024),
        Some(_) => None,
    }
}

/// CPU seconds and resident bytes of process `pid`, or `None` if it is gone (or `/proc` is not
/// there, as off Linux).
pub fn sample(pid: u32) -> Option<(f64, u64)> {
    let dir = std::path::Path::new("/proc").join(pid.to_string());
    let cpu = cpu_seconds(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let rss = rss_bytes(&std::fs::read_to_string(dir.join("status")).ok()?)?;
    Some((cpu, rss))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (kanmon node (1)) S 1 4242 4242 0 -1 4194560 512 0 0 0 \
                        250 75 0 0 20 0 4 0 12345 2000000 900 18446744073709551615";

    #[test]
    fn cpu_is_utime_plus_stime_over_user_hz() {
        assert_eq!(cpu_seconds(STAT), Some(3.25));
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_fields() {
        let plain = STAT.replace("(kanmon node (1))", "(node)");
        assert_eq!(cpu_seconds(&plain), cpu_seconds(STAT));
    }

    #[test]
    fn malformed_stat_is_none() {
        assert_eq!(cpu_seconds(""), None);
        assert_eq!(cpu_seconds("1 (x) S 1 2"), None);
        assert_eq!(cpu_seconds("1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 5"), None);
    }

    #[test]
    fn rss_is_read_in_kilobytes() {
        let status = "Name:\tnode\nVmPeak:\t  9000 kB\nVmRSS:\t    1536 kB\nThreads:\t4\n";
        assert_eq!(rss_bytes(status), Some(1536 * 1024));
    }

    #[test]
    fn no_rss_line_is_none() {
        assert_eq!(rss_bytes("Name:\tkthreadd\nState:\tS (sleeping)\n"), None);
        assert_eq!(rss_bytes("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let (cpu, rss) = sample(std::process::id()).expect("/proc of this test process");
        assert!(cpu >= 0.0);
        assert!(rss > 0, "a running test has resident memory");
    }
}
