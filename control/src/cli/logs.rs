//! `kanmon logs`: search a deployment's node logs, and follow them.
//!
//! `--follow` polls the logs API with `since` = the newest timestamp printed; lines stamped
//! with exactly that timestamp are remembered so none is printed twice. It ends on Ctrl-C.

use std::time::Duration;

use serde_json::Value;

use clap::Args;

use super::{segment, Client, ClientError};

/// `kanmon logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Deployment instance name.
    pub instance: String,
    /// Only lines containing this text (case-sensitive substring).
    #[arg(long)]
    pub grep: Option<String>,
    /// Minimum severity: debug, info, warn or error (a node's JSON `level`, else `info` for
    /// stdout and `warn` for stderr).
    #[arg(long)]
    pub severity: Option<String>,
    /// Lines from this time on: RFC 3339 (2026-12-01T22:00:00Z, UTC) or a duration ago (10m, 2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Lines up to this time: RFC 3339 or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// How many of the newest matching lines (at most 100000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Keep printing new lines (polled every 2 s) until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
}

/// How often `--follow` asks for new lines.
const FOLLOW_POLL: Duration = Duration::from_secs(2);

/// The API path of one search.
fn path(args: &LogsArgs, since: Option<&str>) -> String {
    let mut p = format!(
        "/v1/deployments/{}/logs?limit={}",
        segment(&args.instance),
        args.limit
    );
    let since = since.or(args.since.as_deref());
    for (key, value) in [
        ("q", args.grep.as_deref()),
        ("severity", args.severity.as_deref()),
        ("since", since),
        ("until", args.until.as_deref()),
    ] {
        if let Some(v) = value {
            p.push_str(&format!("&{key}={}", segment(v)));
        }
    }
    p
}

/// One record as printed: `TS NODE SEVERITY LINE`, or the record's JSON with `--json`.
fn render(record: &Value, json: bool) -> String {
    if json {
        return record.to_string();
    }
    let field = |k: &str| record[k].as_str().unwrap_or("").to_string();
    format!(
        "{} {} {:<5} {}",
        field("ts"),
        field("node"),
        field("severity"),
        field("line")
    )
}

fn records(v: &Value) -> Vec<Value> {
    v["lines"].as_array().cloned().unwrap_or_default()
}

/// Runs `kanmon logs`: the matching lines, or with `--follow` prints them as they come and
/// returns nothing once Ctrl-C is pressed.
pub(super) async fn run(c: &Client, args: &LogsArgs, json: bool) -> Result<String, ClientError> {
    let first = records(&c.get(&path(args, None)).await?);
    if !args.follow {
        let lines: Vec<String> = first.iter().map(|r| render(r, json)).collect();
        return Ok(lines.join("\n"));
    }
    let mut cursor = Cursor::default();
    let follow = async {
        let mut batch = first;
        loop {
            for r in cursor.fresh(batch) {
                println!("{}", render(&r, json));
            }
            tokio::time::sleep(FOLLOW_POLL).await;
            batch = records(&c.get(&path(args, cursor.last_ts.as_deref())).await?);
        }
    };
    tokio::select! {
        r = follow => r,
        _ = tokio::signal::ctrl_c() => Ok(String::new()),
    }
}

/// What `--follow` has printed: the newest timestamp and the records stamped with it.
#[derive(Default)]
struct Cursor {
    last_ts: Option<String>,
    at_last: Vec<Value>,
}

impl Cursor {
    /// The records of `batch` (oldest first) not printed yet; remembers them.
    fn fresh(&mut self, batch: Vec<Value>) -> Vec<Value> {
        let mut out = Vec::new();
        for r in batch {
            let ts = r["ts"].as_str().unwrap_or("").to_string();
            if Some(&ts) == self.last_ts.as_ref() {
                if self.at_last.contains(&r) {
                    continue;
                }
                self.at_last.push(r.clone());
            } else {
                self.last_ts = Some(ts);
                self.at_last = vec![r.clone()];
            }
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args() -> LogsArgs {
        LogsArgs {
            instance: "demo".into(),
            grep: Some("db down?".into()),
            severity: Some("warn".into()),
            since: Some("10m".into()),
            until: None,
            limit: 100,
            follow: false,
        }
    }

    #[test]
    fn flags_become_encoded_query_parameters() {
        assert_eq!(
            path(&args(), None),
            "/v1/deployments/demo/logs?limit=100&q=db%20down%3F&severity=warn&since=10m"
        );
        assert!(path(&args(), Some("2026-12-01T23:00:00.000Z"))
            .ends_with("&since=2026-12-01T23%3A00%3A00.000Z"));
    }

    #[test]
    fn following_prints_each_line_once_even_at_the_same_timestamp() {
        let r = |ts: &str, line: &str| json!({ "ts": ts, "node": "demo-0", "line": line });
        let mut cursor = Cursor::default();
        assert_eq!(cursor.fresh(vec![r("t1", "a"), r("t2", "b")]).len(), 2);
        // The next poll starts at t2 (inclusive): b again, then a new line at t2 and one at t3.
        let fresh = cursor.fresh(vec![r("t2", "b"), r("t2", "c"), r("t3", "d")]);
        assert_eq!(fresh, vec![r("t2", "c"), r("t3", "d")]);
        assert_eq!(cursor.last_ts.as_deref(), Some("t3"));
        assert!(cursor.fresh(vec![r("t3", "d")]).is_empty());
    }

    #[test]
    fn lines_print_as_time_node_severity_text() {
        let rec = json!({ "ts": "2026-12-01T23:00:00.000Z", "node": "demo-0", "severity": "warn", "line": "oops" });
        assert_eq!(
            render(&rec, false),
            "2026-12-01T23:00:00.000Z demo-0 warn  oops"
        );
        assert_eq!(render(&rec, true), rec.to_string());
    }
}
