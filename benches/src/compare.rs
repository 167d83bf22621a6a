//! The side-by-side table of `benches/compare.sh`: one row per headline metric, one column per
//! target, each cell with its ratio to the baseline (NGINX), as PERFORMANCE.md states targets.

use std::path::Path;

use crate::report::{format_value, Report};

/// One headline row: which load's report, which metric, how to label it.
struct Row {
    load: &'static str,
    metric: Option<&'static str>,
    label: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        load: "ws-connect",
        metric: Some("conn_per_s"),
        label: "TLS WebSocket connects/s",
    },
    Row {
        load: "ws-connect",
        metric: Some("connect_p99_ms"),
        label: "connect p99 (ms)",
    },
    Row {
        load: "ws-connect",
        metric: None,
        label: "connect errors",
    },
    Row {
        load: "ws-echo",
        metric: Some("msgs_per_s"),
        label: "WebSocket echo msgs/s",
    },
    Row {
        load: "ws-echo",
        metric: Some("rtt_p99_ms"),
        label: "echo RTT p99 (ms)",
    },
    Row {
        load: "ws-echo",
        metric: None,
        label: "echo errors",
    },
    Row {
        load: "ws-idle",
        metric: Some("kib_per_conn"),
        label: "KiB per idle WebSocket",
    },
    Row {
        load: "ws-idle",
        metric: Some("connections_held"),
        label: "idle connections held",
    },
    Row {
        load: "http",
        metric: Some("req_per_s"),
        label: "HTTPS keep-alive req/s",
    },
    Row {
        load: "http",
        metric: Some("latency_p99_ms"),
        label: "HTTPS p99 (ms)",
    },
    Row {
        load: "http",
        metric: None,
        label: "http errors",
    },
];

/// Reads `<dir>/<target>.<load>.json`; `None` when the target was skipped or the load failed.
pub fn load_report(dir: &Path, target: &str, load: &str) -> Option<Report> {
    let text = std::fs::read_to_string(dir.join(format!("{target}.{load}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn value(report: Option<&Report>, row: &Row) -> Option<f64> {
    let r = report?;
    match row.metric {
        Some(m) => r.metric(m),
        None => Some(r.errors.total() as f64),
    }
}

/// A Markdown table of the headline metrics of every target, with ratios to `baseline`.
pub fn table(dir: &Path, targets: &[String], baseline: &str) -> String {
    let mut out = format!("| metric | {} |\n", targets.join(" | "));
    out.push_str(&format!("|---|{}\n", "---:|".repeat(targets.len())));
    for row in ROWS {
        let base = value(load_report(dir, baseline, row.load).as_ref(), row);
        let cells: Vec<String> = targets
            .iter()
            .map(|t| {
                let v = value(load_report(dir, t, row.load).as_ref(), row);
                match (v, base) {
                    (None, _) => "—".to_owned(),
                    (Some(v), _) if row.metric.is_none() => format_value(v),
                    (Some(v), Some(b)) if t != baseline && b > 0.0 => {
                        format!("{} ({:.2}×)", format_value(v), v / b)
                    }
                    (Some(v), _) => format_value(v),
                }
            })
            .collect();
        out.push_str(&format!("| {} | {} |\n", row.label, cells.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Errors;

    fn write(dir: &Path, target: &str, load: &str, metrics: &[(&str, f64)]) {
        let report = Report {
            load: load.to_owned(),
            url: "wss://alpha.us-east1.kanmon.test/ws".to_owned(),
            connect: "127.0.0.1:1".to_owned(),
            elapsed_s: 1.0,
            timed_out: false,
            metrics: metrics
                .iter()
                .map(|(n, v)| crate::report::Metric {
                    name: (*n).to_owned(),
                    value: *v,
                    unit: String::new(),
                })
                .collect(),
            errors: Errors::default(),
        };
        let path = dir.join(format!("{target}.{load}.json"));
        std::fs::write(path, serde_json::to_string(&report).unwrap()).unwrap();
    }

    #[test]
    fn ratios_are_relative_to_the_baseline_and_missing_targets_show_a_dash() {
        let dir = std::env::temp_dir().join(format!("kanmon-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, "nginx", "ws-connect", &[("conn_per_s", 2000.0)]);
        write(&dir, "kanmon", "ws-connect", &[("conn_per_s", 3000.0)]);
        let targets = vec![
            "kanmon".to_owned(),
            "nginx".to_owned(),
            "haproxy".to_owned(),
        ];
        let t = table(&dir, &targets, "nginx");
        let row = t
            .lines()
            .find(|l| l.starts_with("| TLS WebSocket connects/s"))
            .unwrap();
        assert_eq!(
            row,
            "| TLS WebSocket connects/s | 3,000 (1.50×) | 2,000 | — |"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
