//! Certificates per deployment: every live deployment has a certificate for exactly its
//! hostname where the edge reads it (a [`CertSink`]: the proxy's `cert_dir`, or a
//! `kubernetes.io/tls` Secret in the edge's namespace with `--driver kubernetes`), renewed at
//! two thirds of its lifetime; a deleted deployment's certificate is revoked and removed (by
//! its `delete` operation, or by a later pass of the keeper when the CA could not be reached
//! then).
//!
//! The [`CertKeeper`] reconciles what the sink holds against the deployments: a certificate
//! missed while the control plane was down, or a renewal that is due or failed, is picked up on
//! the next pass, and the sink itself is the state (read back after a restart, not reissued). Each
//! issuance runs as a `certificate` operation in the deployment's queue (queued when the
//! deployment is created, and by the keeper for renewals), so it is on record and audited. Where certificates come from is a
//! [`CertSource`]: the local CA (`kanmon up`, offline) or an ACME CA ([`acme`]). Files are
//! written key first, each atomically, and a Secret in one apply, so the proxy never sees half
//! a pair.

pub mod acme;
pub mod args;
mod keeper;
mod local;
pub mod secrets;
pub mod sink;
#[cfg(test)]
mod tests;

use kanmon_proxy::devcerts::{CertInfo, DevCertError, PemPair};

pub use keeper::{wants, CertKeeper, RetryPolicy, Want, NO_SUGGESTION_RECHECK};
pub use local::LocalCaSource;
pub use secrets::SecretSink;
pub use sink::{CertSink, DirSink};

/// Why a certificate could not be obtained, written or revoked.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The local CA refused or failed.
    #[error("local CA: {0}")]
    Local(#[from] DevCertError),
    /// The ACME CA refused, failed or could not be reached.
    #[error("ACME: {0}")]
    Acme(String),
    /// Reading or removing a file in `cert_dir`.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading, writing or deleting a certificate Secret (names the Secret, never its data).
    #[error("Kubernetes: {0}")]
    Kube(String),
}

/// How often a keeper looks for deployments without a certificate: about how long a new
/// deployment waits for its own. A pass reads only memory unless something is due.
pub const PASS: std::time::Duration = std::time::Duration::from_millis(250);

/// Which CA deployment certificates come from.
#[derive(Debug, Clone, Default)]
pub enum SourceConfig {
    /// The local CA in `cert_dir` (works offline; clients trust its `ca.crt`).
    #[default]
    LocalCa,
    /// An ACME CA.
    Acme(acme::AcmeConfig),
}

/// Where the keeper puts certificates.
#[derive(Clone, Default)]
pub enum SinkConfig {
    /// The proxy's `cert_dir` (the keeper's `cert_dir`).
    #[default]
    Dir,
    /// `kubernetes.io/tls` Secrets in the edge's namespace (`--driver kubernetes`).
    Secrets {
        /// The cluster.
        client: kube::Client,
        /// The edge's namespace.
        namespace: String,
    },
}

/// A keeper for hostnames under `base_domain`, issuing from `source` into `sink`; `cert_dir`
/// (created owner-only when missing) holds the local CA, and is the sink with
/// [`SinkConfig::Dir`]. An ACME account is kept in `store` (registered here if the CA answers,
/// else on first use, so a CA outage never stops a start; an account file an older version
/// wrote at `legacy_account_file` is moved into the store).
pub async fn keeper(
    source: &SourceConfig,
    sink: SinkConfig,
    cert_dir: &std::path::Path,
    base_domain: &str,
    store: std::sync::Arc<crate::store::Store>,
    legacy_account_file: &std::path::Path,
    metrics: crate::metrics::certs::CertMetrics,
) -> Result<CertKeeper, CertError> {
    crate::private::create_dir(cert_dir).map_err(|source| CertError::Io {
        path: cert_dir.into(),
        source,
    })?;
    let sink: std::sync::Arc<dyn CertSink> = match sink {
        SinkConfig::Dir => std::sync::Arc::new(DirSink::new(cert_dir.to_path_buf())),
        SinkConfig::Secrets { client, namespace } => {
            std::sync::Arc::new(SecretSink::new(client, &namespace))
        }
    };
    let source: std::sync::Arc<dyn CertSource> = match source {
        SourceConfig::LocalCa => std::sync::Arc::new(LocalCaSource::new(
            kanmon_proxy::devcerts::LocalCa::open_or_create(cert_dir, base_domain)?,
        )),
        SourceConfig::Acme(cfg) => {
            let acme = acme::AcmeSource::new(cfg.clone(), store, legacy_account_file, sink.clone());
            // Registered now when the CA answers; otherwise at the first issuance (retried).
            if let Err(e) = acme.account().await {
                tracing::warn!(error = %e, "ACME CA not reachable yet; retrying with issuance");
            }
            std::sync::Arc::new(acme)
        }
    };
    Ok(CertKeeper::new(
        sink,
        source,
        metrics,
        RetryPolicy::default(),
    ))
}

/// Where certificates come from.
#[async_trait::async_trait]
pub trait CertSource: Send + Sync {
    /// A fresh certificate (chain, leaf first) and key for exactly `hostname`.
    async fn obtain(&self, hostname: &str) -> Result<PemPair, CertError>;
    /// Revokes a certificate this source issued (one no longer in use).
    async fn revoke(&self, cert_pem: &str) -> Result<(), CertError>;
    /// Whether the certificate `info` describes is one this source stands behind (a
    /// certificate of another CA, e.g. after a switch of source, is replaced).
    fn accepts(&self, info: &CertInfo) -> bool;
    /// When the CA suggests renewing `cert_pem` (ACME Renewal Information, RFC 9773), for CAs
    /// that say: earlier than two thirds of the lifetime when the CA plans a revocation.
    async fn suggested_renewal(&self, _cert_pem: &str) -> Option<Suggestion> {
        None
    }
}

/// A CA's renewal suggestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suggestion {
    /// Renew from then on.
    pub renew_at: std::time::SystemTime,
    /// Ask again after this long (the CA's `Retry-After`).
    pub ask_in: std::time::Duration,
}
