//! The command-line switches of `kanmon up` and `kanmon serve` that choose the CA.

use std::{path::PathBuf, time::Duration};

use super::{acme::AcmeConfig, CertError, SourceConfig};

/// Where deployment certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// The local CA (offline; clients trust its `ca.crt`).
    LocalCa,
    /// An ACME CA (`--acme-directory`).
    Acme,
}

/// Certificate switches.
#[derive(Debug, Clone, clap::Args)]
pub struct CertArgs {
    /// Where deployment certificates come from.
    #[arg(long = "certs", value_enum, default_value = "local-ca")]
    pub source: SourceKind,
    /// ACME directory URL (with `--certs acme`).
    #[arg(long)]
    pub acme_directory: Option<String>,
    /// Contact e-mail address for the ACME account.
    #[arg(long)]
    pub acme_contact: Option<String>,
    /// External Account Binding key id, when the CA requires one.
    #[arg(long, requires = "acme_eab_hmac_file")]
    pub acme_eab_kid: Option<String>,
    /// File holding the External Account Binding HMAC key (base64url).
    #[arg(long, requires = "acme_eab_kid")]
    pub acme_eab_hmac_file: Option<PathBuf>,
    /// PEM root to trust for the ACME server's HTTPS (a test CA such as pebble).
    #[arg(long)]
    pub acme_ca_root: Option<PathBuf>,
    /// Which ACME challenge the edge answers: tls-alpn-01 on its TLS listener, or http-01 on
    /// its plain-HTTP listener (the proxy's `listen.http`; port 80 for a public CA), for CAs
    /// without tls-alpn-01.
    #[arg(long, value_enum, default_value = "tls-alpn-01")]
    pub acme_challenge: super::acme::Challenge,
    /// How long the proxy gets to load a challenge certificate before the CA validates.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub acme_challenge_settle: Duration,
}

impl CertArgs {
    /// The source these switches describe.
    pub fn source(&self) -> Result<SourceConfig, CertError> {
        match self.source {
            SourceKind::LocalCa => Ok(SourceConfig::LocalCa),
            SourceKind::Acme => {
                let directory = self
                    .acme_directory
                    .as_deref()
                    .ok_or_else(|| CertError::Acme("--certs acme needs --acme-directory".into()))?;
                let mut cfg = AcmeConfig::new(directory);
                cfg.contact = self.acme_contact.clone();
                cfg.ca_root = self.acme_ca_root.clone();
                cfg.challenge_settle = self.acme_challenge_settle;
                cfg.challenge = self.acme_challenge;
                if let (Some(kid), Some(file)) = (&self.acme_eab_kid, &self.acme_eab_hmac_file) {
                    let hmac = std::fs::read_to_string(file).map_err(|source| CertError::Io {
                        path: file.clone(),
                        source,
                    })?;
                    cfg.eab = Some((kid.clone(), hmac.trim().to_string()));
                }
                Ok(SourceConfig::Acme(cfg))
            }
        }
    }
}
