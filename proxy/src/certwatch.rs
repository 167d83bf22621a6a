//! Reloads certificates when `cert_dir` changes, and session-ticket keys when their file
//! changes: inotify events through `notify`, plus a slow fingerprint poll as a safety net (it
//! also catches Kubernetes Secret updates, which swap a symlink rather than the file). Live
//! connections keep what they were handshaken with; the next handshake sees the new material.

use std::{path::Path, sync::Arc, time::Duration, time::SystemTime};

use async_trait::async_trait;
use pingora::{server::ShutdownWatch, services::background::BackgroundService};

use crate::{
    dirwatch::watch_dir,
    tls::{ticket_keys::TicketKeys, CertStore},
};

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

/// Background service that re-reads the session-ticket key file when it changes.
pub struct TicketKeyWatcher {
    keys: Arc<TicketKeys>,
}

impl TicketKeyWatcher {
    /// Watches `keys`' file.
    pub fn new(keys: Arc<TicketKeys>) -> Self {
        Self { keys }
    }
}

/// Size and modification time of the file the path leads to (symlinks followed).
fn file_fingerprint(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()))
}

#[async_trait]
impl BackgroundService for TicketKeyWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let path = self.keys.path();
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut watch = watch_dir(dir, path.file_name().map(|n| n.to_owned()));
        let rx = &mut watch.changes;
        let mut last = file_fingerprint(path);
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
            let current = file_fingerprint(path);
            if !notified && current == last {
                continue;
            }
            last = current;
            // Logged and counted inside; a failure keeps the keys in use.
            let _ = self.keys.reload();
        }
    }
}
