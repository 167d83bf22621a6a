//! The log subscriber every kanmon binary installs: one filter policy, two formats.
//!
//! Text is for people at a terminal; JSON (one object per line, UTC timestamps) is for log
//! pipelines that index `level` and the structured `fields`, so both formats carry the same
//! events: the routine-event filter below applies to each.

use tracing_subscriber::{
    fmt::MakeWriter, layer::SubscriberExt, registry::Registry, EnvFilter, Layer,
};

/// How log lines are written to stderr (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339, UTC), `level`, `target`, `fields`.
    Json,
}

/// Warnings and errors of dependencies that are routine events, not faults (operators page on
/// ERROR), whatever `RUST_LOG` says. pingora 0.9.1's "failed to acquire reusable stream" is
/// its h2 client losing a race with its own idle-pool watcher (a fresh connection is used, the
/// response is fine). kube-client warns when a watch stream ends on an EOF or a read timeout
/// (an API server's clean shutdown, the timeout that notices a partition) and when a body
/// fails to decode, and logs every failed request as an ERROR: the watcher resumes, and the
/// discovery source counts and logs the failures that matter itself, at warning.
fn is_routine(meta: &tracing::Metadata<'_>) -> bool {
    let (target, level) = (meta.target(), *meta.level());
    (target == "pingora_core::connectors" && level == tracing::Level::ERROR)
        || (target == "kube_client::client" && level == tracing::Level::WARN)
        || (target == "kube_client::client::builder" && level == tracing::Level::ERROR)
}

/// The log subscriber: `filter` (`RUST_LOG` or the binary's default), minus the routine
/// events, written to `writer` in `format`. A line that cannot be written (stderr piped into
/// a `tee` that Ctrl-C ended) is dropped: reporting it would fail on the same closed stream.
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W) -> impl tracing::Subscriber
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(writer)
            .log_internal_errors(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .log_internal_errors(false)
            .boxed(),
    };
    tracing_subscriber::registry().with(
        layer
            .with_filter(filter)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| !is_routine(m))),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::LogFormat;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat, events: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = super::subscriber(format, "debug".into(), move || writer.clone());
        tracing::subscriber::with_default(subscriber, events);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn routine_dependency_events_are_dropped_whatever_rust_log_says_in_both_formats() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let text = capture(format, || {
                tracing::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
                tracing::warn!(target: "kube_client::client", "eof in poll: UnexpectedEof");
                tracing::error!(target: "kube_client::client::builder", "failed with error client error (Connect)");
                // The same crates' other events, and ours, still show.
                tracing::warn!(target: "pingora_core::connectors", "Unexpected data read in idle connection");
                tracing::warn!(target: "kube_client::client::tls", "failed to reload CA bundle");
                tracing::warn!(target: "kanmon_proxy::discovery", "discovery failed");
            });
            for routine in ["reusable stream", "eof in poll", "failed with error"] {
                assert!(!text.contains(routine), "{format:?} {routine}: {text}");
            }
            for kept in ["Unexpected data", "CA bundle", "discovery failed"] {
                assert!(text.contains(kept), "{format:?} {kept}: {text}");
            }
        }
    }

    #[test]
    fn json_lines_carry_a_utc_timestamp_the_level_and_the_structured_fields() {
        let text = capture(LogFormat::Json, || {
            tracing::warn!(node = "alpha-0", code = 3, "node exited");
        });
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["level"], "WARN", "{text}");
        assert_eq!(line["fields"]["message"], "node exited", "{text}");
        assert_eq!(line["fields"]["node"], "alpha-0", "{text}");
        assert_eq!(line["fields"]["code"], 3, "{text}");
        let ts = line["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "not UTC: {ts}");
    }
}
