//! A local certificate authority for development and tests: an ECDSA P-256 CA and
//! certificates for the demo hostnames, written in the `cert_dir` layout the proxy reads.
//!
//! ECDSA P-256 because it signs ~10× faster than RSA-2048 on these machines, which keeps
//! handshake benchmarks about the proxy rather than about RSA.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

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
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), DevCertError> {
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

/// The local CA: loaded from `dir/ca.crt` + `dir/ca.key`, or created there.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    /// Path of the CA certificate clients should trust.
    pub cert_path: PathBuf,
}

impl LocalCa {
    /// Loads the CA in `dir`, creating it (and `dir`) when missing.
    pub fn open_or_create(dir: &Path) -> Result<Self, DevCertError> {
        fs::create_dir_all(dir).map_err(|source| DevCertError::Io {
            path: dir.into(),
            source,
        })?;
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if let (Ok(cert), Ok(key)) = (
            fs::read_to_string(&cert_path),
            fs::read_to_string(&key_path),
        ) {
            let key = KeyPair::from_pem(&key)?;
            let issuer = Issuer::from_ca_cert_pem(&cert, key)?;
            return Ok(Self { issuer, cert_path });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kanmon local CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_path,
        })
    }

    /// Issues a certificate for `hostname` into `dir/<hostname>.crt|.key`. A name starting
    /// with `_.` is a zone wildcard and gets the SAN `*.<rest>`.
    pub fn issue(&self, dir: &Path, hostname: &str) -> Result<PathBuf, DevCertError> {
        let san = match hostname.strip_prefix("_.") {
            Some(rest) => format!("*.{rest}"),
            None => hostname.to_string(),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![san.clone()])?;
        params.distinguished_name.push(DnType::CommonName, san);
        let cert = params.signed_by(&key, &self.issuer)?;
        let crt = dir.join(format!("{hostname}.crt"));
        write(&crt, &cert.pem(), false)?;
        write(
            &dir.join(format!("{hostname}.key")),
            &key.serialize_pem(),
            true,
        )?;
        Ok(crt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_the_ca() {
        let dir = std::env::temp_dir().join(format!("kanmon-devcerts-{}", std::process::id()));
        let ca = LocalCa::open_or_create(&dir).unwrap();
        let first = fs::read_to_string(&ca.cert_path).unwrap();
        ca.issue(&dir, "alpha.us-east1.kanmon.test").unwrap();
        ca.issue(&dir, "_.eu-west1.kanmon.test").unwrap();
        let again = LocalCa::open_or_create(&dir).unwrap();
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
        let ca = LocalCa::open_or_create(&dir).unwrap();
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
