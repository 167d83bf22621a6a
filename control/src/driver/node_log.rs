//! How a line a node printed is stored: one JSON object per line, so the logs API can filter
//! by time, severity and text without guessing at each node's own format.
//!
//! `{"ts":"2026-12-01T23:00:00.123Z","node":"demo-0","stream":"stdout","severity":"info","line":"…"}`
//!
//! The timestamp is when kanmon read the line, in UTC. The severity is the line's own `level`
//! when the node writes JSON log lines (as Nakama does: `"level":"warn"`), else it comes from
//! the stream: `info` for stdout, `warn` for stderr (programs print routine diagnostics on
//! stderr too; `warn` keeps them in a `severity=warn` search without making every one an
//! error).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Longest log line kept, in bytes (the platform's promise); the rest of the line is dropped.
pub const LOG_LINE_LIMIT: usize = 5 * 1024;

/// Which of the node's output streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A log line's severity, ordered so that a minimum can be asked for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Debug and trace output.
    Debug,
    /// Routine events.
    Info,
    /// Something an operator may want to look at.
    Warn,
    /// Failures (fatal and panic included).
    Error,
}

impl Severity {
    /// Reads the level names loggers write (`warning`, `WARN`, `fatal`, `dpanic`, …); `None`
    /// for a name that is no level, so the stream decides.
    pub fn from_level(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Some(Self::Debug),
            "info" | "notice" => Some(Self::Info),
            "warn" | "warning" => Some(Self::Warn),
            "error" | "err" | "fatal" | "panic" | "dpanic" | "critical" | "crit" => {
                Some(Self::Error)
            }
            _ => None,
        }
    }

    fn of_stream(stream: Stream) -> Self {
        match stream {
            Stream::Stdout => Self::Info,
            Stream::Stderr => Self::Warn,
        }
    }
}

/// One stored line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    /// When kanmon read the line: RFC 3339, UTC, milliseconds.
    pub ts: String,
    /// The node that printed it.
    pub node: String,
    /// The stream it came from.
    pub stream: Stream,
    /// The line's severity (see the module documentation).
    pub severity: Severity,
    /// The line as printed, without its newline, cut at [`LOG_LINE_LIMIT`] bytes.
    pub line: String,
}

/// Only the field a node's JSON line names its level in.
#[derive(Deserialize)]
struct Leveled<'a> {
    #[serde(borrow)]
    level: std::borrow::Cow<'a, str>,
}

impl Record {
    /// The record of `raw` (one line as read, newline or not) printed by `node` on `stream`
    /// at `now`.
    pub fn new(node: &str, stream: Stream, raw: &[u8], now: SystemTime) -> Self {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = &raw[..raw.len().min(LOG_LINE_LIMIT)];
        let line = String::from_utf8_lossy(raw).into_owned();
        let severity = serde_json::from_str::<Leveled<'_>>(&line)
            .ok()
            .and_then(|l| Severity::from_level(&l.level))
            .unwrap_or(Severity::of_stream(stream));
        Self {
            ts: humantime::format_rfc3339_millis(now).to_string(),
            node: node.to_string(),
            stream,
            severity,
            line,
        }
    }

    /// The record as stored: one JSON object and a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + 250)
    }

    #[test]
    fn plain_lines_take_their_severity_from_the_stream_and_a_utc_timestamp() {
        let out = Record::new(
            "demo-0",
            Stream::Stdout,
            b"listening on 127.0.0.1:1\n",
            at(0),
        );
        assert_eq!(out.ts, "1970-01-01T00:00:00.250Z");
        assert_eq!(out.severity, Severity::Info);
        assert_eq!(out.line, "listening on 127.0.0.1:1");
        let err = Record::new("demo-0", Stream::Stderr, b"oops\r\n", at(86_400));
        assert_eq!(err.ts, "1970-01-02T00:00:00.250Z");
        assert_eq!(err.severity, Severity::Warn);
        assert_eq!(err.line, "oops");
    }

    #[test]
    fn json_lines_take_their_own_level_whatever_the_stream() {
        let nakama = br#"{"level":"error","ts":"2026-12-01T23:00:00Z","msg":"db down"}"#;
        assert_eq!(
            Record::new("n", Stream::Stdout, nakama, at(0)).severity,
            Severity::Error
        );
        let tracing_json = br#"{"timestamp":"x","level":"DEBUG","fields":{}}"#;
        assert_eq!(
            Record::new("n", Stream::Stderr, tracing_json, at(0)).severity,
            Severity::Debug
        );
        // A level that is no level, or a JSON line without one: the stream decides.
        for line in [&br#"{"level":"loud"}"#[..], br#"{"msg":"x"}"#, b"[1,2]"] {
            assert_eq!(
                Record::new("n", Stream::Stderr, line, at(0)).severity,
                Severity::Warn
            );
        }
    }

    #[test]
    fn long_lines_are_cut_at_the_limit_and_stored_as_one_json_line() {
        let raw = vec![b'a'; 3 * LOG_LINE_LIMIT];
        let record = Record::new("n", Stream::Stdout, &raw, at(0));
        assert_eq!(record.line.len(), LOG_LINE_LIMIT);
        let stored = record.to_line();
        assert_eq!(stored.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Record = serde_json::from_slice(&stored).unwrap();
        assert_eq!(back, record);
        // A newline inside the text cannot split a stored record.
        let text = String::from_utf8(Record::new("n", Stream::Stdout, b"a\"b\\", at(0)).to_line());
        assert!(text.unwrap().contains(r#""line":"a\"b\\""#));
    }

    #[test]
    fn severities_are_ordered_for_a_minimum() {
        assert!(Severity::Debug < Severity::Info);
        assert!(Severity::Info < Severity::Warn);
        assert!(Severity::Warn < Severity::Error);
        assert_eq!(Severity::from_level("WARNING"), Some(Severity::Warn));
        assert_eq!(Severity::from_level("fatal"), Some(Severity::Error));
    }
}
