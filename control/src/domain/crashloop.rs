//! CrashLoopBackOff: how long to wait before restarting a node that keeps exiting on start.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// First restart delay (as in Kubernetes).
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Largest restart delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The restart delay after `restarts` crashes: 10 s, 20 s, 40 s … capped at 5 minutes. Growing
/// delays keep a crashing image from hammering the host while still recovering quickly from a
/// one-off failure.
pub fn backoff(restarts: u32, base: Duration, cap: Duration) -> Duration {
    let shift = restarts.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << shift).min(cap)
}

/// A node's crash-loop record during one rollout step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoop {
    /// When the first crash of this step happened: the operation timeout counts from here.
    pub since: Timestamp,
    /// Crashes so far.
    pub restarts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let d = |n| backoff(n, BACKOFF_BASE, BACKOFF_CAP).as_secs();
        assert_eq!(
            [d(1), d(2), d(3), d(4), d(5), d(6)],
            [10, 20, 40, 80, 160, 300]
        );
        assert_eq!(d(1000), 300);
        assert_eq!(d(0), 10);
    }
}
