//! Billing by the highest CPU count of each UTC day, as plain functions over samples: a
//! [`Meter`] takes a deployment's sampled node and database CPUs (time passed in) and hands back
//! the [`UsageDay`]s it settles. A day with samples is charged its maximum sample (scale-ups and
//! scale-downs within the day included); a day that passed without a sample (the control plane
//! was down) carries the last known tier, so a gap never makes a day free.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Milliseconds in a UTC day (UNIX time has no leap seconds).
pub const DAY_MS: u64 = 86_400_000;

/// The UTC day (days since 1970-01-01) of `t`.
pub fn day_of(t: Timestamp) -> u64 {
    t.0 / DAY_MS
}

/// When the UTC day after the one holding `t` begins: the next settlement.
pub fn next_midnight(t: Timestamp) -> Timestamp {
    Timestamp((day_of(t) + 1) * DAY_MS)
}

/// CPUs billed: a deployment's node and database CPU counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tier {
    /// Node CPUs.
    pub node_cpus: u32,
    /// Database CPUs.
    pub db_cpus: u32,
}

impl Tier {
    /// Each count the larger of the two.
    fn max(self, other: Tier) -> Tier {
        Tier {
            node_cpus: self.node_cpus.max(other.node_cpus),
            db_cpus: self.db_cpus.max(other.db_cpus),
        }
    }
}

/// One settled day: what is charged for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageDay {
    /// The UTC day (days since 1970-01-01).
    pub day: u64,
    /// The day's highest node and database CPUs.
    #[serde(flatten)]
    pub tier: Tier,
    /// Samples taken that day; 0 for a day that carried the last known tier.
    pub samples: u32,
}

/// The day being metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDay {
    /// Which day.
    pub day: u64,
    /// Its highest sample so far.
    #[serde(flatten)]
    pub max: Tier,
    /// Samples so far.
    pub samples: u32,
}

/// One deployment's meter. Stored between samples, so a restart loses nothing but the samples
/// it did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meter {
    /// The last day settled (or the day before the first sample).
    pub settled_through: Option<u64>,
    /// The current day's samples, if it has any.
    pub open: Option<OpenDay>,
    /// The last sample taken: what a day without samples is charged.
    pub last: Option<Tier>,
}

impl Meter {
    /// Records a sample taken at `at` (times only move forward: a sample older than the open
    /// day is counted in the open day). Returns the days this settles.
    pub fn sample(&mut self, at: Timestamp, tier: Tier) -> Vec<UsageDay> {
        let day = day_of(at).max(self.open.map_or(0, |o| o.day));
        let settled = self.settle(at);
        if self.settled_through.is_none() {
            self.settled_through = Some(day.saturating_sub(1));
        }
        let open = self.open.get_or_insert(OpenDay {
            day,
            max: tier,
            samples: 0,
        });
        open.max = open.max.max(tier);
        open.samples += 1;
        self.last = Some(tier);
        settled
    }

    /// Settles every day that ended before `now` (call at 00:00 UTC, and before a sample).
    pub fn settle(&mut self, now: Timestamp) -> Vec<UsageDay> {
        let today = day_of(now);
        let mut out = Vec::new();
        let Some(mut through) = self.settled_through else {
            return out;
        };
        // Bounded by the days that passed; a meter is settled at least daily in practice.
        while through + 1 < today {
            let day = through + 1;
            match self.open {
                Some(o) if o.day == day => {
                    out.push(UsageDay {
                        day,
                        tier: o.max,
                        samples: o.samples,
                    });
                    self.open = None;
                }
                _ => {
                    if let Some(tier) = self.last {
                        out.push(UsageDay {
                            day,
                            tier,
                            samples: 0,
                        });
                    }
                }
            }
            through = day;
        }
        self.settled_through = Some(through);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn tier(n: u32, d: u32) -> Tier {
        Tier {
            node_cpus: n,
            db_cpus: d,
        }
    }

    #[test]
    fn a_day_is_charged_its_highest_sample_and_settles_at_midnight() {
        let mut m = Meter::default();
        let t = |h: u64| Timestamp(10 * DAY_MS + h * 3_600_000);
        assert!(m.sample(t(1), tier(1, 1)).is_empty());
        assert!(m.sample(t(9), tier(4, 2)).is_empty());
        assert!(m.sample(t(20), tier(2, 2)).is_empty());
        assert!(m.settle(t(23)).is_empty());
        let days = m.settle(t(24));
        assert_eq!(
            days,
            [UsageDay {
                day: 10,
                tier: tier(4, 2),
                samples: 3
            }]
        );
        // Two days without samples carry the last one; nothing is settled twice.
        let days = m.settle(t(72));
        assert_eq!(days.len(), 2);
        assert!(days.iter().all(|d| d.tier == tier(2, 2) && d.samples == 0));
        assert!(m.settle(t(72)).is_empty());
    }

    /// (ms since the first sample's day start, node, db) triples, in time order.
    fn samples() -> impl Strategy<Value = Vec<(u64, u32, u32)>> {
        proptest::collection::vec((0..DAY_MS * 2, 1u32..8, 1u32..8), 1..40).prop_map(|mut v| {
            // Steps between samples: up to two days, so some days have none.
            let mut at = 0;
            for s in v.iter_mut() {
                at += s.0;
                s.0 = at;
            }
            v
        })
    }

    proptest! {
        #[test]
        fn every_day_is_charged_once_with_its_max_or_the_last_known_tier(
            samples in samples(),
            settle_every in 1u64..(DAY_MS * 3),
            extra_days in 0u64..4,
        ) {
            let base = 20_000 * DAY_MS;
            let mut m = Meter::default();
            let mut got: Vec<UsageDay> = Vec::new();
            let mut next_settle = base + settle_every;
            for &(at, n, d) in &samples {
                while next_settle < base + at {
                    got.extend(m.settle(Timestamp(next_settle)));
                    next_settle += settle_every;
                }
                got.extend(m.sample(Timestamp(base + at), tier(n, d)));
            }
            let last_at = base + samples.last().unwrap().0;
            let end = Timestamp((day_of(Timestamp(last_at)) + 1 + extra_days) * DAY_MS);
            got.extend(m.settle(end));

            // Reference: group by day; gaps carry the last sample before them.
            let mut by_day: BTreeMap<u64, Vec<Tier>> = BTreeMap::new();
            for &(at, n, d) in &samples {
                by_day.entry(day_of(Timestamp(base + at))).or_default().push(tier(n, d));
            }
            let first = *by_day.keys().next().unwrap();
            let days: Vec<u64> = got.iter().map(|u| u.day).collect();
            let expected: Vec<u64> = (first..day_of(end)).collect();
            prop_assert_eq!(days, expected);
            let mut carried = tier(0, 0);
            for u in &got {
                match by_day.get(&u.day) {
                    Some(ts) => {
                        let max = ts.iter().fold(tier(0, 0), |a, t| a.max(*t));
                        prop_assert_eq!(u.tier, max);
                        prop_assert_eq!(u.samples as usize, ts.len());
                        carried = *ts.last().unwrap();
                    }
                    None => {
                        prop_assert_eq!(u.tier, carried);
                        prop_assert_eq!(u.samples, 0);
                    }
                }
            }
        }
    }
}
