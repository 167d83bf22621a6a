//! The certificate store and its rustls resolver.
//!
//! `cert_dir` holds `<hostname>.crt` + `<hostname>.key` (PEM), and per-zone wildcards named
//! `_.<zone>.<base_domain>`. A reload builds a new map and swaps it in whole; a file that fails
//! to load keeps the previous certificate of its hostname (and is reported), so a bad deploy
//! of one certificate never takes a tenant offline. An SNI that matches no certificate gets
//! no certificate: the handshake is refused rather than answered with another tenant's.
//! `<hostname>.tls-alpn-01.crt/.key` are TLS-ALPN-01 challenge certificates, kept apart and
//! served only to ACME validators (see [`super::acme`]).

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::acme;
use crate::metrics::Metrics;

/// Why one certificate pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no usable private key.
    #[error("{0}: no PEM private key found")]
    NoKey(PathBuf),
    /// rustls refused the key (unsupported algorithm, or it does not match the certificate).
    #[error("{path}: {reason}")]
    Rejected {
        /// The key or certificate file.
        path: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// What a load did, for logs and tests.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Hostnames loaded fresh from disk.
    pub loaded: Vec<String>,
    /// Files that failed; their hostname kept its previous certificate if it had one.
    pub errors: Vec<CertError>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} certificate(s) loaded, {} error(s)",
            self.loaded.len(),
            self.errors.len()
        )
    }
}

type CertMap = HashMap<String, Arc<CertifiedKey>>;

/// Hot-swappable hostname → certificate map; also the rustls resolver.
pub struct CertStore {
    dir: PathBuf,
    certs: ArcSwap<CertMap>,
    /// Pending TLS-ALPN-01 challenge certificates, by hostname.
    challenges: ArcSwap<CertMap>,
    /// Pending HTTP-01 challenges (`<hostname>.http-01` files).
    http_challenges: ArcSwap<super::http01::Challenges>,
    metrics: Metrics,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Loads a pair; `check` compares key and certificate, which a TLS-ALPN-01 challenge
/// certificate cannot pass (webpki refuses its critical acmeIdentifier extension, and a
/// mismatch there only fails that validation).
fn load_pair(crt: &Path, key: &Path, check: bool) -> Result<CertifiedKey, CertError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| CertError::Io {
            path: p.into(),
            source,
        })
    };
    let crt_pem = read(crt)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut crt_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| CertError::Io {
            path: crt.into(),
            source,
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate(crt.into()));
    }
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| CertError::Io {
            path: key.into(),
            source,
        })?
        .ok_or_else(|| CertError::NoKey(key.into()))?;
    let signing = any_supported_type(&key_der).map_err(|e| CertError::Rejected {
        path: key.into(),
        reason: e.to_string(),
    })?;
    let ck = CertifiedKey::new(chain, signing);
    if !check {
        return Ok(ck);
    }
    ck.keys_match().map_err(|e| CertError::Rejected {
        path: key.into(),
        reason: format!("key does not match certificate: {e}"),
    })?;
    Ok(ck)
}

impl CertStore {
    /// An empty store over `dir`; call [`reload`](Self::reload) to fill it.
    pub fn new(dir: PathBuf, metrics: Metrics) -> Self {
        Self {
            dir,
            certs: ArcSwap::from_pointee(CertMap::new()),
            challenges: ArcSwap::from_pointee(CertMap::new()),
            http_challenges: ArcSwap::from_pointee(super::http01::Challenges::new()),
            metrics,
        }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of hostnames with a certificate.
    pub fn len(&self) -> usize {
        self.certs.load().len()
    }

    /// Whether no certificate is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the directory and swaps in the result. Failed files keep their hostname's
    /// previous certificate; a directory that cannot be read keeps everything.
    pub fn reload(&self) -> LoadReport {
        let mut report = LoadReport::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(source) => {
                report.errors.push(CertError::Io {
                    path: self.dir.clone(),
                    source,
                });
                self.record(&report);
                return report;
            }
        };
        let old = self.certs.load_full();
        let old_challenges = self.challenges.load_full();
        let mut next = CertMap::new();
        let mut next_challenges = CertMap::new();
        let mut http_challenges = super::http01::Challenges::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str());
            if ext == Some(super::http01::HTTP01_EXTENSION) {
                let host = path.file_stem().and_then(|s| s.to_str());
                match (host, super::http01::read_key_authorization(&path)) {
                    (Some(host), Ok(auth)) => {
                        http_challenges.insert(host.to_ascii_lowercase(), auth);
                    }
                    (_, Err(e)) => tracing::warn!(error = %e, "HTTP-01 challenge not loaded"),
                    (None, _) => {}
                }
                continue;
            }
            if ext != Some("crt") {
                continue;
            }
            let Some(host) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_ascii_lowercase)
            else {
                continue;
            };
            if host == "ca" {
                continue; // The local CA's own certificate, not a server certificate.
            }
            let (host, old, next, check) = match host.strip_suffix(acme::CHALLENGE_SUFFIX) {
                Some(h) => (h.to_string(), &old_challenges, &mut next_challenges, false),
                None => (host, &old, &mut next, true),
            };
            match load_pair(&path, &path.with_extension("key"), check) {
                Ok(ck) => {
                    next.insert(host.clone(), Arc::new(ck));
                    report.loaded.push(host);
                }
                Err(e) => {
                    if let Some(prev) = old.get(&host) {
                        next.insert(host, prev.clone());
                    }
                    report.errors.push(e);
                }
            }
        }
        self.certs.store(Arc::new(next));
        self.challenges.store(Arc::new(next_challenges));
        self.http_challenges.store(Arc::new(http_challenges));
        self.record(&report);
        report
    }

    fn record(&self, report: &LoadReport) {
        for e in &report.errors {
            self.metrics.cert_errors.inc();
            tracing::warn!(error = %e, "certificate not loaded; previous certificate (if any) stays in use");
        }
        self.metrics.certificates.set(self.len() as i64);
    }

    /// The certificate for `sni`: an exact match, else the zone wildcard `_.<rest>`.
    pub fn find(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(ck) = certs.get(sni) {
            return Some(ck.clone());
        }
        let (_, rest) = sni.split_once('.')?;
        let mut wildcard = String::with_capacity(rest.len() + 2);
        wildcard.push_str("_.");
        wildcard.push_str(rest);
        certs.get(&wildcard).cloned()
    }
}

impl CertStore {
    /// Counts and logs a refused handshake.
    fn refuse(&self, reason: &str) -> Option<Arc<CertifiedKey>> {
        self.metrics.tls_failures.with_label_values(&[reason]).inc();
        tracing::debug!(reason, "TLS handshake refused");
        crate::edge::mark_refused();
        None
    }

    /// The pending HTTP-01 challenges.
    pub fn http_challenges(&self) -> Arc<super::http01::Challenges> {
        self.http_challenges.load_full()
    }

    /// The pending TLS-ALPN-01 challenge certificate of `sni`, if any.
    pub fn find_challenge(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges.load().get(sni).cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match acme::classify(hello.alpn()) {
            acme::Offer::Service => {}
            acme::Offer::Mixed => return self.refuse("acme_mixed_alpn"),
            acme::Offer::Challenge => {
                // RFC 8737 §3: the validator sends the hostname being validated as SNI.
                let found = hello.server_name().and_then(|sni| self.find_challenge(sni));
                return match found {
                    Some(ck) => Some(ck),
                    None => self.refuse("acme_no_challenge"),
                };
            }
        }
        let Some(sni) = hello.server_name() else {
            self.metrics
                .tls_failures
                .with_label_values(&["no_sni"])
                .inc();
            tracing::debug!("TLS handshake without SNI refused");
            crate::edge::mark_refused();
            return None;
        };
        let found = self.find(sni);
        if found.is_none() {
            self.metrics
                .tls_failures
                .with_label_values(&["unknown_sni"])
                .inc();
            tracing::debug!("TLS handshake for a hostname without certificate refused");
            crate::edge::mark_refused();
        }
        found
    }
}
