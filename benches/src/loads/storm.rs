//! `ws-storm`: the reconnect storm after a node crash or drain. N clients are connected; then
//! all lose their connection at the same instant and come back at once (no pacing: what a
//! crowd of game clients does), each with one echo to prove the new connection works. What
//! counts is the time until all are back, the p99 of one reconnect, and how many were refused
//! or timed out. With `resume`, each client kept its own TLS session from its first
//! connection, as a device does, so the edge can skip the full handshake. With `retries`, a
//! client whose reconnect fails (refused by an edge's admission, or timed out) tries again
//! after a jittered exponential backoff, as game clients do, so "all back" stays measurable
//! when an edge refuses early by design; the report counts the retries.

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
    /// Further attempts a client makes after a failed reconnect.
    pub retries: u32,
    /// The first retry's backoff (doubling for each further one, each jittered ±50%).
    pub retry_backoff: Duration,
}

/// The wait before retry `attempt` (1, 2, …): `base` doubled per earlier retry (at most 32×),
/// times a jitter in [0.5, 1.5) drawn from `seed` (so clients refused together do not all
/// come back together).
pub fn backoff(base: Duration, attempt: u32, seed: &mut u64) -> Duration {
    // xorshift64: cheap, and each client's sequence is its own.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let jitter = 0.5 + (*seed >> 11) as f64 / (1u64 << 53) as f64;
    let nominal = base.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    Duration::try_from_secs_f64(nominal.as_secs_f64() * jitter).unwrap_or(nominal)
}

/// What one client saw of the storm.
enum Outcome {
    /// Back, after this long, resumed or not, after this many retries.
    Back(Duration, bool, u32),
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
    for i in 0..n {
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
            let mut seed = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut retries = 0;
            let back = loop {
                let attempt = async {
                    let mut ws = open_ws(&target, p.limits.op_timeout).await?;
                    echo_once(&mut ws, msg.clone(), p.limits.op_timeout).await?;
                    Ok::<_, super::Failure>(ws)
                }
                .await;
                match attempt {
                    Err(_) if retries < p.retries && Instant::now() < deadline => {
                        retries += 1;
                        tokio::time::sleep(backoff(p.retry_backoff, retries, &mut seed)).await;
                    }
                    done => break done,
                }
            };
            match back {
                Ok(ws) => {
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    let resumed = ws.get_ref().resumed();
                    (Outcome::Back(t0.elapsed(), resumed, retries), Some(ws))
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
    let (mut resumed, mut not_ready, mut retried) = (0u64, 0u64, 0u64);
    let mut setup_errors = Errors::default();
    let mut open = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok((Outcome::Back(d, r, retries), ws)) => {
                reconnect.record(d);
                resumed += u64::from(r);
                retried += u64::from(retries);
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
    // Retries of the clients that came back (those that never did are in refused/timed_out).
    report.push("retries", retried as f64, "");
    report.push("not_ready", not_ready as f64, "");
    report.push_latency("reconnect", &reconnect, false);
    for (k, v) in &setup_errors.counts {
        eprintln!("ws-storm: {v} clients not connected before the storm ({k})");
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        let mut seed = 7;
        for attempt in 1..=10u32 {
            let nominal = base * (1 << (attempt - 1).min(5));
            for _ in 0..50 {
                let d = backoff(base, attempt, &mut seed);
                assert!(d >= nominal / 2 && d <= nominal * 3 / 2, "{attempt}: {d:?}");
            }
        }
        // Two clients refused together draw different waits.
        let (mut a, mut b) = (
            1u64.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            2u64.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        assert_ne!(backoff(base, 1, &mut a), backoff(base, 1, &mut b));
    }
}
