//! A local certificate authority for development, `kanmon up` and tests: an ECDSA P-256 CA and
//! per-hostname leaf certificates, written in the `cert_dir` layout the proxy reads.
//!
//! ECDSA P-256 because it signs ~10× faster than RSA-2048 on these machines, which keeps
//! handshake benchmarks about the proxy rather than about RSA.
//!
//! The certificates follow what public CAs issue, because clients apply those rules to every
//! CA (Apple's refuse a leaf valid for more than 825 days or without `serverAuth`): leaves live
//! [`LEAF_LIFETIME`] with `digitalSignature` + `serverAuth`; the CA lives [`CA_LIFETIME`] and
//! is name-constrained to the base domain (and `localhost`, for the API's certificate), so a
//! developer who trusts it trusts it for nothing else should its key leak. A CA on disk that
//! does not meet these rules (made by an older kanmon, or for another base domain) or is past
//! two thirds of its lifetime is replaced.

mod info;

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints, PKCS_ECDSA_P256_SHA256,
};

pub use info::CertInfo;

/// How long a leaf certificate is valid (what public CAs issue).
pub const LEAF_LIFETIME: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);
/// How long the CA certificate is valid, at most.
pub const CA_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);
/// Backdating of `notBefore`, for clients whose clock runs a little behind.
const BACKDATE: std::time::Duration = std::time::Duration::from_secs(300);

/// Why the local CA could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("certificate parsing: {0}")]
    Parse(String),
    /// The CA is constrained to names this one is not among.
    #[error("{0} is outside the names the local CA may sign ({1} and localhost)")]
    OutsideConstraints(String, String),
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct PemPair {
    /// The certificate chain, leaf first.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair").finish_non_exhaustive()
    }
}

/// Writes `text` to `path` atomically (a fresh temporary file, then a rename), 0600 when
/// `private`. Public so that every writer of `cert_dir` writes the same way.
pub fn write_atomic(path: &Path, text: &str, private: bool) -> Result<(), DevCertError> {
    let io = |source| DevCertError::Io {
        path: path.into(),
        source,
    };
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    // A new file every time, private from its first byte: a leftover temporary file (which
    // someone may hold open) is unlinked, never truncated and refilled with a key.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    // Rename so the proxy's watcher never sees a half-written file.
    fs::rename(&tmp, path).map_err(io)
}

/// Writes `dir/<stem>.key` (0600) and then `dir/<stem>.crt`: the proxy loads a pair when the
/// certificate changes, so the key it needs is already in place.
pub fn write_pair(dir: &Path, stem: &str, pair: &PemPair) -> Result<PathBuf, DevCertError> {
    write_atomic(&dir.join(format!("{stem}.key")), &pair.key_pem, true)?;
    let crt = dir.join(format!("{stem}.crt"));
    write_atomic(&crt, &pair.cert_pem, false)?;
    Ok(crt)
}

/// The local CA: loaded from `dir/ca.crt` + `dir/ca.key`, or created there.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    base_domain: String,
    key_id: Vec<u8>,
    /// Path of the CA certificate clients should trust.
    pub cert_path: PathBuf,
    /// Whether this open replaced a CA certificate that was there (clients must trust the
    /// new one; certificates signed by the old one no longer chain).
    pub replaced: bool,
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

/// Whether a CA certificate on disk is still fit to sign for `base_domain` at `now`.
fn ca_fit(info: &CertInfo, base_domain: &str, now: SystemTime) -> bool {
    let mut permitted = info.permitted_dns.clone();
    permitted.sort();
    let mut want = vec![base_domain.to_string(), "localhost".to_string()];
    want.sort();
    permitted == want
        && info.lifetime() <= CA_LIFETIME + BACKDATE
        && now < info.renew_at()
        && info.subject_key_id.is_some()
}

impl LocalCa {
    /// Loads the CA in `dir`, creating it (and `dir`) when missing, or replacing it when it
    /// is not fit to sign names under `base_domain` (see the module doc).
    pub fn open_or_create(dir: &Path, base_domain: &str) -> Result<Self, DevCertError> {
        let base_domain = base_domain.trim_end_matches('.').to_ascii_lowercase();
        fs::create_dir_all(dir).map_err(|source| DevCertError::Io {
            path: dir.into(),
            source,
        })?;
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let now = SystemTime::now();
        let existing = fs::read_to_string(&cert_path).ok();
        if let (Some(cert), Ok(key)) = (&existing, fs::read_to_string(&key_path)) {
            if let Ok(info) = CertInfo::from_pem(cert) {
                if ca_fit(&info, &base_domain, now) {
                    let key = KeyPair::from_pem(&key)?;
                    let issuer = Issuer::from_ca_cert_pem(cert, key)?;
                    return Ok(Self {
                        issuer,
                        base_domain,
                        key_id: info.subject_key_id.unwrap_or_default(),
                        cert_path,
                        replaced: false,
                    });
                }
            }
            tracing::warn!(
                path = %cert_path.display(),
                "local CA certificate replaced (unconstrained, too long-lived, for another base \
                 domain or due for renewal): clients must trust the new one"
            );
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("kanmon local CA for {base_domain}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![
                GeneralSubtree::DnsName(base_domain.clone()),
                GeneralSubtree::DnsName("localhost".into()),
            ],
            excluded_subtrees: Vec::new(),
        });
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(now + CA_LIFETIME);
        let cert = params.self_signed(&key)?;
        write_atomic(&key_path, &key.serialize_pem(), true)?;
        write_atomic(&cert_path, &cert.pem(), false)?;
        let key_id = params.key_identifier(&key);
        Ok(Self {
            issuer: Issuer::new(params, key),
            base_domain,
            key_id,
            cert_path,
            replaced: existing.is_some(),
        })
    }

    /// Whether `name` (a DNS name, `*.` allowed) is one this CA may sign.
    fn permits(&self, name: &str) -> bool {
        let bare = name.strip_prefix("*.").unwrap_or(name);
        bare == "localhost"
            || bare == self.base_domain
            || bare
                .strip_suffix(self.base_domain.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }

    /// Whether this CA issued the certificate `info` describes (by key identifier).
    pub fn issued(&self, info: &CertInfo) -> bool {
        info.authority_key_id.as_deref() == Some(self.key_id.as_slice())
    }

    /// Issues a leaf for exactly `hostname` (a name starting with `_.` is a zone wildcard and
    /// gets the SAN `*.<rest>`), with a fresh key, valid [`LEAF_LIFETIME`] from now.
    pub fn issue_pair(&self, hostname: &str) -> Result<PemPair, DevCertError> {
        let san = match hostname.strip_prefix("_.") {
            Some(rest) => format!("*.{rest}"),
            None => hostname.to_string(),
        };
        if !self.permits(&san) {
            return Err(DevCertError::OutsideConstraints(
                san,
                self.base_domain.clone(),
            ));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![san.clone()])?;
        params.distinguished_name.push(DnType::CommonName, san);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = to_offset(now - BACKDATE);
        params.not_after = to_offset(now + LEAF_LIFETIME);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for `hostname` (see [`issue_pair`](Self::issue_pair)) into
    /// `dir/<hostname>.crt|.key`.
    pub fn issue(&self, dir: &Path, hostname: &str) -> Result<PathBuf, DevCertError> {
        let pair = self.issue_pair(hostname)?;
        write_pair(dir, hostname, &pair)
    }
}

#[cfg(test)]
mod hygiene;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_the_ca() {
        let dir = std::env::temp_dir().join(format!("kanmon-devcerts-{}", std::process::id()));
        let ca = LocalCa::open_or_create(&dir, "kanmon.test").unwrap();
        let first = fs::read_to_string(&ca.cert_path).unwrap();
        ca.issue(&dir, "alpha.us-east1.kanmon.test").unwrap();
        ca.issue(&dir, "_.eu-west1.kanmon.test").unwrap();
        let again = LocalCa::open_or_create(&dir, "kanmon.test").unwrap();
        assert_eq!(fs::read_to_string(&again.cert_path).unwrap(), first);
        assert!(dir.join("_.eu-west1.kanmon.test.key").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Keys are private from their first byte: a world-readable temporary file left in the
    /// directory (and held open by someone) never receives the key.
    #[test]
    fn keys_never_pass_through_a_readable_file() {
        use std::{io::Read, os::unix::fs::PermissionsExt};
        let dir = std::env::temp_dir().join(format!("kanmon-devcerts-key-{}", std::process::id()));
        let ca = LocalCa::open_or_create(&dir, "kanmon.test").unwrap();
        let host = "alpha.us-east1.kanmon.test";
        let planted = dir.join(format!("{host}.tmp"));
        fs::write(&planted, "").unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o644)).unwrap();
        let mut spy = fs::File::open(&planted).unwrap();
        ca.issue(&dir, host).unwrap();
        let mut seen = String::new();
        spy.read_to_string(&mut seen).unwrap();
        assert!(
            !seen.contains("PRIVATE KEY"),
            "the key went through a readable file"
        );
        let key = dir.join(format!("{host}.key"));
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(dir.join("ca.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
