//! Refused authentications: counted and logged at a bounded rate, never written to the store.
//!
//! A request without a valid token is anonymous, so recording it would let anyone grow the
//! audit log (and hold the store's lock for an fsync) at the rate they can send requests. The
//! count is what operators need; the log line says that refusals happen, once per window.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// The metric name under which [`AuthFailures::total`] is exported.
pub const AUTH_FAILURES_TOTAL: &str = "kanmon_control_auth_failures_total";

/// At most one log line per this long; the ones in between are counted in the next line.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Why a request was refused before it had an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not shaped like a kanmon token (refused without a store lookup).
    Malformed,
    /// Unknown, expired, or its user is disabled.
    Rejected,
}

impl Refusal {
    /// The label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    last: Option<Instant>,
    suppressed: u64,
}

/// Counter of refused authentications, shared by every request (one handle per API).
#[derive(Debug, Default)]
pub struct AuthFailures {
    total: AtomicU64,
    window: Mutex<Window>,
}

impl AuthFailures {
    /// Refusals since start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Counts one refusal and logs it unless a line was logged within the window.
    pub fn record(&self, why: Refusal) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if w.last.is_some_and(|at| now.duration_since(at) < LOG_WINDOW) {
            w.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut w.suppressed);
        w.last = Some(now);
        drop(w);
        tracing::warn!(
            reason = why.as_str(),
            total,
            suppressed,
            "refused an unauthenticated API request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_even_when_not_logged() {
        let f = AuthFailures::default();
        for _ in 0..1000 {
            f.record(Refusal::Rejected);
        }
        assert_eq!(f.total(), 1000);
        let w = f.window.lock().unwrap();
        assert_eq!(w.suppressed, 999, "one line per window, the rest counted");
    }
}
