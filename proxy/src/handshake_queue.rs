//! Admission of TLS handshakes, sans-io: at most so many run at once, more wait in a bounded
//! FIFO, and one that finds the queue full or waits past the timeout is refused before any
//! crypto is spent on it.
//!
//! Why: in a reconnect storm every client of a node comes back at once. Started all together,
//! their handshakes share the cores, so each takes as long as the whole crowd and many reach a
//! timeout (the client's or `handshake_timeout`) having cost a full handshake for nothing. A
//! bounded number in progress keeps each one fast, and a cheap early refusal (a closed TCP
//! connection) lets a client retry elsewhere or after a backoff instead of timing out.
//! Resumed handshakes cost a fraction of a full one, so with `resumed_first` they go ahead of
//! queued full ones: the most clients back per CPU-second.
//!
//! Inputs in, intents out: every call takes the time (`now_ms`), and what it decides for
//! waiting handshakes (admitted, timed out) is taken with [`HandshakeQueue::poll`]. Each
//! waiter carries a payload `T` (the async gate's wake-up channel; a plain id in tests).

use std::collections::VecDeque;

/// What a handshake costs: a resumed one (the ClientHello offers a pre-shared key) skips the
/// certificate signature and key exchange of a full one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A full handshake (or one we cannot tell).
    Full,
    /// A handshake that offers session resumption.
    Resumed,
}

impl Kind {
    /// Both kinds, in label order.
    pub const ALL: [Kind; 2] = [Kind::Full, Kind::Resumed];

    /// The `kind` label of `kanmon_tls_handshakes_queued`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Resumed => "resumed",
        }
    }
}

/// The admission policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Handshakes running at once (at least 1; "off" is no queue at all).
    pub max_in_progress: u32,
    /// Handshakes waiting at once; 0: none wait, a handshake that cannot start is refused.
    pub max_queued: u32,
    /// Longest wait, in ms: a waiter reaching it is refused.
    pub queue_timeout_ms: u64,
    /// Whether waiting resumed handshakes start before waiting full ones.
    pub resumed_first: bool,
}

/// Why a handshake was refused before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every slot was busy and the queue was full.
    #[error("handshake queue full")]
    QueueFull,
    /// It waited `queue_timeout` without a slot.
    #[error("handshake waited past the queue timeout")]
    Timeout,
}

impl Refusal {
    /// A short name for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Timeout => "queue_timeout",
        }
    }
}

/// A waiting handshake's place (increasing in arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// What became of a handshake on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// It may start now (it holds a slot until [`HandshakeQueue::finish`]).
    Admitted,
    /// It waits; its outcome comes out of [`HandshakeQueue::poll`].
    Queued(Ticket),
    /// It must not start.
    Refused(Refusal),
}

/// A waiter that left the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Left<T> {
    /// It holds a slot now and may start.
    Admitted {
        /// Its place.
        ticket: Ticket,
        /// Its kind.
        kind: Kind,
        /// How long it waited.
        waited_ms: u64,
        /// What it carried.
        payload: T,
    },
    /// It waited `queue_timeout` and is refused.
    TimedOut {
        /// Its place.
        ticket: Ticket,
        /// Its kind.
        kind: Kind,
        /// How long it waited.
        waited_ms: u64,
        /// What it carried.
        payload: T,
    },
}

#[derive(Debug)]
struct Waiter<T> {
    ticket: Ticket,
    since_ms: u64,
    payload: T,
}

/// The queue and the count of handshakes in progress. Sans-io.
#[derive(Debug)]
pub struct HandshakeQueue<T> {
    limits: QueueLimits,
    in_progress: u32,
    full: VecDeque<Waiter<T>>,
    resumed: VecDeque<Waiter<T>>,
    next_ticket: u64,
    /// The latest time seen: a clock passed in that steps back never un-expires a waiter.
    now_ms: u64,
    out: VecDeque<Left<T>>,
}

impl<T> HandshakeQueue<T> {
    /// An empty queue under `limits` (a `max_in_progress` of 0 is taken as 1).
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            limits: QueueLimits {
                max_in_progress: limits.max_in_progress.max(1),
                ..limits
            },
            in_progress: 0,
            full: VecDeque::new(),
            resumed: VecDeque::new(),
            next_ticket: 0,
            now_ms: 0,
            out: VecDeque::new(),
        }
    }

    /// Handshakes in progress.
    pub fn in_progress(&self) -> u32 {
        self.in_progress
    }

    /// Handshakes of `kind` waiting.
    pub fn queued(&self, kind: Kind) -> usize {
        self.lane(kind).len()
    }

    /// When the oldest waiter times out, if any waits.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        let oldest = [self.full.front(), self.resumed.front()]
            .into_iter()
            .flatten()
            .map(|w| w.since_ms)
            .min()?;
        Some(oldest.saturating_add(self.limits.queue_timeout_ms))
    }

    fn lane(&self, kind: Kind) -> &VecDeque<Waiter<T>> {
        match kind {
            Kind::Full => &self.full,
            Kind::Resumed => &self.resumed,
        }
    }

    fn lane_mut(&mut self, kind: Kind) -> &mut VecDeque<Waiter<T>> {
        match kind {
            Kind::Full => &mut self.full,
            Kind::Resumed => &mut self.resumed,
        }
    }

    fn advance(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    /// A handshake of `kind` arrives at `now_ms`; `payload` is called only if it has to wait.
    /// Waiters that timed out by now leave first (see [`HandshakeQueue::poll`]).
    pub fn arrive(&mut self, kind: Kind, now_ms: u64, payload: impl FnOnce() -> T) -> Arrival {
        let now = self.advance(now_ms);
        self.expire_due(now);
        // Waiters exist only while every slot is busy (a freed slot goes to the next one), so
        // a newcomer that finds a free slot overtakes no one.
        if self.in_progress < self.limits.max_in_progress {
            self.in_progress += 1;
            return Arrival::Admitted;
        }
        let waiting = self.full.len() + self.resumed.len();
        if waiting >= self.limits.max_queued as usize {
            return Arrival::Refused(Refusal::QueueFull);
        }
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.lane_mut(kind).push_back(Waiter {
            ticket,
            since_ms: now,
            payload: payload(),
        });
        Arrival::Queued(ticket)
    }

    /// A handshake that held a slot ended (done, failed or cancelled) at `now_ms`: the slot
    /// goes to the next waiter that has not timed out.
    pub fn finish(&mut self, now_ms: u64) {
        let now = self.advance(now_ms);
        self.in_progress = self.in_progress.saturating_sub(1);
        self.expire_due(now);
        if self.in_progress < self.limits.max_in_progress {
            if let Some((kind, w)) = self.next_waiter() {
                self.in_progress += 1;
                self.out.push_back(Left::Admitted {
                    ticket: w.ticket,
                    kind,
                    waited_ms: now.saturating_sub(w.since_ms),
                    payload: w.payload,
                });
            }
        }
    }

    /// Refuses the waiters that have waited `queue_timeout` by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let now = self.advance(now_ms);
        self.expire_due(now);
    }

    /// Takes a waiter out that no longer wants its place (its connection went away, or its
    /// own timer fired first); `None` when it is no longer waiting (it left through `poll`).
    pub fn cancel(&mut self, ticket: Ticket) -> Option<T> {
        for kind in Kind::ALL {
            let lane = self.lane_mut(kind);
            // Each lane is in ticket order.
            if let Ok(i) = lane.binary_search_by_key(&ticket, |w| w.ticket) {
                return lane.remove(i).map(|w| w.payload);
            }
        }
        None
    }

    /// The next decision about a waiter, oldest first.
    pub fn poll(&mut self) -> Option<Left<T>> {
        self.out.pop_front()
    }

    fn next_waiter(&mut self) -> Option<(Kind, Waiter<T>)> {
        let kind = match (self.full.front(), self.resumed.front()) {
            (_, Some(_)) if self.limits.resumed_first => Kind::Resumed,
            (Some(f), Some(r)) if r.ticket < f.ticket => Kind::Resumed,
            (Some(_), _) => Kind::Full,
            (None, Some(_)) => Kind::Resumed,
            (None, None) => return None,
        };
        self.lane_mut(kind).pop_front().map(|w| (kind, w))
    }

    fn expire_due(&mut self, now: u64) {
        let timeout = self.limits.queue_timeout_ms;
        for kind in Kind::ALL {
            // Each lane is in arrival order, so its oldest are at the front.
            while let Some(front) = self.lane(kind).front() {
                if now.saturating_sub(front.since_ms) < timeout {
                    break;
                }
                let Some(w) = self.lane_mut(kind).pop_front() else {
                    break;
                };
                self.out.push_back(Left::TimedOut {
                    ticket: w.ticket,
                    kind,
                    waited_ms: now.saturating_sub(w.since_ms),
                    payload: w.payload,
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "handshake_queue_tests.rs"]
mod tests;
