//! What a PEM certificate says about its lifetime, usage and issuer: read back by the local CA
//! (is its own certificate still fit?) and by the control plane's renewal loop (when is a
//! deployment's certificate due?), so both renew by the same rule.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::{
    extensions::{GeneralName, ParsedExtension},
    pem::parse_x509_pem,
};

use super::DevCertError;

/// The parts of a certificate that decide renewal and trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// The issuer's key identifier (authority key identifier extension), if present.
    pub authority_key_id: Option<Vec<u8>>,
    /// The certificate's own key identifier, if present.
    pub subject_key_id: Option<Vec<u8>>,
    /// DNS names a CA certificate's name constraints permit (empty: none).
    pub permitted_dns: Vec<String>,
    /// Whether the extended key usage lists `serverAuth`.
    pub server_auth: bool,
    /// Whether the key usage lists `digitalSignature`.
    pub digital_signature: bool,
}

impl CertInfo {
    /// Parses the first certificate of a PEM text (a chain's leaf).
    pub fn from_pem(pem: &str) -> Result<Self, DevCertError> {
        let bad = |e: &dyn std::fmt::Display| DevCertError::Parse(e.to_string());
        let (_, pem) = parse_x509_pem(pem.as_bytes()).map_err(|e| bad(&e))?;
        let cert = pem.parse_x509().map_err(|e| bad(&e))?;
        let time = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0).unsigned_abs());
        let mut info = Self {
            not_before: time(cert.validity().not_before.timestamp()),
            not_after: time(cert.validity().not_after.timestamp()),
            dns_names: Vec::new(),
            authority_key_id: None,
            subject_key_id: None,
            permitted_dns: Vec::new(),
            server_auth: false,
            digital_signature: false,
        };
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    info.dns_names = san
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                            _ => None,
                        })
                        .collect();
                }
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    info.authority_key_id = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                ParsedExtension::SubjectKeyIdentifier(ski) => {
                    info.subject_key_id = Some(ski.0.to_vec());
                }
                ParsedExtension::NameConstraints(nc) => {
                    info.permitted_dns = nc
                        .permitted_subtrees
                        .iter()
                        .flatten()
                        .filter_map(|s| match s.base {
                            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                            _ => None,
                        })
                        .collect();
                }
                ParsedExtension::ExtendedKeyUsage(eku) => info.server_auth = eku.server_auth,
                ParsedExtension::KeyUsage(ku) => info.digital_signature = ku.digital_signature(),
                _ => {}
            }
        }
        Ok(info)
    }

    /// The total validity period.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// When the certificate is due for renewal: two thirds into its lifetime, so a renewal
    /// that fails keeps a third of the lifetime (30 days of a 90-day certificate) for retries
    /// before anything expires.
    pub fn renew_at(&self) -> SystemTime {
        self.not_before + self.lifetime() * 2 / 3
    }
}
