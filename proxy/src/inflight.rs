//! Counts client connections from accept to close (a WebSocket is one long connection), so a
//! graceful shutdown can end the process as soon as the last one is gone instead of waiting
//! out the grace period.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

/// Shared in-flight counter.
#[derive(Debug, Clone, Default)]
pub struct Inflight(Arc<AtomicU64>);

/// Counts one connection while alive.
#[derive(Debug)]
pub struct InflightGuard(Arc<AtomicU64>);

impl Inflight {
    /// Enters one connection.
    pub fn enter(&self) -> InflightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.0.clone())
    }

    /// Connections open now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
