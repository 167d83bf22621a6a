//! Test certificates: a local ECDSA P-256 CA and per-host leaf certificates signed by it.
//!
//! The proxy reads `<hostname>.crt`/`.key` from its `cert_dir` (a wildcard `*.zone.base` as
//! `_.zone.base`), so [`write_host_certs`] uses exactly that naming: a test or a benchmark can
//! point the proxy at the directory it wrote. ECDSA P-256 because RSA signing would make the
//! handshake, not the proxy, the bottleneck of a connect benchmark.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// How long a leaf is valid: what public CAs issue, and what clients such as Apple's accept.
pub const LEAF_LIFETIME: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);
/// How long the CA is valid.
pub const CA_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);
/// Backdating of `notBefore`, for a clock a little behind.
const BACKDATE: std::time::Duration = std::time::Duration::from_secs(300);

/// `notBefore` and `notAfter` for a certificate valid `lifetime` from now.
fn validity(params: &mut CertificateParams, lifetime: std::time::Duration) {
    let now = std::time::SystemTime::now();
    params.not_before = time::OffsetDateTime::from(now - BACKDATE);
    params.not_after = time::OffsetDateTime::from(now + lifetime);
}

/// File name (without directory) of the CA certificate written by [`write_host_certs`].
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key written by [`write_host_certs`].
pub const CA_KEY_FILE: &str = "ca.key";

/// Why making or writing test certificates failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or could not sign.
    #[error("generating certificate for {what}")]
    Generate {
        /// Which certificate ("CA" or a hostname).
        what: String,
        /// The underlying rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// Reading or writing a PEM file failed.
    #[error("{path}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The hostname is not a DNS name we can put in a certificate.
    #[error("invalid hostname {0:?}")]
    InvalidHost(String),
}

/// A certificate and its private key, both PEM encoded.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate (leaf first; no chain is needed because the CA is the direct issuer).
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// A local certificate authority able to issue leaf certificates for test hostnames.
pub struct TestCa {
    pem: PemPair,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kanmon test CA");
    dn.push(DnType::OrganizationName, "kanmon-bench");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_LIFETIME);
    params
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        what: what.to_owned(),
        source,
    }
}

impl TestCa {
    /// Makes a fresh CA with a new ECDSA P-256 key.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err("CA"))?;
        let params = ca_params();
        let cert = params.self_signed(&key).map_err(gen_err("CA"))?;
        let pem = PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Self {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Reuses a CA written earlier by [`TestCa::write`], so certificates issued in a later run
    /// are trusted by clients that already hold the old `ca.crt`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_pem = read(&dir.join(CA_CERT_FILE))?;
        let key_pem = read(&dir.join(CA_KEY_FILE))?;
        let key = KeyPair::from_pem(&key_pem).map_err(gen_err("CA"))?;
        // The issuer only needs the subject name and key; ca_params() is deterministic, so it
        // matches the subject of the certificate on disk.
        Ok(Self {
            pem: PemPair { cert_pem, key_pem },
            issuer: Issuer::new(ca_params(), key),
        })
    }

    /// The CA certificate and key in PEM.
    pub fn pem(&self) -> &PemPair {
        &self.pem
    }

    /// Issues a leaf certificate (fresh ECDSA P-256 key) valid for the given DNS names,
    /// wildcards (`*.us-east1.kanmon.test`) included, plus `localhost`/`127.0.0.1` are NOT
    /// added: tests should use the hostnames the proxy routes on.
    pub fn issue(&self, hosts: &[&str]) -> Result<PemPair, CertError> {
        let what = hosts.join(",");
        for h in hosts {
            validate_host(h)?;
        }
        let names: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        let mut params = CertificateParams::new(names).map_err(gen_err(&what))?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("kanmon"),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_LIFETIME);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err(&what))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(gen_err(&what))?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.crt` and `ca.key` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        write(&dir.join(CA_CERT_FILE), &self.pem.cert_pem)?;
        write(&dir.join(CA_KEY_FILE), &self.pem.key_pem)
    }
}

/// The file stem DESIGN.md prescribes for a hostname: the name itself, lower-cased, with a
/// leading `*` replaced by `_` (`*.us-east1.kanmon.test` → `_.us-east1.kanmon.test`).
pub fn file_stem(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.strip_prefix("*.") {
        Some(rest) => format!("_.{rest}"),
        None => host,
    }
}

/// Paths of the certificate and key written for one host.
#[derive(Debug, Clone)]
pub struct HostFiles {
    /// The hostname as given.
    pub host: String,
    /// `<dir>/<stem>.crt`.
    pub cert: PathBuf,
    /// `<dir>/<stem>.key`.
    pub key: PathBuf,
}

/// Writes a CA (reusing `dir/ca.crt` + `dir/ca.key` if both exist) and one certificate per host
/// into `dir`, named as the proxy's `cert_dir` expects. Returns the CA and the files written.
pub fn write_host_certs(dir: &Path, hosts: &[&str]) -> Result<(TestCa, Vec<HostFiles>), CertError> {
    let ca = if dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists() {
        TestCa::load(dir)?
    } else {
        let ca = TestCa::generate()?;
        ca.write(dir)?;
        ca
    };
    let mut files = Vec::with_capacity(hosts.len());
    for host in hosts {
        let pair = ca.issue(&[host])?;
        let stem = file_stem(host);
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write(&cert, &pair.cert_pem)?;
        write(&key, &pair.key_pem)?;
        files.push(HostFiles {
            host: (*host).to_owned(),
            cert,
            key,
        });
    }
    Ok((ca, files))
}

fn validate_host(host: &str) -> Result<(), CertError> {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidHost(host.to_owned()))
    }
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), CertError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    fs::write(path, contents).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_file_names_follow_the_design() {
        assert_eq!(
            file_stem("*.us-east1.kanmon.test"),
            "_.us-east1.kanmon.test"
        );
        assert_eq!(
            file_stem("Alpha.us-east1.kanmon.test"),
            "alpha.us-east1.kanmon.test"
        );
    }

    /// A leaf verifies now and a month from now, and no longer after its 90 days.
    #[test]
    fn leaves_live_ninety_days() {
        use rustls::{
            client::{danger::ServerCertVerifier, WebPkiServerVerifier},
            pki_types::{ServerName, UnixTime},
            RootCertStore,
        };
        let ca = TestCa::generate().unwrap();
        let leaf = ca.issue(&["alpha.us-east1.kanmon.test"]).unwrap();
        let der = |pem: &str| {
            rustls_pemfile::certs(&mut pem.as_bytes())
                .next()
                .unwrap()
                .unwrap()
        };
        let mut roots = RootCertStore::empty();
        roots.add(der(&ca.pem().cert_pem)).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = ServerName::try_from("alpha.us-east1.kanmon.test").unwrap();
        let at = |days: u64| {
            let t = std::time::SystemTime::now() + std::time::Duration::from_secs(days * 86_400);
            UnixTime::since_unix_epoch(t.duration_since(std::time::UNIX_EPOCH).unwrap())
        };
        let leaf = der(&leaf.cert_pem);
        for (days, ok) in [(0, true), (30, true), (91, false)] {
            let verified = verifier.verify_server_cert(&leaf, &[], &name, &[], at(days));
            assert_eq!(verified.is_ok(), ok, "day {days}: {verified:?}");
        }
    }

    #[test]
    fn rejects_bad_hosts() {
        assert!(validate_host("a..b").is_err());
        assert!(validate_host("a b").is_err());
        assert!(validate_host("*.x.y").is_ok());
    }
}
