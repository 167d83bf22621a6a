//! Change notifications for a directory (inotify through `notify`), shared by the certificate
//! watcher and file discovery. Both also poll slowly, so a missing or failing watcher only
//! makes them slower, never blind.

use std::{ffi::OsString, path::Path};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A live directory watch: `changes` yields once per burst of changes (the channel holds one
/// pending notice). Dropping it stops the watch.
pub struct DirWatch {
    _watcher: Option<RecommendedWatcher>,
    /// Receives a notice after files in the directory changed.
    pub changes: mpsc::Receiver<()>,
}

/// Watches `dir`; with `only`, events for other file names are ignored. Our own reads of the
/// files cause access events, so only changes (create, modify, remove, rename) count.
pub fn watch_dir(dir: &Path, only: Option<OsString>) -> DirWatch {
    let (tx, changes) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() || ev.kind.is_other() {
            return;
        }
        let ours = only.as_ref().is_none_or(|name| {
            ev.paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        });
        if ours && tx.try_send(()).is_err() {
            // A notice is already pending; one is enough.
        }
    });
    let watcher = match watcher {
        Ok(mut w) => match w.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "file watcher unavailable; polling only");
            None
        }
    };
    DirWatch {
        _watcher: watcher,
        changes,
    }
}
