//! The async side of handshake admission (`handshake_queue`): one gate per proxy process,
//! shared by every thread, because the handshakes of all threads compete for the same cores.
//!
//! A handshake awaits [`HandshakeGate::admit`] and holds the returned [`Permit`] while it
//! runs; dropping the permit (done, failed, timed out or cancelled) gives the slot to the next
//! waiter, so no path can leak one. The uncontended path is one short lock and no allocation:
//! only a handshake that has to wait gets a wake-up channel. A waiter's own timer bounds its
//! wait (`queue_timeout`); whoever frees a slot wakes the next waiter, on whichever thread it
//! is.

use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use prometheus::{Histogram, IntGauge};
use tokio::sync::oneshot;

use crate::{
    clock::Clock,
    handshake_queue::{Arrival, HandshakeQueue, Kind, Left, QueueLimits, Refusal, Ticket},
};

/// The metrics the gate keeps current.
#[derive(Clone)]
pub struct GateMetrics {
    /// `kanmon_tls_handshakes_in_progress`
    pub in_progress: IntGauge,
    /// `kanmon_tls_handshakes_queued{kind="full"}`
    pub queued_full: IntGauge,
    /// `kanmon_tls_handshakes_queued{kind="resumed"}`
    pub queued_resumed: IntGauge,
    /// `kanmon_tls_handshake_queue_seconds`: time waited by handshakes that had to wait.
    pub queue_seconds: Histogram,
}

/// A waiter's wake-up: a value means "admitted", a dropped sender "refused".
type Wake = oneshot::Sender<()>;

/// Admission of handshakes for a whole process.
pub struct HandshakeGate {
    queue: Mutex<HandshakeQueue<Wake>>,
    timeout: Duration,
    clock: Clock,
    metrics: GateMetrics,
}

/// A running handshake's slot, given back when dropped.
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct Permit<'a> {
    gate: &'a HandshakeGate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut queue = self.gate.lock();
        queue.finish(self.gate.clock.now_ms());
        self.gate.settle(&mut queue);
    }
}

/// A queued handshake; if dropped before it learns its fate, it leaves the queue (or gives
/// back the slot it was just handed).
struct Waiting<'a> {
    gate: &'a HandshakeGate,
    ticket: Ticket,
    wake: oneshot::Receiver<()>,
    settled: bool,
}

impl Waiting<'_> {
    /// What became of it: its own decision when the queue has one, else (its timer fired
    /// first) it takes itself out as timed out.
    fn conclude(&mut self) -> Result<(), Refusal> {
        self.settled = true;
        let mut queue = self.gate.lock();
        if queue.cancel(self.ticket).is_some() {
            self.gate.settle(&mut queue);
            drop(queue);
            self.gate.observe(self.gate.timeout.as_millis() as u64);
            return Err(Refusal::Timeout);
        }
        drop(queue);
        match self.wake.try_recv() {
            Ok(()) => Ok(()),
            Err(_) => Err(Refusal::Timeout),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut queue = self.gate.lock();
        if queue.cancel(self.ticket).is_none() && self.wake.try_recv().is_ok() {
            // Admitted in the same instant it was cancelled: pass the slot on.
            queue.finish(self.gate.clock.now_ms());
        }
        self.gate.settle(&mut queue);
    }
}

impl HandshakeGate {
    /// A gate admitting under `limits`.
    pub fn new(limits: QueueLimits, metrics: GateMetrics) -> Self {
        Self {
            queue: Mutex::new(HandshakeQueue::new(limits)),
            timeout: Duration::from_millis(limits.queue_timeout_ms),
            clock: Clock::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HandshakeQueue<Wake>> {
        // Every update is complete before the lock is released (no user code runs under
        // it), so a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out the queue's decisions and publishes its state.
    fn settle(&self, queue: &mut HandshakeQueue<Wake>) {
        while let Some(left) = queue.poll() {
            match left {
                Left::Admitted {
                    waited_ms, payload, ..
                } => {
                    self.observe(waited_ms);
                    if payload.send(()).is_err() {
                        // Its waiter is gone (it cannot be: a waiter leaves the queue under
                        // this lock before it goes); the slot must not be lost.
                        queue.finish(self.clock.now_ms());
                    }
                }
                // Dropping the sender tells the waiter.
                Left::TimedOut { waited_ms, .. } => self.observe(waited_ms),
            }
        }
        let m = &self.metrics;
        m.in_progress.set(i64::from(queue.in_progress()));
        m.queued_full.set(queue.queued(Kind::Full) as i64);
        m.queued_resumed.set(queue.queued(Kind::Resumed) as i64);
    }

    fn observe(&self, waited_ms: u64) {
        self.metrics
            .queue_seconds
            .observe(waited_ms as f64 / 1000.0);
    }

    /// Waits (at most `queue_timeout`) for a slot for a handshake of `kind`.
    pub async fn admit(&self, kind: Kind) -> Result<Permit<'_>, Refusal> {
        let (ticket, wake) = {
            let mut queue = self.lock();
            let mut wake = None;
            let arrival = queue.arrive(kind, self.clock.now_ms(), || {
                let (tx, rx) = oneshot::channel();
                wake = Some(rx);
                tx
            });
            self.settle(&mut queue);
            match (arrival, wake) {
                (Arrival::Admitted, _) => return Ok(Permit { gate: self }),
                (Arrival::Refused(refusal), _) => return Err(refusal),
                (Arrival::Queued(ticket), Some(wake)) => (ticket, wake),
                (Arrival::Queued(ticket), None) => {
                    // Not reached: a queued arrival always takes its channel.
                    queue.cancel(ticket);
                    return Err(Refusal::QueueFull);
                }
            }
        };
        let mut waiting = Waiting {
            gate: self,
            ticket,
            wake,
            settled: false,
        };
        // A millisecond past the queue's own deadline, so its clock agrees it has passed.
        let limit = self.timeout + Duration::from_millis(1);
        match tokio::time::timeout(limit, &mut waiting.wake).await {
            Ok(Ok(())) => {
                waiting.settled = true;
                Ok(Permit { gate: self })
            }
            Ok(Err(_)) => {
                waiting.settled = true;
                Err(Refusal::Timeout)
            }
            Err(_elapsed) => waiting.conclude().map(|()| Permit { gate: self }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_in_progress: u32, max_queued: u32, timeout_ms: u64) -> HandshakeGate {
        let gauge = |name: &str| IntGauge::new(name, "test").unwrap();
        HandshakeGate::new(
            QueueLimits {
                max_in_progress,
                max_queued,
                queue_timeout_ms: timeout_ms,
                resumed_first: true,
            },
            GateMetrics {
                in_progress: gauge("in_progress"),
                queued_full: gauge("queued_full"),
                queued_resumed: gauge("queued_resumed"),
                queue_seconds: Histogram::with_opts(prometheus::HistogramOpts::new("q", "test"))
                    .unwrap(),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_permit_admits_the_next_waiter() {
        let gate = gate(1, 4, 10_000);
        let first = gate.admit(Kind::Full).await.unwrap();
        assert_eq!(gate.metrics.in_progress.get(), 1);
        let second = gate.admit(Kind::Full);
        tokio::pin!(second);
        // It waits while the slot is taken …
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        assert_eq!(gate.metrics.queued_full.get(), 1);
        drop(first);
        // … and has it once the slot is given back.
        let permit = second.await.unwrap();
        assert_eq!(gate.metrics.in_progress.get(), 1);
        assert_eq!(gate.metrics.queued_full.get(), 0);
        assert_eq!(gate.metrics.queue_seconds.get_sample_count(), 1);
        drop(permit);
        assert_eq!(gate.metrics.in_progress.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_refused_at_the_queue_timeout() {
        let gate = gate(1, 4, 500);
        let _held = gate.admit(Kind::Full).await.unwrap();
        let refused = gate.admit(Kind::Resumed).await;
        assert_eq!(refused.err(), Some(Refusal::Timeout));
        assert_eq!(gate.metrics.queued_resumed.get(), 0);
        assert_eq!(gate.metrics.in_progress.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_at_once() {
        let gate = gate(1, 0, 500);
        let _held = gate.admit(Kind::Full).await.unwrap();
        let refused = gate.admit(Kind::Full).await;
        assert_eq!(refused.err(), Some(Refusal::QueueFull));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_no_trace() {
        let gate = gate(1, 4, 10_000);
        let held = gate.admit(Kind::Full).await.unwrap();
        {
            let waiter = gate.admit(Kind::Full);
            tokio::pin!(waiter);
            assert!(futures_util::poll!(waiter.as_mut()).is_pending());
            assert_eq!(gate.metrics.queued_full.get(), 1);
        }
        assert_eq!(gate.metrics.queued_full.get(), 0, "the dropped waiter left");
        drop(held);
        assert_eq!(gate.metrics.in_progress.get(), 0, "its slot is not taken");
        let _again = gate.admit(Kind::Full).await.unwrap();
    }
}
