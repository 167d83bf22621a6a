//! `ws-idle`: hold N idle WebSockets and measure how much resident memory the proxy spends on
//! each — most game clients are idle most of the time, so this is what bounds a proxy's
//! capacity per GiB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::echo::open_many;
use super::{close_ws, Limits};
use crate::report::{Counters, Progress, Report};
use crate::target::SharedTarget;

/// Parameters of a `ws-idle` run.
#[derive(Debug, Clone, Copy)]
pub struct IdleParams {
    /// Connections to hold.
    pub connections: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// How long to hold them once all are open.
    pub hold: Duration,
    /// The proxy's PID: its RSS plus that of all its descendants (NGINX and HAProxy workers)
    /// is sampled.
    pub pid: Option<u32>,
    /// Time bounds.
    pub limits: Limits,
}

/// `VmRSS` of one process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `pid` and every process descending from it (a master and its workers).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_pid(child) {
                children.entry(ppid).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        if let Some(c) = children.get(&tree[i]) {
            tree.extend(c);
        }
        i += 1;
    }
    tree
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Summed RSS in KiB of `pid` and its descendants; `None` if the process is gone.
pub fn tree_rss_kib(pid: u32) -> Option<u64> {
    rss_kib(pid)?;
    Some(process_tree(pid).into_iter().filter_map(rss_kib).sum())
}

/// Runs the load and reports RSS before, during, and per held connection.
pub async fn run(target: SharedTarget, p: IdleParams) -> Report {
    let start = Instant::now();
    let deadline = p.limits.deadline(start);
    let mut report = Report::new("ws-idle", &target);
    let before = p.pid.and_then(tree_rss_kib);
    if p.pid.is_some() && before.is_none() {
        report.errors.add("pid_not_found");
    }
    let counters = Arc::new(Counters::default());
    let (conns, errors) = {
        let _progress = Progress::start("ws-idle connect", counters.clone());
        open_many(
            &target,
            p.connections,
            p.concurrency,
            p.limits,
            deadline,
            &counters,
        )
        .await
    };
    report.errors.merge(&errors);
    let held = conns.len();
    eprintln!("ws-idle: holding {held} connections for {:?}", p.hold);

    // Sample once a second during the hold; the peak is what the proxy needed.
    let hold_end = (Instant::now() + p.hold).min(deadline.max(Instant::now()));
    let mut during: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Some(rss) = p.pid.and_then(tree_rss_kib) {
            during = Some(during.map_or(rss, |d| d.max(rss)));
        }
        if Instant::now() >= hold_end {
            break;
        }
    }
    let hold_elapsed = start.elapsed();
    let closes: Vec<_> = conns
        .into_iter()
        .map(|ws| tokio::spawn(close_ws(ws, p.limits.op_timeout)))
        .collect();
    for c in closes {
        if let Ok(Err(kind)) = c.await {
            report.errors.add(kind);
        }
    }
    report.elapsed_s = hold_elapsed.as_secs_f64();
    report.timed_out = held + (report.errors.total() as usize) < p.connections;
    report.push("connections_held", held as f64, "");
    if let Some(spread) = target.spread() {
        report.push("deployments", spread.count() as f64, "");
    }
    if let (Some(b), Some(d)) = (before, during) {
        report.push("rss_before_kib", b as f64, "KiB");
        report.push("rss_during_kib", d as f64, "KiB");
        let per = if held > 0 {
            d.saturating_sub(b) as f64 / held as f64
        } else {
            0.0
        };
        report.push("kib_per_conn", per, "KiB");
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss_and_tree() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(process_tree(me).contains(&me));
        assert!(tree_rss_kib(me).is_some());
    }
}
