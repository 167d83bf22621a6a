//! File discovery: the nodes file, watched with inotify (through `notify`) and re-read on a
//! slow poll as a safety net (editors and network filesystems do not always send events).
//!
//! An invalid file keeps the last good table and is reported; an unchanged file publishes
//! nothing.

use std::{path::PathBuf, time::Duration};

use tokio::sync::watch;

use super::{DiscoverySource, Publisher};
use crate::{dirwatch::watch_dir, nodes_file};

/// Debounce after a change event: writers that truncate-then-write are seen whole.
const SETTLE: Duration = Duration::from_millis(15);
/// Safety-net poll interval.
const POLL: Duration = Duration::from_secs(2);

/// Watches a nodes file.
pub struct FileSource {
    path: PathBuf,
    max_connections: Option<u64>,
}

impl FileSource {
    /// A source reading `path`; every deployment gets `max_connections`.
    pub fn new(path: PathBuf, max_connections: Option<u64>) -> Self {
        Self {
            path,
            max_connections,
        }
    }

    /// Reads and publishes the file if it changed since `last`.
    async fn reload(&self, publisher: &Publisher, last: &mut Option<String>) {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) => {
                if last.is_some() || !publisher.loaded() {
                    publisher.error(self.name(), &format!("{}: {e}", self.path.display()));
                }
                return;
            }
        };
        if last.as_deref() == Some(text.as_str()) {
            return;
        }
        match nodes_file::parse(&text, self.max_connections) {
            Ok(specs) => {
                publisher.publish_all(self.name(), specs);
            }
            Err(e) => publisher.error(self.name(), &format!("{}: {e}", self.path.display())),
        }
        // Remember even an invalid text, so it is reported once, not on every poll.
        *last = Some(text);
    }
}

#[async_trait::async_trait]
impl DiscoverySource for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn run(&self, publisher: Publisher, mut shutdown: watch::Receiver<bool>) {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut watch = watch_dir(&dir, self.path.file_name().map(|n| n.to_os_string()));
        let rx = &mut watch.changes;
        publisher.register(self.name(), &[]);
        let mut last = None;
        self.reload(&publisher, &mut last).await;
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
            }
            self.reload(&publisher, &mut last).await;
        }
    }
}
