//! Where the keeper puts certificates, reads back what is current, and removes them: the
//! proxy's `cert_dir` ([`DirSink`]), or `kubernetes.io/tls` Secrets in the edge's namespace
//! ([`super::secrets::SecretSink`]). TLS-ALPN-01 challenge certificates take the same path.
//!
//! What the sink holds is the keeper's state: a restarted control plane reads each current
//! certificate back (its expiry, its issuer) instead of issuing everything again.

use std::path::{Path, PathBuf};

use kanmon_proxy::{
    devcerts::{write_pair, PemPair},
    tls::acme::CHALLENGE_SUFFIX,
};

use super::CertError;

/// Where certificates live.
#[async_trait::async_trait]
pub trait CertSink: Send + Sync {
    /// Stores `hostname`'s certificate, replacing the current one without a moment of none.
    async fn put(&self, hostname: &str, pair: &PemPair) -> Result<(), CertError>;
    /// The chain (PEM, leaf first) of `hostname`'s current certificate, if there is one.
    async fn current(&self, hostname: &str) -> Result<Option<String>, CertError>;
    /// Removes `hostname`'s certificate (done when there is none).
    async fn remove(&self, hostname: &str) -> Result<(), CertError>;
    /// Hands `hostname`'s TLS-ALPN-01 challenge certificate to the edge.
    async fn put_challenge(&self, hostname: &str, pair: &PemPair) -> Result<(), CertError>;
    /// Takes it back (whatever the order's outcome); a failure is logged, not returned: a
    /// left-over challenge certificate is only ever served to a validator.
    async fn remove_challenge(&self, hostname: &str);
    /// The proxy's `cert_dir`, where HTTP-01 key authorizations go, when this sink is one.
    fn http01_dir(&self) -> Option<&Path> {
        None
    }
}

/// The proxy's `cert_dir`: `<hostname>.crt/.key`, key first and each file atomically, so the
/// proxy's hot reload never sees half a pair; challenges as `<hostname>.tls-alpn-01.crt/.key`.
#[derive(Debug, Clone)]
pub struct DirSink {
    dir: PathBuf,
}

impl DirSink {
    /// A sink writing into `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn crt(&self, hostname: &str) -> PathBuf {
        self.dir.join(format!("{hostname}.crt"))
    }
}

#[async_trait::async_trait]
impl CertSink for DirSink {
    async fn put(&self, hostname: &str, pair: &PemPair) -> Result<(), CertError> {
        write_pair(&self.dir, hostname, pair)?;
        Ok(())
    }

    async fn current(&self, hostname: &str) -> Result<Option<String>, CertError> {
        let path = self.crt(hostname);
        match std::fs::read_to_string(&path) {
            Ok(pem) => Ok(Some(pem)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CertError::Io { path, source }),
        }
    }

    async fn remove(&self, hostname: &str) -> Result<(), CertError> {
        for path in [self.crt(hostname), self.dir.join(format!("{hostname}.key"))] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CertError::Io { path, source }),
            }
        }
        Ok(())
    }

    async fn put_challenge(&self, hostname: &str, pair: &PemPair) -> Result<(), CertError> {
        write_pair(&self.dir, &format!("{hostname}{CHALLENGE_SUFFIX}"), pair)?;
        Ok(())
    }

    async fn remove_challenge(&self, hostname: &str) {
        for ext in ["crt", "key"] {
            crate::private::remove(&self.dir.join(format!("{hostname}{CHALLENGE_SUFFIX}.{ext}")));
        }
    }

    fn http01_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}
