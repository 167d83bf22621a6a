//! Searching a deployment's stored node logs ([`super::node_log::Record`] lines): by text,
//! minimum severity and time range, newest lines last.
//!
//! Each file is in time order, so only the newest `limit` matches of each file are held while
//! reading; the files of all nodes (current and rotated) are then merged by timestamp.

use std::{
    collections::VecDeque,
    io::{self, BufRead},
    path::Path,
    time::{Duration, SystemTime},
};

use super::node_log::{Record, Severity};

/// The most lines one search returns (an export included).
pub const MAX_LIMIT: usize = 100_000;

/// Why a query was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogQueryError {
    /// `since`/`until` is neither RFC 3339 nor a relative duration.
    #[error("{key}: {value:?} is neither an RFC 3339 time (2026-12-01T23:00:00Z) nor a duration ago (10m)")]
    Time {
        /// The parameter.
        key: &'static str,
        /// What was given.
        value: String,
    },
    /// `severity` is no level.
    #[error("severity: {0:?} is not one of debug, info, warn, error")]
    Severity(String),
}

/// A validated search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogQuery {
    /// Substring the line must contain (case-sensitive).
    pub text: Option<String>,
    /// Lowest severity returned.
    pub min_severity: Severity,
    /// Earliest timestamp returned (inclusive).
    pub since: Option<SystemTime>,
    /// Latest timestamp returned (inclusive).
    pub until: Option<SystemTime>,
    /// How many of the newest matches are returned.
    pub limit: usize,
}

/// `since`/`until`: an RFC 3339 time, or a duration (`10m`, `2h`) before `now`.
pub fn parse_time(
    key: &'static str,
    value: &str,
    now: SystemTime,
) -> Result<SystemTime, LogQueryError> {
    let err = || LogQueryError::Time {
        key,
        value: value.to_string(),
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(t);
    }
    let ago: Duration = humantime::parse_duration(value).map_err(|_| err())?;
    now.checked_sub(ago).ok_or_else(err)
}

impl LogQuery {
    /// The query of the raw parameters, times relative to `now`; `limit` defaults to 100.
    pub fn parse(
        q: Option<&str>,
        severity: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        limit: Option<usize>,
        now: SystemTime,
    ) -> Result<Self, LogQueryError> {
        let min_severity = match severity {
            None | Some("") => Severity::Debug,
            Some(s) => Severity::from_level(s).ok_or_else(|| LogQueryError::Severity(s.into()))?,
        };
        let time = |key, v: Option<&str>| {
            v.filter(|v| !v.is_empty())
                .map(|v| parse_time(key, v, now))
                .transpose()
        };
        Ok(Self {
            text: q.filter(|q| !q.is_empty()).map(str::to_string),
            min_severity,
            since: time("since", since)?,
            until: time("until", until)?,
            limit: limit.unwrap_or(100).clamp(1, MAX_LIMIT),
        })
    }

    /// Whether `record` (stamped at `ts`) is wanted.
    pub fn matches(&self, record: &Record, ts: SystemTime) -> bool {
        record.severity >= self.min_severity
            && self.since.is_none_or(|s| ts >= s)
            && self.until.is_none_or(|u| ts <= u)
            && self.text.as_deref().is_none_or(|q| record.line.contains(q))
    }
}

/// The newest `query.limit` matching records of every log file in `dir` (a deployment's
/// directory: `<node>.log` and its rotated `<node>.log.N`), oldest first. A missing directory
/// holds no lines.
pub fn search(dir: &Path, query: &LogQuery) -> io::Result<Vec<Record>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found: Vec<(SystemTime, Record)> = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_log = name.ends_with(".log")
            || name
                .rsplit_once(".log.")
                .is_some_and(|(_, n)| n.parse::<u32>().is_ok());
        if !is_log {
            continue;
        }
        found.extend(search_file(&path, query)?);
    }
    found.sort_by_key(|(ts, _)| *ts);
    let skip = found.len().saturating_sub(query.limit);
    Ok(found.into_iter().skip(skip).map(|(_, r)| r).collect())
}

fn search_file(path: &Path, query: &LogQuery) -> io::Result<VecDeque<(SystemTime, Record)>> {
    let mut newest = VecDeque::with_capacity(query.limit.min(1024));
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    for line in file.split(b'\n') {
        // A line that is no record (a file of an older kanmon) is skipped, not an error.
        let Ok(record) = serde_json::from_slice::<Record>(&line?) else {
            continue;
        };
        let Ok(ts) = humantime::parse_rfc3339(&record.ts) else {
            continue;
        };
        if query.matches(&record, ts) {
            if newest.len() == query.limit {
                newest.pop_front();
            }
            newest.push_back((ts, record));
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::driver::node_log::Stream;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn write(dir: &Path, name: &str, records: &[(&str, Stream, &str, u64)]) {
        let mut text = Vec::new();
        for (node, stream, line, secs) in records {
            text.extend(Record::new(node, *stream, line.as_bytes(), at(*secs)).to_line());
        }
        text.extend(b"not a record\n");
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn text_severity_and_range_filter_and_the_newest_are_kept_across_nodes_and_rotations() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "n-0.log.1",
            &[
                ("n-0", Stream::Stdout, "old hello", 1),
                ("n-0", Stream::Stderr, "old oops", 2),
            ],
        );
        write(
            dir.path(),
            "n-0.log",
            &[
                ("n-0", Stream::Stdout, "hello", 10),
                ("n-0", Stream::Stderr, "oops", 12),
            ],
        );
        write(
            dir.path(),
            "n-1.log",
            &[(
                "n-1",
                Stream::Stdout,
                r#"{"level":"error","msg":"hello db"}"#,
                11,
            )],
        );
        std::fs::write(dir.path().join("n-0.config.json"), "{}").unwrap();
        let q = |text, severity, since, until, limit| {
            let now = at(100);
            LogQuery::parse(text, severity, since, until, limit, now).unwrap()
        };
        let lines = |query: &LogQuery| -> Vec<String> {
            search(dir.path(), query)
                .unwrap()
                .into_iter()
                .map(|r| r.line)
                .collect()
        };
        assert_eq!(
            lines(&q(None, None, None, None, None)),
            [
                "old hello",
                "old oops",
                "hello",
                r#"{"level":"error","msg":"hello db"}"#,
                "oops"
            ]
        );
        assert_eq!(
            lines(&q(Some("hello"), None, None, None, Some(2))),
            ["hello", r#"{"level":"error","msg":"hello db"}"#]
        );
        assert_eq!(
            lines(&q(None, Some("warn"), None, None, None)),
            ["old oops", r#"{"level":"error","msg":"hello db"}"#, "oops"]
        );
        assert_eq!(
            lines(&q(None, Some("error"), None, None, None)),
            [r#"{"level":"error","msg":"hello db"}"#]
        );
        // 95 s before "now" (at 100) is at 5: the rotated file's lines are older.
        assert_eq!(
            lines(&q(None, None, Some("95s"), Some("11s"), None)).len(),
            3
        );
        let since = humantime::format_rfc3339(at(11)).to_string();
        assert_eq!(lines(&q(None, None, Some(&since), None, None)).len(), 2);
    }

    #[test]
    fn bad_parameters_are_refused_naming_the_key() {
        let now = at(0);
        let err = LogQuery::parse(None, None, Some("yesterday"), None, None, now).unwrap_err();
        assert!(err.to_string().starts_with("since:"), "{err}");
        let err = LogQuery::parse(None, Some("loud"), None, None, None, now).unwrap_err();
        assert!(err.to_string().starts_with("severity:"), "{err}");
        assert!(search(
            Path::new("/nonexistent/kanmon"),
            &LogQuery::parse(None, None, None, None, None, now).unwrap()
        )
        .unwrap()
        .is_empty());
    }
}
