//! The CPU limit of each local node: a cgroup per node whose quota is the node's CPUs
//! ([`crate::domain::tier::cpus_per_node`]), where the machine lets `kanmon up` make one.
//!
//! Detected once per driver, in this order: cgroup v2 (the `cpu` controller enabled below the
//! cgroup `kanmon up` runs in; `cpu.max`), cgroup v1 (a writable `cpu` hierarchy;
//! `cpu.cfs_quota_us`), else none — nodes then run unlimited, and the log and the
//! `kanmon_node_cpu_limit_mode` metric say so and why. The driver's cgroups live in
//! `kanmon-{pid}-{n}` beside `kanmon up`'s own cgroup: one per node, named after it, created before
//! the node starts, joined by the forked child before it execs (so nothing it starts escapes),
//! removed when the node has exited; `kanmon-{pid}-{n}` itself goes with the driver, and ones left
//! by a killed run (their pid no longer alive) are removed on the next detection.

use std::{
    io::Write,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// Numbers the limiters of one process (tests run several drivers in one).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The scheduler period the quota is a share of (the kernel's default, 100 ms).
const PERIOD_US: u64 = 100_000;

/// How node CPU limits are enforced (the `mode` label of `kanmon_node_cpu_limit_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuLimitMode {
    /// A cgroup v2 per node (`cpu.max`).
    CgroupV2,
    /// A cgroup v1 per node in the `cpu` hierarchy (`cpu.cfs_quota_us`).
    CgroupV1,
    /// No limit: no writable cgroup with the `cpu` controller.
    None,
}

impl CpuLimitMode {
    /// Every mode, for the metric's label set.
    pub const ALL: [Self; 3] = [Self::CgroupV2, Self::CgroupV1, Self::None];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CgroupV2 => "cgroup_v2",
            Self::CgroupV1 => "cgroup_v1",
            Self::None => "none",
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct CpuLimiter {
    mode: CpuLimitMode,
    /// `kanmon-{pid}-{n}`: holds one cgroup per node (none in mode `None`).
    dir: Option<PathBuf>,
}

/// The files a cgroup's limit is written to, for `cpus` CPUs.
pub fn limit_files(mode: CpuLimitMode, cpus: u32) -> Vec<(&'static str, String)> {
    let quota = u64::from(cpus.max(1)) * PERIOD_US;
    match mode {
        CpuLimitMode::CgroupV2 => vec![("cpu.max", format!("{quota} {PERIOD_US}"))],
        CpuLimitMode::CgroupV1 => vec![
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            ("cpu.cfs_quota_us", quota.to_string()),
        ],
        CpuLimitMode::None => Vec::new(),
    }
}

/// From `/proc/self/mountinfo`: the cgroup2 mount point and the cgroup v1 mount holding the
/// `cpu` controller.
fn mounts(mountinfo: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut v2, mut v1) = (None, None);
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let point = left.split(' ').nth(4);
        let mut right = right.split(' ');
        let (fstype, options) = (right.next(), right.nth(1));
        match (fstype, point) {
            (Some("cgroup2"), Some(p)) => v2 = v2.or(Some(PathBuf::from(p))),
            (Some("cgroup"), Some(p))
                if options.is_some_and(|o| o.split(',').any(|c| c == "cpu")) =>
            {
                v1 = v1.or(Some(PathBuf::from(p)));
            }
            _ => {}
        }
    }
    (v2, v1)
}

/// From `/proc/self/cgroup`: this process's cgroup path in the v2 hierarchy (`0::/path`) and
/// in the v1 hierarchy of the `cpu` controller (`N:cpu,cpuacct:/path`).
fn own_cgroups(text: &str) -> (Option<String>, Option<String>) {
    let (mut v2, mut v1) = (None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "cpu") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

fn under(mount: &Path, path: &str) -> PathBuf {
    mount.join(path.trim_start_matches('/'))
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// Removes `kanmon-{pid}-{n}` directories in `parent` whose process is gone (their node cgroups
/// first; a cgroup that still holds a process stays).
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("kanmon-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_tree(&e.path());
    }
}

/// Removes a cgroup directory and its child cgroups (cgroupfs refuses a plain recursive
/// removal: each directory is removed with rmdir, children first).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::warn!(cgroup = %dir.display(), error = %e, "could not remove a node cgroup");
    }
}

impl CpuLimiter {
    /// No limits (tests, or where the caller decided so).
    pub fn unlimited() -> Self {
        Self {
            mode: CpuLimitMode::None,
            dir: None,
        }
    }

    /// Finds out what this machine allows (see the module docs) and logs the outcome.
    pub fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let (v2_mount, v1_mount) = mounts(&read("/proc/self/mountinfo"));
        let (v2_own, v1_own) = own_cgroups(&read("/proc/self/cgroup"));
        let name = format!(
            "kanmon-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut why = Vec::new();
        if let (Some(m), Some(own)) = (&v2_mount, &v2_own) {
            let base = under(m, own);
            match Self::try_v2(&base, &name) {
                Ok(dir) => return Self::chosen(CpuLimitMode::CgroupV2, dir),
                Err(e) => why.push(format!("cgroup v2 below {}: {e}", base.display())),
            }
        }
        if let (Some(m), Some(own)) = (&v1_mount, &v1_own) {
            let base = under(m, own);
            match Self::try_v1(&base, &name) {
                Ok(dir) => return Self::chosen(CpuLimitMode::CgroupV1, dir),
                Err(e) => why.push(format!("cgroup v1 cpu below {}: {e}", base.display())),
            }
        }
        if why.is_empty() {
            why.push("no cgroup file system with the cpu controller is mounted".into());
        }
        tracing::warn!(
            reason = why.join("; "),
            "node CPU limits are not enforced (no writable cgroup with the cpu controller; run \
             kanmon up as root or in a cgroup with the cpu controller delegated to it)"
        );
        Self::unlimited()
    }

    fn chosen(mode: CpuLimitMode, dir: PathBuf) -> Self {
        tracing::info!(mode = mode.as_str(), cgroup = %dir.display(), "node CPU limits enforced by cgroups");
        Self {
            mode,
            dir: Some(dir),
        }
    }

    /// `base/name` with the cpu controller enabled for its children: `base` must have it in
    /// its controllers and be able to hand it down (a cgroup that holds processes, other than
    /// the root, cannot).
    fn try_v2(base: &Path, name: &str) -> std::io::Result<PathBuf> {
        let controllers = std::fs::read_to_string(base.join("cgroup.controllers"))?;
        if !controllers.split_whitespace().any(|c| c == "cpu") {
            return Err(std::io::Error::other("the cpu controller is not available"));
        }
        let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control"))?;
        if !enabled.split_whitespace().any(|c| c == "cpu") {
            write_file(&base.join("cgroup.subtree_control"), "+cpu")?;
        }
        sweep(base);
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        if let Err(e) = write_file(&dir.join("cgroup.subtree_control"), "+cpu") {
            remove_tree(&dir);
            return Err(e);
        }
        Ok(dir)
    }

    /// `base/name` in the v1 `cpu` hierarchy, checked to take a quota.
    fn try_v1(base: &Path, name: &str) -> std::io::Result<PathBuf> {
        sweep(base);
        let dir = base.join(name);
        std::fs::create_dir_all(&dir)?;
        if let Err(e) = write_file(&dir.join("cpu.cfs_quota_us"), "-1") {
            remove_tree(&dir);
            return Err(e);
        }
        Ok(dir)
    }

    /// How limits are enforced.
    pub fn mode(&self) -> CpuLimitMode {
        self.mode
    }

    /// The cgroup of `node` (whether or not it exists now); `None` in mode `None`.
    pub fn cgroup_of(&self, node: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(node))
    }

    /// Creates (or reuses) the cgroup of `node` with a limit of `cpus` and opens its
    /// `cgroup.procs` for the child to join; `None` in mode `None`.
    pub(crate) fn prepare(&self, node: &str, cpus: u32) -> std::io::Result<Option<OwnedFd>> {
        let Some(dir) = self.cgroup_of(node) else {
            return Ok(None);
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for (file, value) in limit_files(self.mode, cpus) {
            write_file(&dir.join(file), &value)?;
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(Some(procs.into()))
    }

    /// Removes the cgroup of `node` (its process has exited).
    pub(crate) fn release(&self, node: &str) {
        if let Some(dir) = self.cgroup_of(node) {
            if dir.exists() {
                remove_tree(&dir);
            }
        }
    }
}

impl Drop for CpuLimiter {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            remove_tree(dir);
        }
    }
}

/// Makes the child join the cgroup whose `cgroup.procs` is `procs` between fork and exec
/// (writing `0` moves the writing process), so the node and everything it starts run under
/// the limit from their first instruction. A failed join fails the start.
#[allow(unsafe_code)]
pub(crate) fn join_in_child(cmd: &mut std::process::Command, procs: OwnedFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child before exec and makes one system call
    // (write) on a descriptor the parent keeps open (moved into the closure); it allocates
    // nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let n = nix::unistd::write(&procs, b"0")?;
            if n == 1 {
                Ok(())
            } else {
                Err(std::io::Error::other("short write to cgroup.procs"))
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_and_own_cgroups_are_found() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                    33 31 0:30 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let (v2, v1) = mounts(info);
        assert_eq!(v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(v1, Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        let (v2, v1) =
            own_cgroups("4:memory:/x\n2:cpu,cpuacct:/user/a\n1:cpuset:/\n0::/user.slice/s\n");
        assert_eq!(v2.as_deref(), Some("/user.slice/s"));
        assert_eq!(v1.as_deref(), Some("/user/a"));
        assert_eq!(
            under(Path::new("/sys/fs/cgroup"), "/user.slice/s"),
            PathBuf::from("/sys/fs/cgroup/user.slice/s")
        );
        // A pure v2 machine: no v1 cpu hierarchy.
        let (v2, v1) = mounts("25 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        assert_eq!(v2, Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(v1, None);
    }

    #[test]
    fn a_killed_runs_cgroups_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A pid above the kernel's maximum (4194304) never runs.
        let dead = dir.path().join("kanmon-4999999-0");
        let live = dir.path().join(format!("kanmon-{}-7", std::process::id()));
        let other = dir.path().join("system.slice");
        for d in [dead.join("alpha-0"), live.join("beta-0"), other.clone()] {
            std::fs::create_dir_all(d).expect("dir");
        }
        sweep(dir.path());
        assert!(!dead.exists(), "the dead run's cgroups stayed");
        assert!(live.join("beta-0").exists() && other.exists());
    }

    #[test]
    fn the_quota_is_the_node_cpus() {
        assert_eq!(
            limit_files(CpuLimitMode::CgroupV2, 2),
            [("cpu.max", "200000 100000".to_string())]
        );
        assert_eq!(
            limit_files(CpuLimitMode::CgroupV1, 1),
            [
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "100000".to_string())
            ]
        );
        assert!(limit_files(CpuLimitMode::None, 4).is_empty());
    }
}
