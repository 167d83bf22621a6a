//! How long a request body may take: a grace for its first bytes, then a minimum average
//! rate, as one deadline for the whole body. A deadline per read lets a client that sends a
//! byte just inside each one hold a node connection and a deployment slot for as long as it
//! likes; this bounds the body by its size. Sans-io: the caller measures time from the start
//! of the body and asks how much of it the bytes received so far have earned.

use std::time::Duration;

/// The pace a request body must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    grace: Duration,
    min_rate: u64,
}

impl BodyPace {
    /// `grace` before any byte is due, then at least `min_rate` bytes per second on average
    /// (a rate of 0 is taken as 1).
    pub fn new(grace: Duration, min_rate: u64) -> Self {
        Self {
            grace,
            min_rate: min_rate.max(1),
        }
    }

    /// How long after the start of the body the next bytes may arrive, once `received`
    /// bytes have: the grace plus the time `received` bytes take at the minimum rate.
    pub fn allowed(&self, received: u64) -> Duration {
        let secs = received / self.min_rate;
        let rest = received % self.min_rate;
        let nanos = u128::from(rest) * 1_000_000_000 / u128::from(self.min_rate);
        self.grace
            .saturating_add(Duration::from_secs(secs))
            .saturating_add(Duration::from_nanos(nanos as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_grace_then_the_rate() {
        let pace = BodyPace::new(Duration::from_secs(15), 1000);
        assert_eq!(pace.allowed(0), Duration::from_secs(15));
        assert_eq!(pace.allowed(500), Duration::from_millis(15_500));
        assert_eq!(pace.allowed(10_000), Duration::from_secs(25));
        assert_eq!(
            BodyPace::new(Duration::ZERO, 0).allowed(3),
            Duration::from_secs(3)
        );
        assert_eq!(
            BodyPace::new(Duration::MAX, 1).allowed(u64::MAX),
            Duration::MAX
        );
    }

    proptest! {
        /// A sender that keeps the minimum rate (its first read within the grace) is never
        /// cut, however it splits the body.
        #[test]
        fn a_steady_sender_at_the_minimum_rate_is_never_cut(
            rate in 1u64..100_000,
            reads in proptest::collection::vec(1u64..10_000, 1..50),
            grace_ms in 0u64..20_000,
        ) {
            let pace = BodyPace::new(Duration::from_millis(grace_ms), rate);
            let mut received = 0u64;
            let mut at = Duration::ZERO;
            for n in &reads {
                prop_assert!(at <= pace.allowed(received));
                received += n;
                // The next read comes as late as the rate allows (integer nanoseconds: a
                // float here rounds up past the deadline, e.g. 575 bytes at 6/s).
                let nanos = u128::from(received) * 1_000_000_000 / u128::from(rate);
                at = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
            }
        }

        /// One that sends a byte a second less than the minimum, steadily, is cut.
        #[test]
        fn a_sender_below_the_rate_is_cut(rate in 2u64..10_000, grace_ms in 0u64..5_000) {
            let pace = BodyPace::new(Duration::from_millis(grace_ms), rate);
            let slower = rate - 1;
            // One byte every 1/slower seconds falls a whole second behind the minimum by
            // byte k: its arrival is later than what the bytes before it earned.
            let grace_s = grace_ms.div_ceil(1000);
            let k = (grace_s + 1) * rate * slower + 1;
            let arrives = Duration::from_secs_f64(k as f64 / slower as f64);
            prop_assert!(arrives > pace.allowed(k - 1));
        }
    }
}
