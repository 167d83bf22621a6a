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
        let dir = self.store.dir();
        on_changes(
            dir,
            None,
            || fingerprint(dir),
            || {
                let report = self.store.reload();
                tracing::info!(%report, "certificates reloaded");
            },
            &mut shutdown,
        )
        .await;
    }
}

/// Calls `reload` whenever `dir` (only the file `only` in it, if given) changes: on a change
/// notice (after a short settle, a burst folded into one), or when a slow poll finds that
/// `fingerprint` moved. Returns at shutdown.
async fn on_changes<F: PartialEq>(
    dir: &Path,
    only: Option<std::ffi::OsString>,
    fingerprint: impl Fn() -> F,
    mut reload: impl FnMut(),
    shutdown: &mut ShutdownWatch,
) {
    let mut watch = watch_dir(dir, only);
    let rx = &mut watch.changes;
    let mut last = fingerprint();
    // What was loaded at start-up may be older than the watch: a file written in between
    // (e.g. the first deployment's certificate, while an embedding control plane starts)
    // would otherwise wait for its next change. One reload once the watch is in place.
    reload();
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
        // One look per wake-up: the poll reloads only on a changed fingerprint.
        let current = fingerprint();
        if !notified && current == last {
            continue;
        }
        last = current;
        reload();
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
        on_changes(
            dir,
            path.file_name().map(|n| n.to_owned()),
            || file_fingerprint(path),
            || {
                // Logged and counted inside; a failure keeps the keys in use.
                let _ = self.keys.reload();
            },
            &mut shutdown,
        )
        .await;
    }
}
