//! The certificate store and its rustls resolver.
//!
//! `cert_dir` holds `<hostname>.crt` + `<hostname>.key` (PEM), and per-zone wildcards named
//! `_.<zone>.<base_domain>`. A reload builds a new map and swaps it in whole; a file that fails
//! to load keeps the previous certificate of its hostname (and is reported), so a bad deploy
//! of one certificate never takes a tenant offline. An SNI that matches no certificate gets
//! no certificate: the handshake is refused rather than answered with another tenant's.
//! `<hostname>.tls-alpn-01.crt/.key` are TLS-ALPN-01 challenge certificates, kept apart and
//! served only to ACME validators (see [`super::acme`]).
//!
//! With Kubernetes discovery, certificate Secrets feed the same store ([`super::secrets`]):
//! each input is kept as its own layer, so a reload of the directory never drops a Secret's
//! certificate nor the other way round, and both go through one validation
//! ([`pair_from_pem`]) and one keep-the-previous-on-failure policy.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{
    acme,
    secrets::{Purpose, SecretCert},
};
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
    /// A certificate Secret's PEM is no usable pair.
    #[error("Secret {secret}: {source}")]
    Secret {
        /// The Secret's name.
        secret: String,
        /// What is wrong with its PEM.
        #[source]
        source: PairError,
    },
    /// A certificate Secret breaks the contract (type, label, hostname, name; see
    /// [`super::secrets`]): nothing of it is served.
    #[error("Secret {secret} refused: {reason}")]
    Refused {
        /// The Secret's name.
        secret: String,
        /// Why.
        reason: String,
    },
}

/// What a load did, for logs and tests.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Hostnames loaded fresh from disk.
    pub loaded: Vec<String>,
    /// Files or Secrets that failed; their hostname kept its previous certificate if it had
    /// one.
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

/// What one input last loaded: certificates and pending challenges, by hostname.
#[derive(Default, Clone)]
struct Layer {
    certs: CertMap,
    challenges: CertMap,
}

/// One certificate Secret as last validated.
struct SecretEntry {
    hostname: String,
    purpose: Purpose,
    key: Arc<CertifiedKey>,
}

/// The inputs, each kept whole so that one never drops what the other loaded: `cert_dir`, and
/// the certificate Secrets by name (which win for a hostname both have: they are the ones the
/// control plane renews).
#[derive(Default)]
struct Inputs {
    dir: Layer,
    secrets: BTreeMap<String, SecretEntry>,
}

impl Inputs {
    /// The maps the resolver reads: the directory's, overlaid by the Secrets'.
    fn merged(&self) -> Layer {
        let mut out = self.dir.clone();
        for e in self.secrets.values() {
            let map = match e.purpose {
                Purpose::Serving => &mut out.certs,
                Purpose::AcmeChallenge => &mut out.challenges,
            };
            map.insert(e.hostname.clone(), e.key.clone());
        }
        out
    }
}

/// Hot-swappable hostname → certificate map; also the rustls resolver.
pub struct CertStore {
    dir: PathBuf,
    /// Taken only by reloads and Secret events, never on the handshake path.
    inputs: Mutex<Inputs>,
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

/// Why PEM text is no usable certificate pair (which file or Secret it came from is the
/// caller's to say). Messages never quote the PEM.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The certificate PEM could not be parsed.
    #[error("certificate PEM: {0}")]
    CertPem(#[source] std::io::Error),
    /// No certificate in it.
    #[error("no PEM certificate found")]
    NoCertificate,
    /// The key PEM could not be parsed.
    #[error("key PEM: {0}")]
    KeyPem(#[source] std::io::Error),
    /// No private key in it.
    #[error("no PEM private key found")]
    NoKey,
    /// rustls refused the key (unsupported algorithm) or it does not match the certificate.
    #[error("{0}")]
    Rejected(String),
}

/// Parses a chain and its key; `check` compares key and certificate, which a TLS-ALPN-01
/// challenge certificate cannot pass (webpki refuses its critical acmeIdentifier extension,
/// and a mismatch there only fails that validation). The one validation of both inputs:
/// `cert_dir` files and Secrets.
pub fn pair_from_pem(
    crt_pem: &[u8],
    key_pem: &[u8],
    check: bool,
) -> Result<CertifiedKey, PairError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &crt_pem[..])
        .collect::<Result<_, _>>()
        .map_err(PairError::CertPem)?;
    if chain.is_empty() {
        return Err(PairError::NoCertificate);
    }
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(PairError::KeyPem)?
        .ok_or(PairError::NoKey)?;
    let signing = any_supported_type(&key_der).map_err(|e| PairError::Rejected(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    if check {
        ck.keys_match()
            .map_err(|e| PairError::Rejected(format!("key does not match certificate: {e}")))?;
    }
    Ok(ck)
}

/// Loads a pair of files (see [`pair_from_pem`]).
fn load_pair(crt: &Path, key: &Path, check: bool) -> Result<CertifiedKey, CertError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| CertError::Io {
            path: p.into(),
            source,
        })
    };
    let crt_pem = read(crt)?;
    let key_pem = read(key)?;
    pair_from_pem(&crt_pem, &key_pem, check).map_err(|e| match e {
        PairError::CertPem(source) => CertError::Io {
            path: crt.into(),
            source,
        },
        PairError::NoCertificate => CertError::NoCertificate(crt.into()),
        PairError::KeyPem(source) => CertError::Io {
            path: key.into(),
            source,
        },
        PairError::NoKey => CertError::NoKey(key.into()),
        PairError::Rejected(reason) => CertError::Rejected {
            path: key.into(),
            reason,
        },
    })
}

impl CertStore {
    /// An empty store over `dir`; call [`reload`](Self::reload) to fill it.
    pub fn new(dir: PathBuf, metrics: Metrics) -> Self {
        Self {
            dir,
            inputs: Mutex::new(Inputs::default()),
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
        let mut inputs = self.inputs();
        let old = inputs.dir.certs.clone();
        let old_challenges = inputs.dir.challenges.clone();
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
        inputs.dir = Layer {
            certs: next,
            challenges: next_challenges,
        };
        self.publish(&inputs);
        drop(inputs);
        self.http_challenges.store(Arc::new(http_challenges));
        self.record(&report);
        report
    }

    fn inputs(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Swaps in the merged maps of `inputs`, whole.
    fn publish(&self, inputs: &Inputs) {
        let merged = inputs.merged();
        self.certs.store(Arc::new(merged.certs));
        self.challenges.store(Arc::new(merged.challenges));
    }

    /// Takes `secret` into the Secrets' layer (hostnames under `base_domain` only), or keeps
    /// what its previous version served when it is refused or malformed.
    fn take_secret(
        secrets: &mut BTreeMap<String, SecretEntry>,
        secret: &SecretCert,
        base_domain: &str,
        report: &mut LoadReport,
    ) {
        match secret.validate(base_domain) {
            Ok(v) => {
                report.loaded.push(v.hostname.clone());
                secrets.insert(
                    secret.name.clone(),
                    SecretEntry {
                        hostname: v.hostname,
                        purpose: v.purpose,
                        key: Arc::new(v.key),
                    },
                );
            }
            Err(e) => report.errors.push(e),
        }
    }

    /// A full list of the certificate Secrets (a watch's first list or a relist): Secrets not
    /// in it are gone; a refused or malformed one keeps what its previous version served.
    pub fn replace_secrets(&self, list: &[SecretCert], base_domain: &str) -> LoadReport {
        let mut report = LoadReport::default();
        let mut inputs = self.inputs();
        let mut old = std::mem::take(&mut inputs.secrets);
        let mut next = BTreeMap::new();
        for secret in list {
            Self::take_secret(&mut next, secret, base_domain, &mut report);
            if !next.contains_key(&secret.name) {
                if let Some(prev) = old.remove(&secret.name) {
                    next.insert(secret.name.clone(), prev);
                }
            }
        }
        inputs.secrets = next;
        self.publish(&inputs);
        drop(inputs);
        self.record(&report);
        report
    }

    /// A certificate Secret added or changed; refused or malformed, its previous version (if
    /// any) stays in use.
    pub fn put_secret(&self, secret: &SecretCert, base_domain: &str) -> LoadReport {
        let mut report = LoadReport::default();
        let mut inputs = self.inputs();
        Self::take_secret(&mut inputs.secrets, secret, base_domain, &mut report);
        self.publish(&inputs);
        drop(inputs);
        self.record(&report);
        report
    }

    /// A certificate Secret deleted: what it served goes (a `cert_dir` pair for the same
    /// hostname, if any, serves again).
    pub fn remove_secret(&self, name: &str) {
        let mut inputs = self.inputs();
        if inputs.secrets.remove(name).is_some() {
            self.publish(&inputs);
        }
        drop(inputs);
        self.record(&LoadReport::default());
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
