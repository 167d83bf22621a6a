//! Reloads certificates when `cert_dir` changes: inotify events through `notify`, plus a
//! slow fingerprint poll as a safety net. Live connections keep the certificate they were
//! handshaken with; the next handshake sees the new one.

use std::{path::Path, sync::Arc, time::Duration, time::SystemTime};

use async_trait::async_trait;
use pingora::{server::ShutdownWatch, services::background::BackgroundService};

use crate::{dirwatch::watch_dir, tls::CertStore};

const SETTLE: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_secs(5);

/// Background service that keeps a [`CertStore`] in step with its directory.
pub struct CertWatcher {
    store: Arc<CertStore>,
}

impl CertWatcher {
    /// Watches `store`'s directory.
    pub fn new(store: Arc<CertStore>) -> Self {
        Self { store }
    }
}

/// Names, sizes and modification times of the directory's files.
fn fingerprint(dir: &Path) -> Vec<(std::ffi::OsString, u64, Option<SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.file_name(), m.len(), m.modified().ok()))
        })
        .collect();
    v.sort();
    v
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut watch = watch_dir(self.store.dir(), None);
        let rx = &mut watch.changes;
        let mut last = fingerprint(self.store.dir());
        let mut poll = tokio::time::interval(POLL);
        loop {
            let notified = tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                    true
                }
                _ = poll.tick() => false,
            };
            // One directory scan per wake-up: the poll reloads only on a changed fingerprint.
            let current = fingerprint(self.store.dir());
            if !notified && current == last {
                continue;
            }
            last = current;
            let report = self.store.reload();
            tracing::info!(%report, "certificates reloaded");
        }
    }
}
