//! Certificates in `kubernetes.io/tls` Secrets: the contract between the control plane, which
//! writes one Secret per hostname into the edge's namespace, and the proxy, which watches them
//! (see `discovery::kubernetes::certs`) and feeds them into the same [`super::CertStore`] the
//! `cert_dir` reload feeds.
//!
//! A certificate Secret is named [`secret_name`]`(purpose, hostname)`, of type
//! `kubernetes.io/tls` (`tls.crt`: the chain, leaf first; `tls.key`: its key), labelled
//! [`CERTIFICATE_LABEL`]` = serving | acme-challenge` (the label the proxy selects on) and
//! annotated [`HOSTNAME_ANNOTATION`]` = <hostname>` (label values are limited to 63
//! characters, hostnames are not). A challenge Secret holds a TLS-ALPN-01 certificate, served
//! only to a ClientHello offering exactly `acme-tls/1` (see [`super::acme`]).
//!
//! Everything here is pure: the watch reduces a Secret to a [`SecretCert`], and
//! [`SecretCert::validate`] decides, once, whether and as what it may be served.

use rustls::sign::CertifiedKey;

use super::store::{pair_from_pem, CertError};

/// The label every certificate Secret carries; its value is the [`Purpose`].
pub const CERTIFICATE_LABEL: &str = "kanmon.dev/certificate";
/// The annotation naming the hostname a certificate Secret is for.
pub const HOSTNAME_ANNOTATION: &str = "kanmon.dev/hostname";
/// The Secret type.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// The data key of the certificate chain.
pub const TLS_CRT: &str = "tls.crt";
/// The data key of the private key.
pub const TLS_KEY: &str = "tls.key";

/// What a certificate Secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// The hostname's certificate, served to its clients.
    Serving,
    /// A pending TLS-ALPN-01 challenge certificate, served to ACME validators only.
    AcmeChallenge,
}

impl Purpose {
    /// The value of [`CERTIFICATE_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::AcmeChallenge => "acme-challenge",
        }
    }

    /// The purpose a label value names.
    pub fn from_label(value: &str) -> Option<Self> {
        [Self::Serving, Self::AcmeChallenge]
            .into_iter()
            .find(|p| p.label() == value)
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Serving => "kanmon-cert.",
            Self::AcmeChallenge => "kanmon-acme.",
        }
    }
}

/// The name of the Secret holding `hostname`'s certificate of `purpose` (a valid Secret name
/// for every hostname of at most 241 characters: Secret names are DNS subdomains).
pub fn secret_name(purpose: Purpose, hostname: &str) -> String {
    format!("{}{}", purpose.prefix(), hostname.to_ascii_lowercase())
}

/// A certificate Secret as the watch saw it. Its key never reaches a log or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretCert {
    /// `metadata.name`.
    pub name: String,
    /// `type`.
    pub secret_type: Option<String>,
    /// The value of [`CERTIFICATE_LABEL`].
    pub purpose: Option<String>,
    /// The value of [`HOSTNAME_ANNOTATION`].
    pub hostname: Option<String>,
    /// `data["tls.crt"]`.
    pub crt: Vec<u8>,
    /// `data["tls.key"]`.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for SecretCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCert")
            .field("name", &self.name)
            .field("purpose", &self.purpose)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// What a valid certificate Secret serves.
#[derive(Debug)]
pub struct Validated {
    /// The hostname (lower case).
    pub hostname: String,
    /// Serving or challenge.
    pub purpose: Purpose,
    /// The parsed chain and key.
    pub key: CertifiedKey,
}

/// Whether `host` is a name under `base_domain` (never the base domain itself).
fn under(host: &str, base_domain: &str) -> bool {
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    !base.is_empty()
        && host
            .strip_suffix(base.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty())
}

impl SecretCert {
    fn refused(&self, reason: impl Into<String>) -> CertError {
        CertError::Refused {
            secret: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// What this Secret serves, for hostnames under `base_domain`: refused when its type,
    /// label, annotation or name does not follow the contract (see the module doc), when its
    /// hostname lies outside `base_domain`, or when its PEM is no usable pair.
    pub fn validate(&self, base_domain: &str) -> Result<Validated, CertError> {
        if self.secret_type.as_deref() != Some(SECRET_TYPE) {
            return Err(self.refused(format!("type is not {SECRET_TYPE}")));
        }
        let purpose = self
            .purpose
            .as_deref()
            .and_then(Purpose::from_label)
            .ok_or_else(|| self.refused(format!("{CERTIFICATE_LABEL} is not a known purpose")))?;
        let hostname = self
            .hostname
            .as_deref()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .ok_or_else(|| self.refused(format!("no {HOSTNAME_ANNOTATION} annotation")))?;
        if !under(&hostname, base_domain) {
            return Err(self.refused(format!("hostname is outside {base_domain}")));
        }
        if self.name != secret_name(purpose, &hostname) {
            return Err(self.refused("name does not match its hostname"));
        }
        let key =
            pair_from_pem(&self.crt, &self.key, purpose == Purpose::Serving).map_err(|source| {
                CertError::Secret {
                    secret: self.name.clone(),
                    source,
                }
            })?;
        Ok(Validated {
            hostname,
            purpose,
            key,
        })
    }
}
