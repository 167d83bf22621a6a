//! `ws-rate`: open-loop load at a game's fixed rate. N connections each send M messages a
//! second on a schedule, whatever the replies do, and each round trip is timed from the
//! message's *scheduled* send time, so a stalled proxy shows up as latency instead of as a
//! quietly lower send rate (no coordinated omission, as wrk2 measures it).
//!
//! The node either echoes each message or, with rooms, relays it to every member of a room
//! of `room_size` (a match): each client then hears its own message back (timed) and those of
//! the other members (counted as fan-out). With a search the run steps the per-connection rate
//! up (doubling) and then bisects, a bounded number of steps, to the highest rate whose p99
//! stays under the objective with nothing lost.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;

use super::{close_ws, Limits, WsClient};
use crate::report::{Errors, Latency, Report};
use crate::target::SharedTarget;

mod open;
mod wire;

/// Parameters of a `ws-rate` run.
#[derive(Debug, Clone, Copy)]
pub struct RateParams {
    /// Connections sending.
    pub connections: usize,
    /// Messages per second each connection sends (the first step of a search).
    pub per_conn_rate: f64,
    /// Bytes per message (at least the 18-byte header).
    pub size: usize,
    /// How long each step sends.
    pub duration: Duration,
    /// Members of each room; `None`: the node echoes instead of broadcasting.
    pub room_size: Option<usize>,
    /// Steps of the search for the highest sustained rate; 1: just the one rate.
    pub steps: u32,
    /// The objective a step must meet to count as sustained.
    pub slo_p99: Duration,
    /// Connections being opened at once during set-up.
    pub connect_concurrency: usize,
    /// Time bounds.
    pub limits: Limits,
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct Step {
    /// Messages per second offered in total (connections × per-connection rate).
    pub offered: f64,
    /// Own replies received per second.
    pub achieved: f64,
    /// Round trips from the scheduled send time.
    pub rtt: Latency,
    /// Messages sent whose reply did not come back in time.
    pub lost: u64,
    /// Messages of other room members received.
    pub fanout: u64,
    /// Failures of connections during the step.
    pub errors: Errors,
}

impl Step {
    /// Whether the step met `slo`: p99 under it, nothing lost, no connection failed.
    pub fn sustained(&self, slo: Duration) -> bool {
        self.rtt.count() > 0
            && self.lost == 0
            && self.errors.total() == 0
            && self.rtt.quantile_ms(0.99) <= slo.as_secs_f64() * 1000.0
    }
}

/// Per-connection result of one step; the connection comes back unless it broke.
struct ConnStep {
    rtt: Latency,
    sent: u64,
    got: u64,
    fanout: u64,
    errors: Errors,
    ws: Option<WsClient>,
}

/// How long after its last scheduled send a connection waits for outstanding replies.
const DRAIN: Duration = Duration::from_secs(2);

/// One connection's step: sends `count` messages at `interval`, the first at `first`, and
/// reads replies meanwhile.
#[allow(clippy::too_many_arguments)]
async fn conn_step(
    mut ws: WsClient,
    id: u32,
    step: u8,
    base: Instant,
    first: Instant,
    interval: Duration,
    count: u64,
    size: usize,
) -> ConnStep {
    let mut r = ConnStep {
        rtt: Latency::new(),
        sent: 0,
        got: 0,
        fanout: 0,
        errors: Errors::default(),
        ws: None,
    };
    let scheduled = |k: u64| first + interval.mul_f64(k as f64);
    let drain_until = scheduled(count.saturating_sub(1)) + DRAIN;
    let mut buf = vec![0u8; size.max(wire::HEADER)];
    loop {
        if r.sent == count && r.got >= r.sent {
            break;
        }
        let next_send = (r.sent < count).then(|| scheduled(r.sent));
        tokio::select! {
            biased;
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => match wire::decode(&data) {
                    Some(h) if h.conn == id && h.step == step => {
                        let at = base + Duration::from_nanos(h.scheduled_ns);
                        r.rtt.record(Instant::now().saturating_duration_since(at));
                        r.got += 1;
                    }
                    _ => r.fanout += 1,
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    r.errors.add(super::Failure::new("io", e));
                    return r;
                }
                None => {
                    r.errors.add("closed");
                    return r;
                }
            },
            () = sleep_until(next_send.unwrap_or(drain_until).into()), if next_send.is_some() => {
                let at = next_send.unwrap_or(first);
                let header = wire::Header {
                    step,
                    conn: id,
                    seq: r.sent as u32,
                    scheduled_ns: at.duration_since(base).as_nanos() as u64,
                };
                header.encode(&mut buf);
                if let Err(e) = ws.send(Message::binary(buf.clone())).await {
                    r.errors.add(super::Failure::new("io", e));
                    return r;
                }
                r.sent += 1;
            }
            () = sleep_until(drain_until.into()), if next_send.is_none() => break,
        }
    }
    r.ws = Some(ws);
    r
}

/// Runs one step over `conns` at `per_conn` messages/s each; returns what came back.
async fn run_step(
    conns: Vec<WsClient>,
    step: u8,
    per_conn: f64,
    p: &RateParams,
    base: Instant,
) -> (Step, Vec<WsClient>) {
    let n = conns.len().max(1);
    let interval = Duration::from_secs_f64(1.0 / per_conn.max(0.001));
    let count = (p.duration.as_secs_f64() * per_conn).ceil().max(1.0) as u64;
    // Start 50 ms out so all tasks are spawned; spread the connections over one interval.
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, ws) in conns.into_iter().enumerate() {
        let first = start + interval.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(conn_step(
            ws, i as u32, step, base, first, interval, count, p.size,
        )));
    }
    let mut out = Step {
        offered: per_conn * n as f64,
        achieved: 0.0,
        rtt: Latency::new(),
        lost: 0,
        fanout: 0,
        errors: Errors::default(),
    };
    let mut kept = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => {
                out.rtt.merge(&r.rtt);
                out.lost += r.sent.saturating_sub(r.got);
                out.fanout += r.fanout;
                out.errors.merge(&r.errors);
                kept.extend(r.ws);
            }
            Err(_) => out.errors.add("panic"),
        }
    }
    out.achieved = out.rtt.count() as f64 / p.duration.as_secs_f64().max(0.001);
    (out, kept)
}

/// The next per-connection rate of the search, or `None` when it has converged.
fn next_rate(good: Option<f64>, bad: Option<f64>, last: f64) -> Option<f64> {
    match (good, bad) {
        (_, None) => Some(last * 2.0),
        (None, Some(b)) => Some(b / 2.0),
        (Some(g), Some(b)) if b / g > 1.05 => Some((g + b) / 2.0),
        _ => None,
    }
}

/// Runs the load (one step, or the search) and reports the fixed-rate step and, with a
/// search, the highest rate sustained.
pub async fn run(target: SharedTarget, p: RateParams) -> Report {
    let start = Instant::now();
    let deadline = p.limits.deadline(start);
    let mut report = Report::new("ws-rate", &target);
    let (mut conns, errors) = open::open_all(&target, &p, deadline).await;
    report.errors.merge(&errors);
    let base = Instant::now();
    let (mut good, mut bad) = (None::<f64>, None::<f64>);
    let mut rate = p.per_conn_rate;
    let mut first: Option<Step> = None;
    let mut best: Option<Step> = None;
    for step in 0..p.steps.max(1) {
        if Instant::now() + p.duration + DRAIN >= deadline || conns.is_empty() {
            report.timed_out = true;
            break;
        }
        let (s, kept) = run_step(conns, step as u8, rate, &p, base).await;
        conns = kept;
        let ok = s.sustained(p.slo_p99);
        eprintln!(
            "ws-rate step {}: offered {:.0}/s achieved {:.0}/s p50 {:.2} ms p99 {:.2} ms \
             p99.9 {:.2} ms max {:.2} ms lost {} errors {} -> {}",
            step + 1,
            s.offered,
            s.achieved,
            s.rtt.quantile_ms(0.5),
            s.rtt.quantile_ms(0.99),
            s.rtt.quantile_ms(0.999),
            s.rtt.max_ms(),
            s.lost,
            s.errors.total(),
            if ok { "sustained" } else { "not sustained" }
        );
        if ok {
            good = Some(rate);
            if best.as_ref().is_none_or(|b| b.offered < s.offered) {
                best = Some(s.clone());
            }
        } else {
            bad = Some(rate);
        }
        if first.is_none() {
            first = Some(s);
        }
        match next_rate(good, bad, rate) {
            Some(r) => rate = r,
            None => break,
        }
    }
    let closes: Vec<_> = conns
        .into_iter()
        .map(|ws| tokio::spawn(close_ws(ws, p.limits.op_timeout)))
        .collect();
    for c in closes {
        if let Ok(Err(kind)) = c.await {
            report.errors.add(kind);
        }
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    if let Some(s) = &first {
        report.errors.merge(&s.errors);
        report.push("offered_msgs_per_s", s.offered, "/s");
        report.push("msgs_per_s", s.achieved, "/s");
        report.push("messages_ok", s.rtt.count() as f64, "");
        report.push("lost", s.lost as f64, "");
        if p.room_size.is_some() {
            report.push(
                "fanout_per_s",
                s.fanout as f64 / p.duration.as_secs_f64(),
                "/s",
            );
        }
        report.push("connections", p.connections as f64, "");
        report.push_latency("rtt", &s.rtt, true);
    }
    if p.steps > 1 {
        let sustained = best.as_ref().map_or(0.0, |b| b.offered);
        report.push("max_sustained_msgs_per_s", sustained, "/s");
        if let Some(b) = &best {
            report.push("max_sustained_p99_ms", b.rtt.quantile_ms(0.99), "ms");
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::next_rate;

    #[test]
    fn the_search_doubles_then_bisects_and_stops() {
        assert_eq!(next_rate(Some(10.0), None, 10.0), Some(20.0));
        assert_eq!(next_rate(None, Some(10.0), 10.0), Some(5.0));
        assert_eq!(next_rate(Some(20.0), Some(40.0), 40.0), Some(30.0));
        assert_eq!(next_rate(Some(20.0), Some(20.5), 20.5), None);
    }
}
