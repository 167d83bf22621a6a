//! Scripted Job pods behind the simulated Job controller: a [`JobScript`] decides what a
//! run-to-completion pod does (keep running, or exit with a code, per-container logs and a
//! termination message), so a test can play a build Job's outcome and hold it running while
//! it disturbs the watch. Pods the script does not take keep the built-in behaviour (the
//! `pg_dump` of an export).

use serde_json::Value;

/// What a scripted Job pod does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStep {
    /// Stays running (asked again on the next tick).
    Running,
    /// Exits: `code` (0 succeeds the Job), each `(container, text)` recorded as that
    /// container's log, and `message` as the last container's termination message.
    Exit {
        /// The exit code of the last container.
        code: i32,
        /// Logs by container name.
        logs: Vec<(String, String)>,
        /// The termination message (what the container wrote to its
        /// `terminationMessagePath`).
        message: String,
    },
}

/// Plays the containers of Job pods.
pub trait JobScript: Send + Sync + std::fmt::Debug {
    /// The next step of Job pod `pod` (once it runs); `None`: not this script's pod.
    fn step(&self, pod: &Value) -> Option<JobStep>;
}
