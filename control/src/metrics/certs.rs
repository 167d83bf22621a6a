//! Certificate metrics of the control plane: when each deployment's certificate expires, and
//! how often obtaining or revoking one failed. In a registry of their own, rendered after the
//! others, so the certificate keeper can own its handles.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Expiry (Unix seconds) of the certificate each deployment's hostname is served with.
pub const CERT_EXPIRY: &str = "kanmon_certificate_expiry_timestamp_seconds";
/// Failed attempts to obtain, renew or revoke a deployment's certificate.
pub const CERT_FAILURES: &str = "kanmon_certificate_failures_total";

/// Handles of the certificate series (cheap to clone).
#[derive(Debug, Clone)]
pub struct CertMetrics {
    registry: Registry,
    expiry: IntGaugeVec,
    failures: IntCounterVec,
}

impl CertMetrics {
    /// Fresh handles in a registry of their own.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let expiry = IntGaugeVec::new(
            Opts::new(
                CERT_EXPIRY,
                "Expiry (Unix seconds) of the certificate in use for a deployment's hostname.",
            ),
            &["deployment"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                CERT_FAILURES,
                "Failed attempts to obtain, renew or revoke a deployment's certificate (the current certificate stays in use).",
            ),
            &["deployment"],
        )?;
        registry.register(Box::new(expiry.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            registry,
            expiry,
            failures,
        })
    }

    /// Records the expiry of the certificate `deployment` is served with.
    pub fn expires(&self, deployment: &str, not_after: SystemTime) {
        let secs = not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.expiry
            .with_label_values(&[deployment])
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// Counts a failed attempt for `deployment`.
    pub fn failed(&self, deployment: &str) {
        self.failures.with_label_values(&[deployment]).inc();
    }

    /// Drops the series of a deployment whose certificate is gone.
    pub fn forget(&self, deployment: &str) {
        let _gone = self.expiry.remove_label_values(&[deployment]);
        let _gone = self.failures.remove_label_values(&[deployment]);
    }

    /// The expiry recorded for `deployment` (Unix seconds), if it has a series.
    pub fn expiry(&self, deployment: &str) -> Option<i64> {
        self.value(CERT_EXPIRY, deployment).map(|v| v as i64)
    }

    /// Failed attempts recorded for `deployment` (0 without a series).
    pub fn failures(&self, deployment: &str) -> u64 {
        self.value(CERT_FAILURES, deployment)
            .map_or(0, |v| v as u64)
    }

    /// Reads a series from the rendered text, without creating it.
    fn value(&self, name: &str, deployment: &str) -> Option<f64> {
        let series = format!("{name}{{deployment=\"{deployment}\"}} ");
        self.render()
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
    }

    /// The Prometheus text format of the certificate series.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding certificate metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
