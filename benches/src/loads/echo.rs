//! `ws-echo`: C open connections each sending M messages of B bytes, one at a time, timing
//! every round trip — the steady realtime traffic of a match in progress.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::{close_ws, echo_once, open_ws, payload, rate, Limits, WsClient};
use crate::report::{Counters, Errors, Latency, Progress, Report};
use crate::target::SharedTarget;

/// Parameters of a `ws-echo` run.
#[derive(Debug, Clone, Copy)]
pub struct EchoParams {
    /// Connections echoing at the same time.
    pub connections: usize,
    /// Messages per connection.
    pub messages: u64,
    /// Bytes per message (binary).
    pub size: usize,
    /// How many connections are being opened at once during set-up.
    pub connect_concurrency: usize,
    /// Time bounds.
    pub limits: Limits,
}

/// Opens `n` WebSockets, at most `concurrency` at a time, counting failures.
pub(crate) async fn open_many(
    target: &SharedTarget,
    n: usize,
    concurrency: usize,
    limits: Limits,
    deadline: Instant,
    counters: &Arc<Counters>,
) -> (Vec<WsClient>, Errors) {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (target, gate, counters) = (target.clone(), gate.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .map_err(|_| crate::report::Failure::from("closed"))?;
            if Instant::now() >= deadline {
                return Err("timeout".into());
            }
            let r = open_ws(&target, limits.op_timeout).await;
            let c = if r.is_ok() {
                &counters.done
            } else {
                &counters.failed
            };
            c.fetch_add(1, Ordering::Relaxed);
            r
        }));
    }
    let mut open = Vec::with_capacity(n);
    let mut errors = Errors::default();
    for t in tasks {
        match t.await {
            Ok(Ok(ws)) => open.push(ws),
            Ok(Err(kind)) => errors.add(kind),
            Err(_) => errors.add("panic"),
        }
    }
    (open, errors)
}

/// Runs the load and reports messages/s and round-trip percentiles.
pub async fn run(target: SharedTarget, p: EchoParams) -> Report {
    let start = Instant::now();
    let deadline = p.limits.deadline(start);
    let mut report = Report::new("ws-echo", &target);
    let setup = Arc::new(Counters::default());
    let (conns, errors) = {
        let _progress = Progress::start("ws-echo connect", setup.clone());
        open_many(
            &target,
            p.connections,
            p.connect_concurrency,
            p.limits,
            deadline,
            &setup,
        )
        .await
    };
    report.errors.merge(&errors);

    let counters = Arc::new(Counters::default());
    let _progress = Progress::start("ws-echo", counters.clone());
    let msg = payload(p.size);
    let echo_start = Instant::now();
    let mut tasks = Vec::with_capacity(conns.len());
    for mut ws in conns {
        let (msg, counters) = (msg.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut rtt = Latency::new();
            let mut errors = Errors::default();
            for _ in 0..p.messages {
                if Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                match echo_once(&mut ws, msg.clone(), p.limits.op_timeout).await {
                    Ok(()) => {
                        rtt.record(t0.elapsed());
                        counters.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kind) => {
                        errors.add(kind);
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        // A broken connection would fail every later message the same way.
                        return (rtt, errors, None);
                    }
                }
            }
            (rtt, errors, Some(ws))
        }));
    }
    let mut rtt = Latency::new();
    let mut open = Vec::new();
    for t in tasks {
        match t.await {
            Ok((l, e, ws)) => {
                rtt.merge(&l);
                report.errors.merge(&e);
                open.extend(ws);
            }
            Err(_) => report.errors.add("panic"),
        }
    }
    let elapsed = echo_start.elapsed();
    drop(_progress);
    let closes: Vec<_> = open
        .into_iter()
        .map(|ws| tokio::spawn(close_ws(ws, p.limits.op_timeout)))
        .collect();
    for c in closes {
        if let Ok(Err(kind)) = c.await {
            report.errors.add(kind);
        }
    }
    let expected = p.connections as u64 * p.messages;
    report.elapsed_s = elapsed.as_secs_f64();
    report.timed_out = Instant::now() >= deadline && rtt.count() < expected;
    report.push("msgs_per_s", rate(rtt.count(), elapsed), "/s");
    report.push("messages_ok", rtt.count() as f64, "");
    report.push("connections", p.connections as f64, "");
    report.push_latency("rtt", &rtt, true);
    report
}
