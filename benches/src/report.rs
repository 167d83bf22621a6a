//! Results of a load: latency histograms, error counts by kind, the printed table and JSON.
//!
//! Each load task keeps its own [`Latency`] and [`Errors`] and they are merged at the end, so
//! measuring never takes a lock on the hot path.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in microseconds (1 µs to 10 min, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts.
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
    /// Records one duration (clamped into the histogram's range).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.max(1));
    }
    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        self.0.add(&other.0).expect("histograms with equal bounds");
    }
    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }
    /// The value at quantile `q` (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
    /// The largest sample in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }
}

/// Why one operation failed: a kind from a small fixed set (`connect`, `tls`, `upgrade_5xx`,
/// `timeout`, …) so reports stay comparable across targets, plus the error text for humans.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What is counted.
    pub kind: &'static str,
    /// The underlying error, if any.
    pub detail: Option<String>,
}

impl Failure {
    /// A failure of `kind` caused by `detail`.
    pub fn new(kind: &'static str, detail: impl std::fmt::Display) -> Self {
        Self {
            kind,
            detail: Some(detail.to_string()),
        }
    }
}

impl From<&'static str> for Failure {
    fn from(kind: &'static str) -> Self {
        Self { kind, detail: None }
    }
}

/// Failures counted by kind, with the first error text seen for each kind (enough to tell a
/// proxy's 502 from a reset without flooding the report).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Errors {
    /// Count per kind.
    pub counts: BTreeMap<String, u64>,
    /// First error text per kind.
    #[serde(default)]
    pub examples: BTreeMap<String, String>,
}

impl Errors {
    /// Counts one failure.
    pub fn add(&mut self, failure: impl Into<Failure>) {
        let f = failure.into();
        *self.counts.entry(f.kind.to_owned()).or_default() += 1;
        if let Some(d) = f.detail {
            self.examples.entry(f.kind.to_owned()).or_insert(d);
        }
    }
    /// Adds another set of counts (keeping our examples first).
    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
        for (k, d) in &other.examples {
            self.examples.entry(k.clone()).or_insert_with(|| d.clone());
        }
    }
    /// All failures.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// One measured number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    /// Stable key (`conn_per_s`, `rtt_p99_ms`, …) used by the comparison table.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit for humans (`/s`, `ms`, `KiB`, …).
    pub unit: String,
}

/// The result of one load run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Which load (`ws-connect`, `ws-echo`, `ws-idle`, `http`).
    pub load: String,
    /// The URL (host used for SNI and `Host`).
    pub url: String,
    /// The loopback address dialed.
    pub connect: String,
    /// Wall time of the measured phase in seconds.
    pub elapsed_s: f64,
    /// Whether the run stopped at `--timeout` before finishing its count.
    pub timed_out: bool,
    /// The numbers, in display order.
    pub metrics: Vec<Metric>,
    /// Failures by kind.
    pub errors: Errors,
}

impl Report {
    /// An empty report for `load` against `target`.
    pub fn new(load: &str, target: &crate::target::Target) -> Self {
        Self {
            load: load.to_owned(),
            url: target.url.clone(),
            connect: target.connect.to_string(),
            elapsed_s: 0.0,
            timed_out: false,
            metrics: Vec::new(),
            errors: Errors::default(),
        }
    }
    /// Appends a metric.
    pub fn push(&mut self, name: &str, value: f64, unit: &str) {
        self.metrics.push(Metric {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
    }
    /// Appends p50/p99/p999/max of a histogram as `{prefix}_p50_ms`, ….
    pub fn push_latency(&mut self, prefix: &str, lat: &Latency, with_p999: bool) {
        self.push(&format!("{prefix}_p50_ms"), lat.quantile_ms(0.50), "ms");
        self.push(&format!("{prefix}_p99_ms"), lat.quantile_ms(0.99), "ms");
        if with_p999 {
            self.push(&format!("{prefix}_p999_ms"), lat.quantile_ms(0.999), "ms");
        }
        self.push(&format!("{prefix}_max_ms"), lat.max_ms(), "ms");
    }
    /// Looks a metric up by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("{} {} (via {})\n", self.load, self.url, self.connect);
        let width = self
            .metrics
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(0)
            .max(12);
        for m in &self.metrics {
            out.push_str(&format!(
                "  {:<width$}  {:>14} {}\n",
                m.name,
                format_value(m.value),
                m.unit
            ));
        }
        out.push_str(&format!(
            "  {:<width$}  {:>14.2} s\n",
            "elapsed", self.elapsed_s
        ));
        if self.timed_out {
            out.push_str("  (stopped at --timeout before the requested count)\n");
        }
        if self.errors.counts.is_empty() {
            out.push_str(&format!("  {:<width$}  {:>14}\n", "errors", 0));
        } else {
            for (kind, n) in &self.errors.counts {
                let example = self
                    .errors
                    .examples
                    .get(kind)
                    .map_or(String::new(), |d| format!("  e.g. {d}"));
                let label = format!("errors.{kind}");
                out.push_str(&format!("  {label:<width$}  {n:>14}{example}\n"));
            }
        }
        out
    }
}

/// Formats a number with thousands separators and at most two decimals.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    if v.abs() >= 1000.0 {
        let int = v.round() as i64;
        let digits = int.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if int < 0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Counters shared by the tasks of a load, read by the progress printer.
#[derive(Debug, Default)]
pub struct Counters {
    /// Operations finished successfully.
    pub done: AtomicU64,
    /// Operations failed.
    pub failed: AtomicU64,
}

/// Prints `label: N done, M failed` to stderr once a second until dropped.
#[derive(Debug)]
pub struct Progress(tokio::task::JoinHandle<()>);

impl Progress {
    /// Starts printing for `label`.
    pub fn start(label: &'static str, counters: Arc<Counters>) -> Self {
        let started = Instant::now();
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut err = std::io::stderr().lock();
                // Progress is best effort: a closed stderr must not stop the load.
                let _ignored = writeln!(
                    err,
                    "{label}: {:>5.1}s {} done, {} failed",
                    started.elapsed().as_secs_f64(),
                    counters.done.load(Ordering::Relaxed),
                    counters.failed.load(Ordering::Relaxed)
                );
            }
        }))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_thousands() {
        assert_eq!(format_value(1866.4), "1,866");
        assert_eq!(format_value(1234567.0), "1,234,567");
        assert_eq!(format_value(5.9), "5.90");
        assert_eq!(format_value(12.0), "12");
    }

    #[test]
    fn latency_quantiles_in_ms() {
        let mut l = Latency::new();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        let p50 = l.quantile_ms(0.5);
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert_eq!(l.count(), 100);
    }
}
