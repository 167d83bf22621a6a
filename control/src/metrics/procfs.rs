//! CPU and memory of node and database processes from Linux's `/proc`: pure parsers of the
//! text, and readers around them.

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

/// What a process tree's CPU is summed from: one `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// Parent process id (field 4).
    pub ppid: u32,
    /// Its own CPU seconds (utime + stime).
    pub cpu_seconds: f64,
    /// CPU seconds of its children that exited and were waited for (cutime + cstime).
    pub reaped_children_cpu_seconds: f64,
}

/// The fields of `/proc/PID/stat` a process tree's CPU needs, or `None` if it is not shaped
/// like one.
pub fn proc_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state (3), ppid (4) … utime (14), stime (15), cutime (16), cstime (17).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ppid = u32::try_from(field(4)?).ok()?;
    Some(ProcStat {
        ppid,
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        reaped_children_cpu_seconds: (field(16)? + field(17)?) as f64 / USER_HZ,
    })
}

/// CPU seconds of `root` and its direct children from `(pid, stat)` pairs: the root's own
/// time, the time of children it has reaped (a PostgreSQL backend ends with its connection,
/// and the postmaster waits for it), and that of the children still running. `None` when
/// `root` is not among them.
pub fn tree_cpu_seconds(root: u32, procs: &[(u32, ProcStat)]) -> Option<f64> {
    let own = procs.iter().find(|(pid, _)| *pid == root)?.1;
    let running: f64 = procs
        .iter()
        .filter(|(pid, s)| s.ppid == root && *pid != root)
        .map(|(_, s)| s.cpu_seconds)
        .sum();
    Some(own.cpu_seconds + own.reaped_children_cpu_seconds + running)
}

/// Every process's stat (unreadable ones, e.g. just exited, are skipped).
pub fn all_stats() -> Vec<(u32, ProcStat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
            Some((pid, proc_stat(&text)?))
        })
        .collect()
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
    fn stat_fields_for_a_process_tree() {
        let s = proc_stat(STAT).expect("stat");
        assert_eq!(s.ppid, 1);
        assert_eq!(s.cpu_seconds, 3.25);
        assert_eq!(s.reaped_children_cpu_seconds, 0.0);
        assert_eq!(proc_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 1 2"), None);
    }

    #[test]
    fn a_tree_counts_the_root_its_reaped_and_its_running_children() {
        let stat = |ppid, cpu, reaped| ProcStat {
            ppid,
            cpu_seconds: cpu,
            reaped_children_cpu_seconds: reaped,
        };
        let procs = [
            (100, stat(1, 1.0, 4.0)),
            (101, stat(100, 0.5, 0.0)),
            (102, stat(100, 0.25, 0.0)),
            // A grandchild is in its parent's reaped time once it ends, not here.
            (103, stat(101, 8.0, 0.0)),
            (200, stat(1, 16.0, 0.0)),
        ];
        assert_eq!(tree_cpu_seconds(100, &procs), Some(5.75));
        assert_eq!(tree_cpu_seconds(300, &procs), None);
    }

    #[test]
    fn this_process_is_among_all_stats() {
        let me = std::process::id();
        let all = all_stats();
        assert!(all.iter().any(|(pid, _)| *pid == me));
        assert!(tree_cpu_seconds(me, &all).is_some());
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
