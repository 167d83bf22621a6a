//! The side-by-side table of `benches/compare.sh`: one row per headline metric, one column per
//! target, each cell with its ratio to the baseline (NGINX), as PERFORMANCE.md states targets.
//!
//! With several rounds (`ROUNDS=3`: subdirectories `r1`, `r2`, … of results) each cell is the
//! median over the rounds: on a shared 2-core machine one run can be off by a third, and the
//! median of interleaved rounds is what a claim can rest on.

use std::path::Path;

use crate::report::{format_value, Report};

mod rows;

use rows::{Cpu, Row, ROWS};

/// Reads `<dir>/<target>.<load>.json`; `None` when the target was skipped or the load failed.
pub fn load_report(dir: &Path, target: &str, load: &str) -> Option<Report> {
    let text = std::fs::read_to_string(dir.join(format!("{target}.{load}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// The result directories of each round under `dir` (`r1`, `r2`, …), or `dir` itself.
fn rounds(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix('r')?.parse().ok()?;
            e.path().is_dir().then(|| (n, e.path()))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        found.into_iter().map(|(_, p)| p).collect()
    }
}

/// CPU seconds spent during a load, as compare.sh wrote them.
fn cpu_seconds(dir: &Path, target: &str, load: &str, cpu: Cpu) -> Option<f64> {
    std::fs::read_to_string(dir.join(format!("{target}.{load}.{}", cpu.file())))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A row's value for `target` in one round's results.
fn round_value(dir: &Path, target: &str, row: &Row) -> Option<f64> {
    let report = load_report(dir, target, row.load);
    match row.cpu_per {
        Some((cpu, count)) => {
            let units = report.as_ref()?.metric(count)?;
            (units > 0.0)
                .then(|| cpu_seconds(dir, target, row.load, cpu).map(|s| s * 1e6 / units))?
        }
        None => value(report.as_ref(), row),
    }
}

/// The median of a row's value for `target` over the rounds that have it.
fn median_value(rounds: &[std::path::PathBuf], target: &str, row: &Row) -> Option<f64> {
    let mut values: Vec<f64> = rounds
        .iter()
        .filter_map(|d| round_value(d, target, row))
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn value(report: Option<&Report>, row: &Row) -> Option<f64> {
    let r = report?;
    match row.metric {
        Some(m) => r.metric(m),
        None => Some(r.errors.total() as f64),
    }
}

/// A Markdown table of the headline metrics of every target, with ratios to `baseline`
/// (medians when `dir` holds several rounds).
pub fn table(dir: &Path, targets: &[String], baseline: &str) -> String {
    let rounds = rounds(dir);
    let mut out = String::new();
    if rounds.len() > 1 {
        out.push_str(&format!("median of {} rounds\n\n", rounds.len()));
    }
    out.push_str(&format!("| metric | {} |\n", targets.join(" | ")));
    out.push_str(&format!("|---|{}\n", "---:|".repeat(targets.len())));
    for row in ROWS {
        let base = median_value(&rounds, baseline, row);
        let cells: Vec<String> = targets
            .iter()
            .map(|t| {
                let v = median_value(&rounds, t, row);
                match (v, base) {
                    (None, _) => "—".to_owned(),
                    (Some(v), _) if row.metric.is_none() && row.cpu_per.is_none() => {
                        format_value(v)
                    }
                    (Some(v), Some(b)) if t != baseline && b > 0.0 => {
                        format!("{} ({:.2}×)", format_value(v), v / b)
                    }
                    (Some(v), _) => format_value(v),
                }
            })
            .collect();
        out.push_str(&format!("| {} | {} |\n", row.label, cells.join(" | ")));
    }
    if rounds.len() > 1 {
        out.push_str(&per_round(&rounds, targets, baseline));
    }
    out
}

/// Each round's ratio to `baseline` for the rates, one line per target: how far one round
/// strays from the median is what tells a reader how much a single run can be trusted.
fn per_round(rounds: &[std::path::PathBuf], targets: &[String], baseline: &str) -> String {
    let mut out = format!("\nper round, ratio to {baseline}:\n");
    for target in targets.iter().filter(|t| *t != baseline) {
        let rates: Vec<String> = ROWS
            .iter()
            .filter(|r| r.metric.is_some_and(|m| m.ends_with("_per_s")))
            .map(|row| {
                let ratios: Vec<String> = rounds
                    .iter()
                    .map(
                        |d| match (round_value(d, target, row), round_value(d, baseline, row)) {
                            (Some(v), Some(b)) if b > 0.0 => format!("{:.2}", v / b),
                            _ => "—".to_owned(),
                        },
                    )
                    .collect();
                format!("{} {}", row.label, ratios.join(" / "))
            })
            .collect();
        out.push_str(&format!("- {target}: {}\n", rates.join("; ")));
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

    #[test]
    fn proxy_cpu_is_shown_per_unit_of_work() {
        let dir = std::env::temp_dir().join(format!("kanmon-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, "nginx", "http", &[("requests_ok", 200_000.0)]);
        write(&dir, "kanmon", "http", &[("requests_ok", 250_000.0)]);
        std::fs::write(dir.join("nginx.http.cpu"), "4.000\n").unwrap();
        std::fs::write(dir.join("kanmon.http.cpu"), "3.750\n").unwrap();
        let targets = vec!["kanmon".to_owned(), "nginx".to_owned()];
        let t = table(&dir, &targets, "nginx");
        let row = t
            .lines()
            .find(|l| l.starts_with("| proxy CPU per HTTPS request"))
            .unwrap();
        assert_eq!(
            row,
            "| proxy CPU per HTTPS request (µs) | 15 (0.75×) | 20 |"
        );
        // The kernel share and the others' CPU come from their own files, per unit the same way;
        // a target without the file shows a dash rather than a zero.
        std::fs::write(dir.join("nginx.http.syscpu"), "3.000\n").unwrap();
        std::fs::write(dir.join("kanmon.http.syscpu"), "3.000\n").unwrap();
        std::fs::write(dir.join("kanmon.http.othercpu"), "5.000\n").unwrap();
        let t = table(&dir, &targets, "nginx");
        let rows: Vec<&str> = t
            .lines()
            .filter(|l| l.contains("request (µs)") || l.contains("kernel"))
            .collect();
        assert!(
            rows.contains(&"| … of it in the kernel (µs) | 12 (0.80×) | 15 |"),
            "{t}"
        );
        assert!(
            rows.contains(&"| load client + nodes CPU per HTTPS request (µs) | 20 | — |"),
            "{t}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn several_rounds_give_medians() {
        let dir = std::env::temp_dir().join(format!("kanmon-rounds-{}", std::process::id()));
        for (round, kanmon, nginx) in [
            (1, 3000.0, 2000.0),
            (2, 9000.0, 1000.0),
            (3, 2500.0, 2500.0),
        ] {
            let d = dir.join(format!("r{round}"));
            std::fs::create_dir_all(&d).unwrap();
            write(&d, "nginx", "ws-connect", &[("conn_per_s", nginx)]);
            write(&d, "kanmon", "ws-connect", &[("conn_per_s", kanmon)]);
        }
        let targets = vec!["kanmon".to_owned(), "nginx".to_owned()];
        let t = table(&dir, &targets, "nginx");
        assert!(t.starts_with("median of 3 rounds"), "{t}");
        let row = t
            .lines()
            .find(|l| l.starts_with("| TLS WebSocket connects/s"))
            .unwrap();
        assert_eq!(row, "| TLS WebSocket connects/s | 3,000 (1.50×) | 2,000 |");
        // Each round's own ratio follows the table, so the spread behind a median shows.
        assert!(
            t.contains("- kanmon: TLS WebSocket connects/s 1.50 / 9.00 / 1.00;"),
            "{t}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
