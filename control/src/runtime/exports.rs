//! Database exports: a [`DatabaseExporter`] (set by `kanmon up`) writes a dump file, and
//! [`Downloads`] hands out expiring download links for it (`GET /v1/downloads/{token}`).
//!
//! A link is a random 256-bit token (the capability itself, so a browser or `curl` can fetch it
//! without the API token) that stops working after its time to live.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{now, random_secret};
use crate::domain::Timestamp;

/// How long a download link works.
pub const DOWNLOAD_TTL: Duration = Duration::from_secs(15 * 60);

/// Writes a database dump of one deployment and returns the file. Blocking.
pub trait DatabaseExporter: Send + Sync + 'static {
    /// Dumps the database of `instance` into a new file.
    fn export(&self, instance: &str) -> Result<PathBuf, String>;
}

#[derive(Debug)]
struct Link {
    path: PathBuf,
    instance: String,
    expires: Instant,
}

/// A link handed out for one dump file.
#[derive(Debug, Clone)]
pub struct DownloadLink {
    /// The random token (path segment of the link).
    pub token: String,
    /// When the link stops working.
    pub expires_at: Timestamp,
}

/// Expiring download links.
#[derive(Debug, Default)]
pub struct Downloads {
    links: Mutex<HashMap<String, Link>>,
}

impl Downloads {
    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new link to `path` that works for `ttl`.
    pub fn register(&self, instance: &str, path: PathBuf, ttl: Duration) -> DownloadLink {
        let token = random_secret();
        let mut links = self.links();
        let at = Instant::now();
        links.retain(|_, l| l.expires > at);
        links.insert(
            token.clone(),
            Link {
                path,
                instance: instance.to_string(),
                expires: at + ttl,
            },
        );
        DownloadLink {
            token,
            expires_at: now().after(ttl),
        }
    }

    /// The file and deployment behind `token`, if the link exists and has not expired.
    pub fn resolve(&self, token: &str) -> Option<(String, PathBuf)> {
        let mut links = self.links();
        let link = links.get(token)?;
        if link.expires <= Instant::now() {
            links.remove(token);
            return None;
        }
        Some((link.instance.clone(), link.path.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_expire() {
        let d = Downloads::default();
        let live = d.register("alpha", "a.sql".into(), Duration::from_secs(60));
        let dead = d.register("alpha", "b.sql".into(), Duration::ZERO);
        assert_eq!(
            d.resolve(&live.token),
            Some(("alpha".into(), "a.sql".into()))
        );
        assert_eq!(d.resolve(&dead.token), None);
        assert_eq!(d.resolve("nope"), None);
    }
}
