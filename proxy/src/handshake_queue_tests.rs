//! The admission rules on their own: examples, then properties over any schedule of arrivals,
//! finishes, expiries and cancellations.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn limits(max_in_progress: u32, max_queued: u32, resumed_first: bool) -> QueueLimits {
    QueueLimits {
        max_in_progress,
        max_queued,
        queue_timeout_ms: 1000,
        resumed_first,
    }
}

fn drain<T>(q: &mut HandshakeQueue<T>) -> Vec<Left<T>> {
    std::iter::from_fn(|| q.poll()).collect()
}

#[test]
fn slots_then_queue_then_refusal() {
    let mut q = HandshakeQueue::new(limits(2, 1, true));
    assert_eq!(q.arrive(Kind::Full, 0, || 1), Arrival::Admitted);
    assert_eq!(q.arrive(Kind::Full, 0, || 2), Arrival::Admitted);
    let Arrival::Queued(t3) = q.arrive(Kind::Full, 0, || 3) else {
        panic!("third waits")
    };
    assert_eq!(
        q.arrive(Kind::Resumed, 0, || 4),
        Arrival::Refused(Refusal::QueueFull)
    );
    assert_eq!(q.in_progress(), 2);
    assert_eq!(q.queued(Kind::Full), 1);
    q.finish(10);
    assert_eq!(
        drain(&mut q),
        vec![Left::Admitted {
            ticket: t3,
            kind: Kind::Full,
            waited_ms: 10,
            payload: 3
        }]
    );
    assert_eq!(q.in_progress(), 2, "the freed slot went to the waiter");
    q.finish(20);
    q.finish(20);
    assert_eq!(q.in_progress(), 0);
    assert!(drain(&mut q).is_empty());
}

#[test]
fn resumed_go_first_only_when_asked() {
    for resumed_first in [true, false] {
        let mut q = HandshakeQueue::new(limits(1, 10, resumed_first));
        assert_eq!(q.arrive(Kind::Full, 0, || 0), Arrival::Admitted);
        q.arrive(Kind::Full, 1, || 1);
        q.arrive(Kind::Resumed, 2, || 2);
        q.finish(3);
        let Some(Left::Admitted { payload, .. }) = q.poll() else {
            panic!("one admitted")
        };
        assert_eq!(
            payload,
            if resumed_first { 2 } else { 1 },
            "{resumed_first}"
        );
    }
}

#[test]
fn a_waiter_times_out_and_is_never_admitted_late() {
    let mut q = HandshakeQueue::new(limits(1, 10, true));
    q.arrive(Kind::Full, 0, || 0);
    let Arrival::Queued(t) = q.arrive(Kind::Full, 100, || 1) else {
        panic!("waits")
    };
    assert_eq!(q.next_deadline_ms(), Some(1100));
    q.expire(1099);
    assert!(q.poll().is_none());
    // The slot frees after the deadline: the waiter is refused, not admitted.
    q.finish(1100);
    assert_eq!(
        drain(&mut q),
        vec![Left::TimedOut {
            ticket: t,
            kind: Kind::Full,
            waited_ms: 1000,
            payload: 1
        }]
    );
    assert_eq!(q.in_progress(), 0);
    assert_eq!(q.next_deadline_ms(), None);
}

#[test]
fn a_clock_stepping_back_does_not_un_expire() {
    let mut q = HandshakeQueue::new(limits(1, 10, true));
    q.arrive(Kind::Full, 5000, || 0);
    q.arrive(Kind::Full, 5000, || 1);
    // Earlier than before: taken as the latest time seen.
    q.finish(10);
    assert!(matches!(
        q.poll(),
        Some(Left::Admitted { waited_ms: 0, .. })
    ));
}

#[test]
fn cancelled_waiters_leave_without_a_decision() {
    let mut q = HandshakeQueue::new(limits(1, 10, true));
    q.arrive(Kind::Full, 0, || 0);
    let Arrival::Queued(a) = q.arrive(Kind::Resumed, 0, || 1) else {
        panic!()
    };
    let Arrival::Queued(b) = q.arrive(Kind::Full, 0, || 2) else {
        panic!()
    };
    assert_eq!(q.cancel(a), Some(1));
    assert_eq!(q.cancel(a), None, "only once");
    q.finish(1);
    assert!(matches!(q.poll(), Some(Left::Admitted { ticket, .. }) if ticket == b));
    assert_eq!(q.cancel(b), None, "admitted, no longer waiting");
}

#[test]
fn no_queue_refuses_at_once() {
    let mut q = HandshakeQueue::new(limits(1, 0, true));
    assert_eq!(q.arrive(Kind::Resumed, 0, || 0), Arrival::Admitted);
    assert_eq!(
        q.arrive(Kind::Resumed, 0, || 1),
        Arrival::Refused(Refusal::QueueFull)
    );
}

/// One step of a schedule.
#[derive(Debug, Clone)]
enum Op {
    Arrive {
        resumed: bool,
        after_ms: u64,
    },
    /// The `n`-th (mod count) handshake in progress ends.
    Finish {
        n: usize,
        after_ms: u64,
    },
    Expire {
        after_ms: u64,
    },
    /// The `n`-th (mod count) waiter goes away.
    Cancel {
        n: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u64..300).prop_map(|(resumed, after_ms)| Op::Arrive { resumed, after_ms }),
        3 => (any::<usize>(), 0u64..300).prop_map(|(n, after_ms)| Op::Finish { n, after_ms }),
        1 => (0u64..1500).prop_map(|after_ms| Op::Expire { after_ms }),
        1 => any::<usize>().prop_map(|n| Op::Cancel { n }),
    ]
}

/// Where the test's model has each handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting {
        ticket: Ticket,
        kind: Kind,
        since: u64,
    },
    InProgress,
    Finished,
    Refused,
    Cancelled,
}

struct Model {
    q: HandshakeQueue<usize>,
    limits: QueueLimits,
    states: Vec<State>,
    /// Order in which waiters of each kind were admitted (their ids).
    admitted: HashMap<Kind, Vec<usize>>,
    now: u64,
}

impl Model {
    fn waiting(&self) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&i| matches!(self.states[i], State::Waiting { .. }))
            .collect()
    }

    /// Applies what the queue decided and checks each decision.
    fn take_decisions(&mut self) -> Result<(), TestCaseError> {
        while let Some(left) = self.q.poll() {
            match left {
                Left::Admitted {
                    ticket,
                    kind,
                    waited_ms,
                    payload,
                } => {
                    let was = self.states[payload];
                    prop_assert_eq!(
                        was,
                        State::Waiting {
                            ticket,
                            kind,
                            since: self.now - waited_ms
                        }
                    );
                    prop_assert!(waited_ms < self.limits.queue_timeout_ms, "admitted late");
                    if self.limits.resumed_first && kind == Kind::Full {
                        let resumed_waiting = self.waiting().into_iter().any(|i| {
                            matches!(
                                self.states[i],
                                State::Waiting {
                                    kind: Kind::Resumed,
                                    ..
                                }
                            )
                        });
                        prop_assert!(!resumed_waiting, "a full one went before a resumed one");
                    }
                    self.states[payload] = State::InProgress;
                    self.admitted.entry(kind).or_default().push(payload);
                }
                Left::TimedOut {
                    ticket,
                    kind,
                    waited_ms,
                    payload,
                } => {
                    let was = self.states[payload];
                    prop_assert_eq!(
                        was,
                        State::Waiting {
                            ticket,
                            kind,
                            since: self.now - waited_ms
                        }
                    );
                    prop_assert!(waited_ms >= self.limits.queue_timeout_ms, "refused early");
                    self.states[payload] = State::Refused;
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let in_progress = self
            .states
            .iter()
            .filter(|s| **s == State::InProgress)
            .count();
        prop_assert_eq!(in_progress, self.q.in_progress() as usize);
        prop_assert!(in_progress <= self.limits.max_in_progress as usize);
        let waiting = self.waiting();
        prop_assert!(
            waiting.len() <= self.limits.max_queued as usize,
            "queue above its bound"
        );
        prop_assert_eq!(
            waiting.len(),
            self.q.queued(Kind::Full) + self.q.queued(Kind::Resumed)
        );
        if !waiting.is_empty() {
            // Waiting while a slot is free would be waiting for nothing.
            prop_assert_eq!(in_progress, self.limits.max_in_progress as usize);
        }
        for i in waiting {
            if let State::Waiting { since, .. } = self.states[i] {
                // Only an expiry pass can notice a deadline; every call makes one.
                prop_assert!(
                    self.now - since < self.limits.queue_timeout_ms,
                    "waits past the timeout"
                );
            }
        }
        // FIFO within a kind: admitted in arrival order.
        for ids in self.admitted.values() {
            prop_assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "out of order: {:?}",
                ids
            );
        }
        Ok(())
    }
}

proptest! {
    /// For any schedule: never more than the limit in progress, FIFO within a kind, resumed
    /// first when asked, nothing waits past the timeout, the queue never above its bound, and
    /// every handshake that entered leaves exactly once (admitted then finished, refused, or
    /// cancelled by its connection).
    #[test]
    fn admission_holds_for_any_schedule(
        max_in_progress in 1u32..5,
        max_queued in 0u32..6,
        queue_timeout_ms in 1u64..1200,
        resumed_first in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let limits = QueueLimits { max_in_progress, max_queued, queue_timeout_ms, resumed_first };
        let mut m = Model {
            q: HandshakeQueue::new(limits),
            limits,
            states: Vec::new(),
            admitted: HashMap::new(),
            now: 0,
        };
        for op in ops {
            match op {
                Op::Arrive { resumed, after_ms } => {
                    m.now += after_ms;
                    let kind = if resumed { Kind::Resumed } else { Kind::Full };
                    let id = m.states.len();
                    let arrival = m.q.arrive(kind, m.now, || id);
                    // Expiries decided on arrival come out before the newcomer's fate matters.
                    m.states.push(State::Refused);
                    m.take_decisions()?;
                    m.states[id] = match arrival {
                        Arrival::Admitted => State::InProgress,
                        Arrival::Queued(ticket) => State::Waiting { ticket, kind, since: m.now },
                        Arrival::Refused(Refusal::QueueFull) => {
                            let waiting = m.waiting().len();
                            prop_assert_eq!(waiting, max_queued as usize, "refused with room");
                            State::Refused
                        }
                        Arrival::Refused(Refusal::Timeout) => {
                            prop_assert!(false, "an arrival cannot time out");
                            State::Refused
                        }
                    };
                }
                Op::Finish { n, after_ms } => {
                    let running: Vec<usize> = (0..m.states.len())
                        .filter(|&i| m.states[i] == State::InProgress)
                        .collect();
                    if running.is_empty() {
                        continue;
                    }
                    m.now += after_ms;
                    m.states[running[n % running.len()]] = State::Finished;
                    m.q.finish(m.now);
                    m.take_decisions()?;
                }
                Op::Expire { after_ms } => {
                    m.now += after_ms;
                    m.q.expire(m.now);
                    m.take_decisions()?;
                }
                Op::Cancel { n } => {
                    let waiting = m.waiting();
                    if waiting.is_empty() {
                        continue;
                    }
                    let id = waiting[n % waiting.len()];
                    let State::Waiting { ticket, .. } = m.states[id] else { unreachable!() };
                    prop_assert_eq!(m.q.cancel(ticket), Some(id));
                    m.states[id] = State::Cancelled;
                }
            }
            m.check()?;
        }
        // Wind down: every handshake in progress ends; the rest is admitted or times out.
        for _ in 0..(m.states.len() + 1) {
            if m.q.in_progress() == 0 {
                break;
            }
            if let Some(i) = m.states.iter().position(|s| *s == State::InProgress) {
                m.states[i] = State::Finished;
            }
            m.q.finish(m.now);
            m.take_decisions()?;
            m.check()?;
        }
        m.now += queue_timeout_ms;
        m.q.expire(m.now);
        m.take_decisions()?;
        prop_assert_eq!(m.q.in_progress(), 0);
        prop_assert!(m.q.poll().is_none());
        for s in &m.states {
            prop_assert!(
                matches!(s, State::Finished | State::Refused | State::Cancelled),
                "left in {:?}", s
            );
        }
    }
}
