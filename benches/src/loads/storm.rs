//! `ws-storm`: the reconnect storm after a node crash or drain. N clients are connected; then
//! all lose their connection at the same instant and come back at once (no pacing: what a
//! crowd of game clients does), each with one echo to prove the new connection works. What
//! counts is the time until all are back, the p99 of one reconnect, and how many were refused
//! or timed out. With `resume`, each client kept its own TLS session from its first
//! connection, as a device does, so the edge can skip the full handshake.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Barrier, Semaphore};

use super::{close_ws, echo_once, open_ws, payload, Limits};
use crate::report::{Counters, Errors, Latency, Progress, Report};
use crate::target::SharedTarget;

/// Parameters of a `ws-storm` run.
#[derive(Debug, Clone, Copy)]
pub struct StormParams {
    /// Clients connected before the storm (all of them reconnect).
    pub clients: usize,
    /// Connections opened at once while setting up (the storm itself is not paced).
    pub connect_concurrency: usize,
    /// Each client keeps its TLS session and resumes with it.
    pub resume: bool,
    /// Time bounds (`op_timeout` bounds one reconnect: past it a client counts as timed out).
    pub limits: Limits,
}

/// What one client saw of the storm.
enum Outcome {
    /// Back, after this long, resumed or not.
    Back(Duration, bool),
    /// Its reconnect failed.
    Failed(super::Failure),
    /// It never got connected before the storm.
    NotReady(super::Failure),
}

/// Runs the storm and reports how the edge took it.
pub async fn run(target: SharedTarget, p: StormParams) -> Report {
    let start = Instant::now();
    let deadline = p.limits.deadline(start);
    let mut report = Report::new("ws-storm", &target);
    let n = p.clients.max(1);
    // Every client waits here once connected (or failed): the storm starts when all are.
    let ready = Arc::new(Barrier::new(n + 1));
    let gate = Arc::new(Semaphore::new(p.connect_concurrency.max(1)));
    let counters = Arc::new(Counters::default());
    let msg = payload(16);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let target = if p.resume {
            Arc::new(target.with_own_sessions())
        } else {
            target.clone()
        };
        let (ready, gate, counters, msg) =
            (ready.clone(), gate.clone(), counters.clone(), msg.clone());
        tasks.push(tokio::spawn(async move {
            let first = async {
                let _permit = gate.acquire().await.map_err(|_| "closed")?;
                if Instant::now() >= deadline {
                    return Err(super::Failure::from("timeout"));
                }
                open_ws(&target, p.limits.op_timeout).await
            }
            .await;
            ready.wait().await;
            let old = match first {
                Ok(ws) => ws,
                Err(f) => return (Outcome::NotReady(f), None),
            };
            // The connection is lost without a goodbye, as when its node dies.
            drop(old);
            let t0 = Instant::now();
            let back = async {
                let mut ws = open_ws(&target, p.limits.op_timeout).await?;
                echo_once(&mut ws, msg, p.limits.op_timeout).await?;
                Ok::<_, super::Failure>(ws)
            }
            .await;
            match back {
                Ok(ws) => {
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    let resumed = ws.get_ref().resumed();
                    (Outcome::Back(t0.elapsed(), resumed), Some(ws))
                }
                Err(f) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    (Outcome::Failed(f), None)
                }
            }
        }));
    }
    ready.wait().await;
    let storm_start = Instant::now();
    let progress = Progress::start("ws-storm", counters.clone());
    let mut reconnect = Latency::new();
    let (mut resumed, mut not_ready) = (0u64, 0u64);
    let mut setup_errors = Errors::default();
    let mut open = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok((Outcome::Back(d, r), ws)) => {
                reconnect.record(d);
                resumed += u64::from(r);
                open.extend(ws);
            }
            Ok((Outcome::Failed(f), _)) => report.errors.add(f),
            Ok((Outcome::NotReady(f), _)) => {
                not_ready += 1;
                setup_errors.add(f);
            }
            Err(_) => report.errors.add("panic"),
        }
    }
    // All are back (or failed) when the last task is.
    let all_back = storm_start.elapsed();
    drop(progress);
    let closes: Vec<_> = open
        .into_iter()
        .map(|ws| tokio::spawn(close_ws(ws, p.limits.op_timeout)))
        .collect();
    for c in closes {
        // The storm is over: a slow close says nothing about it.
        let _close_outcome_is_not_measured = c.await;
    }
    let back = reconnect.count();
    report.elapsed_s = all_back.as_secs_f64();
    let refused = report
        .errors
        .counts
        .iter()
        .filter(|(k, _)| k.as_str() != "timeout")
        .map(|(_, v)| v)
        .sum::<u64>();
    report.push("clients", n as f64, "");
    report.push("back", back as f64, "");
    report.push("all_back_s", all_back.as_secs_f64(), "s");
    report.push("refused", refused as f64, "");
    report.push(
        "timed_out",
        report.errors.counts.get("timeout").copied().unwrap_or(0) as f64,
        "",
    );
    report.push("resumed", resumed as f64, "");
    report.push("not_ready", not_ready as f64, "");
    report.push_latency("reconnect", &reconnect, false);
    for (k, v) in &setup_errors.counts {
        eprintln!("ws-storm: {v} clients not connected before the storm ({k})");
    }
    report
}
