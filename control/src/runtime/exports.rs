//! Database exports: an export operation, when it runs, asks the [`DatabaseExporter`] (set by
//! `kanmon up`) for a dump file, and [`Downloads`] keeps it downloadable for a while.
//!
//! The dump runs as the operation itself, from the operations queue, so exports of one
//! deployment run one at a time and the dump shows the state when the operation runs. A dump
//! is fetched at `GET /v1/operations/{id}/download` with a bearer token holding `export` on the
//! deployment (no capability token exists to leak), and its file is deleted when the link
//! expires.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;

use super::{effects::send, now, scrub, Inner, Msg};
use crate::domain::{controller::Event, OpId, Timestamp};

/// How long a download link works by default.
pub const DOWNLOAD_TTL: Duration = Duration::from_secs(15 * 60);

/// Writes a database dump of one deployment and returns the file. Blocking.
pub trait DatabaseExporter: Send + Sync + 'static {
    /// Dumps the database of `instance` into a new file, created readable by its owner only.
    /// An error's text is stored in the operation: it must not hold credentials.
    fn export(&self, instance: &str) -> Result<PathBuf, String>;
}

#[derive(Debug)]
struct Link {
    path: PathBuf,
    instance: String,
    expires: Instant,
}

/// Dump files of finished exports, by operation, until their links expire.
#[derive(Debug, Default)]
pub struct Downloads {
    links: Mutex<HashMap<OpId, Link>>,
}

/// Removes a dump file; a file already gone is fine.
fn discard(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(file = %path.display(), "expired database export deleted"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(error = %e, file = %path.display(), "deleting expired export failed")
        }
    }
}

impl Downloads {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<OpId, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `path` (the dump of `instance` taken by operation `op`) downloadable for `ttl`.
    pub fn register(&self, op: OpId, instance: &str, path: PathBuf, ttl: Duration) -> Timestamp {
        let link = Link {
            path,
            instance: instance.to_string(),
            expires: Instant::now() + ttl,
        };
        if let Some(old) = self.links().insert(op, link) {
            discard(&old.path);
        }
        now().after(ttl)
    }

    /// The deployment and file of operation `op`'s dump, while its link works. An expired
    /// link found here is removed with its file.
    pub fn resolve(&self, op: OpId) -> Option<(String, PathBuf)> {
        let mut links = self.links();
        let link = links.get(&op)?;
        if link.expires <= Instant::now() {
            let gone = links.remove(&op)?;
            drop(links);
            discard(&gone.path);
            return None;
        }
        Some((link.instance.clone(), link.path.clone()))
    }

    /// Ends operation `op`'s link if it has expired, deleting its file.
    pub fn expire(&self, op: OpId) {
        let mut links = self.links();
        if links.get(&op).is_some_and(|l| l.expires <= Instant::now()) {
            if let Some(gone) = links.remove(&op) {
                drop(links);
                discard(&gone.path);
            }
        }
    }
}

/// Carries out `Intent::Export`: dumps the database off the async threads, registers the
/// file and arms its deletion, then reports `Event::ExportFinished` to the actor.
pub(super) fn run(inner: &Arc<Inner>, instance: String, op: OpId, secrets: Vec<String>) {
    let Some(exporter) = inner.exporter.get().cloned() else {
        let ev = Event::ExportFinished {
            op,
            result: Ok(None),
        };
        send(inner, &instance, Msg::Event(ev));
        return;
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let name = instance.clone();
        let dumped = tokio::task::spawn_blocking(move || exporter.export(&name)).await;
        let result = match dumped {
            Ok(Ok(path)) => {
                let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                let ttl = inner.settings.export_ttl;
                let expires_at = inner.downloads.register(op, &instance, path, ttl);
                let sweeper = inner.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(ttl).await;
                    sweeper.downloads.expire(op);
                });
                tracing::info!(instance, op, bytes, "database exported");
                Ok(Some(json!({
                    "bytes": bytes,
                    "expires_at": expires_at,
                    "download": format!("/v1/operations/{op}/download"),
                })))
            }
            Ok(Err(e)) => {
                let e = scrub::scrub(&e, secrets.iter().map(String::as_str));
                tracing::warn!(instance, op, error = %e, "database export failed");
                Err(format!("database dump failed: {e}"))
            }
            Err(e) => Err(format!("database dump task failed: {e}")),
        };
        send(
            &inner,
            &instance,
            Msg::Event(Event::ExportFinished { op, result }),
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_links_are_removed_with_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let (live, dead) = (dir.path().join("a.sql"), dir.path().join("b.sql"));
        std::fs::write(&live, "a").unwrap();
        std::fs::write(&dead, "b").unwrap();
        let d = Downloads::default();
        d.register(1, "alpha", live.clone(), Duration::from_secs(60));
        d.register(2, "alpha", dead.clone(), Duration::ZERO);
        assert_eq!(d.resolve(1), Some(("alpha".into(), live.clone())));
        d.expire(1);
        assert!(live.exists(), "a live link keeps its file");
        d.expire(2);
        assert!(!dead.exists(), "an expired link's file is deleted");
        assert_eq!(d.resolve(2), None);
        assert_eq!(d.resolve(3), None);
    }
}
