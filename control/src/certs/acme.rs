//! ACME (RFC 8555) as a certificate source, answering TLS-ALPN-01 (RFC 8737) through the edge,
//! or HTTP-01 on the edge's plain-HTTP listener where the CA is configured for it (the key
//! authorization goes into `cert_dir` as `<hostname>.http-01`, see
//! `kanmon_proxy::tls::http01`, and is removed with the challenge certificate; a `cert_dir`
//! sink only).
//!
//! The challenge certificate takes the path real certificates take (the [`CertSink`]: the
//! proxy's `cert_dir` as `<hostname>.tls-alpn-01.crt/.key`, or a Secret labelled
//! `kanmon.dev/certificate=acme-challenge`); the proxy serves it only to a validator offering
//! `acme-tls/1` (see `kanmon_proxy::tls::acme`) and it is removed once the order is decided. The certificate's key is an ECDSA P-256 key made here;
//! only its CSR leaves the process. The account's credentials (its private key) are kept in the
//! control plane's store (its SQLite database, 0600 like every file holding secrets), keyed by
//! the directory URL, and reused by later starts; an account file left by an older version is
//! moved into the store and removed.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy, RevocationRequest,
};
use kanmon_proxy::{
    devcerts::{write_atomic, CertInfo, PemPair},
    tls::http01::HTTP01_EXTENSION,
};
use rcgen::{CertificateParams, CustomExtension, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::{sink::CertSink, CertError, CertSource};
use crate::store::Store;

/// Where and how to reach the ACME CA.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact e-mail address for the account (expiry and policy notices).
    pub contact: Option<String>,
    /// External Account Binding: key id and the HMAC key (base64url), when the CA needs it.
    pub eab: Option<(String, String)>,
    /// A PEM root to trust for the CA's own HTTPS endpoint instead of the system's (a test CA).
    pub ca_root: Option<PathBuf>,
    /// How long the proxy needs to load a challenge certificate before the CA may look
    /// (its watcher settles in 50 ms; a mounted Secret takes longer).
    pub challenge_settle: Duration,
    /// How long to wait for the CA to validate and to issue.
    pub order_timeout: Duration,
    /// Which challenge the edge answers.
    pub challenge: Challenge,
}

/// The ACME challenge the edge answers for this CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Challenge {
    /// TLS-ALPN-01 (RFC 8737) on the edge's TLS listener: needs no other port.
    #[default]
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
    /// HTTP-01 on the edge's plain-HTTP listener (`listen.http`, port 80 for a public CA),
    /// for CAs that do not offer TLS-ALPN-01.
    #[value(name = "http-01")]
    Http01,
}

impl Challenge {
    fn acme_type(self) -> ChallengeType {
        match self {
            Self::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Self::Http01 => ChallengeType::Http01,
        }
    }

    /// The challenge's name in RFC 8555's registry.
    pub fn name(self) -> &'static str {
        match self {
            Self::TlsAlpn01 => "tls-alpn-01",
            Self::Http01 => "http-01",
        }
    }
}

impl AcmeConfig {
    /// A configuration for the CA at `directory`, with the defaults for everything else.
    pub fn new(directory: &str) -> Self {
        Self {
            directory: directory.to_string(),
            contact: None,
            eab: None,
            ca_root: None,
            challenge_settle: Duration::from_secs(1),
            order_timeout: Duration::from_secs(120),
            challenge: Challenge::TlsAlpn01,
        }
    }
}

/// Issues and revokes through an ACME account, reached on first use: a CA that is down when
/// the control plane starts is retried with the keeper's backoff like any failed issuance.
pub struct AcmeSource {
    account: tokio::sync::OnceCell<Account>,
    cfg: AcmeConfig,
    store: Arc<Store>,
    legacy_file: PathBuf,
    sink: Arc<dyn CertSink>,
}

/// RFC 8555's problem type for a revocation of a certificate that is revoked already.
const ALREADY_REVOKED: &str = "urn:ietf:params:acme:error:alreadyRevoked";

fn acme_err(e: instant_acme::Error) -> CertError {
    CertError::Acme(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.into(),
        source,
    }
}

impl AcmeSource {
    /// A source for the CA `cfg` names, its account in `store` (an account file an older
    /// version left at `legacy_file` is moved there), challenge certificates handed to the
    /// edge through `sink`.
    pub fn new(
        cfg: AcmeConfig,
        store: Arc<Store>,
        legacy_file: &Path,
        sink: Arc<dyn CertSink>,
    ) -> Self {
        Self {
            account: tokio::sync::OnceCell::new(),
            cfg,
            store,
            legacy_file: legacy_file.to_path_buf(),
            sink,
        }
    }

    /// The account: restored from the store, or registered and saved there.
    pub async fn account(&self) -> Result<&Account, CertError> {
        self.account
            .get_or_try_init(|| connect(&self.cfg, &self.store, &self.legacy_file))
            .await
    }

    fn poll(&self) -> RetryPolicy {
        RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.cfg.order_timeout)
    }
}

/// The store's key of the account at the CA `directory`: one account per CA.
pub fn account_key(directory: &str) -> String {
    format!("acme.account {directory}")
}

fn store_err(e: crate::store::StoreError) -> CertError {
    CertError::Acme(format!("account in the store: {e}"))
}

/// The stored credentials of the account at `cfg`'s CA, taking over an account file an older
/// version wrote (then removed: the key lives in one place).
fn stored_credentials(
    cfg: &AcmeConfig,
    store: &Store,
    legacy_file: &Path,
) -> Result<Option<String>, CertError> {
    let key = account_key(&cfg.directory);
    if let Some(text) = store.meta(&key).map_err(store_err)? {
        return Ok(Some(text));
    }
    match std::fs::read_to_string(legacy_file) {
        Ok(text) => {
            store.set_meta(&key, &text).map_err(store_err)?;
            crate::private::remove(legacy_file);
            tracing::info!(file = %legacy_file.display(), "ACME account moved into the store");
            Ok(Some(text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(legacy_file)(e)),
    }
}

/// Restores the account from the store, or registers one and saves it there.
async fn connect(
    cfg: &AcmeConfig,
    store: &Store,
    legacy_file: &Path,
) -> Result<Account, CertError> {
    let builder = || match &cfg.ca_root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    if let Some(text) = stored_credentials(cfg, store, legacy_file)? {
        let creds: AccountCredentials = serde_json::from_str(&text)
            .map_err(|e| CertError::Acme(format!("stored account: {e}")))?;
        return builder()
            .map_err(acme_err)?
            .from_credentials(creds)
            .await
            .map_err(acme_err);
    }
    let contact = cfg.contact.as_ref().map(|c| format!("mailto:{c}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = match &cfg.eab {
        Some((kid, hmac)) => {
            use base64::Engine;
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(hmac.trim().trim_end_matches('='))
                .map_err(|e| CertError::Acme(format!("EAB HMAC key: {e}")))?;
            Some(ExternalAccountKey::new(kid.clone(), &key))
        }
        None => None,
    };
    let (account, creds) = builder()
        .map_err(acme_err)?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(acme_err)?;
    let text = serde_json::to_string(&creds)
        .map_err(|e| CertError::Acme(format!("account credentials: {e}")))?;
    store
        .set_meta(&account_key(&cfg.directory), &text)
        .map_err(store_err)?;
    tracing::info!(account = account.id(), "ACME account registered");
    Ok(account)
}

/// The HTTP-01 key authorization's file of `hostname` in `dir`.
fn http01_file(dir: &Path, hostname: &str) -> PathBuf {
    dir.join(format!("{hostname}.{HTTP01_EXTENSION}"))
}

/// The RFC 8737 challenge certificate: self-signed, `hostname` its only name, the SHA-256 of
/// the key authorization in the critical acmeIdentifier extension.
fn challenge_cert(hostname: &str, digest: &[u8]) -> Result<PemPair, CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err)?;
    let mut params = CertificateParams::new(vec![hostname.to_string()]).map_err(rcgen_err)?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(rcgen_err)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn rcgen_err(e: rcgen::Error) -> CertError {
    CertError::Local(e.into())
}

#[async_trait::async_trait]
impl CertSource for AcmeSource {
    async fn obtain(&self, hostname: &str) -> Result<PemPair, CertError> {
        let result = self.order(hostname).await;
        // Whatever the outcome, the challenge goes (it was decided, or it never will be).
        match self.cfg.challenge {
            Challenge::TlsAlpn01 => self.sink.remove_challenge(hostname).await,
            Challenge::Http01 => {
                if let Some(dir) = self.sink.http01_dir() {
                    crate::private::remove(&http01_file(dir, hostname));
                }
            }
        }
        result
    }

    async fn revoke(&self, cert_pem: &str) -> Result<(), CertError> {
        self.revoke_pem(cert_pem).await
    }

    async fn suggested_renewal(&self, cert_pem: &str) -> Option<super::Suggestion> {
        self.suggestion(cert_pem).await
    }

    /// Any certificate for the hostname: one of the local CA issued before the switch to ACME
    /// is replaced at its renewal time like any other.
    fn accepts(&self, _info: &CertInfo) -> bool {
        true
    }
}

impl AcmeSource {
    /// One order for `hostname`, its challenge answered through the sink.
    async fn order(&self, hostname: &str) -> Result<PemPair, CertError> {
        let ids = [Identifier::Dns(hostname.to_string())];
        let mut order = self
            .account()
            .await?
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(acme_err)?;
        let mut pending = false;
        {
            let mut authzs = order.authorizations();
            while let Some(authz) = authzs.next().await {
                let mut authz = authz.map_err(acme_err)?;
                match authz.status {
                    AuthorizationStatus::Valid => continue,
                    AuthorizationStatus::Pending => {}
                    other => {
                        return Err(CertError::Acme(format!("authorization is {other:?}")));
                    }
                }
                let kind = self.cfg.challenge;
                let mut challenge = authz
                    .challenge(kind.acme_type())
                    .ok_or_else(|| CertError::Acme(format!("the CA offers no {}", kind.name())))?;
                let key_auth = challenge.key_authorization();
                match kind {
                    Challenge::TlsAlpn01 => {
                        let pair = challenge_cert(hostname, key_auth.digest().as_ref())?;
                        self.sink.put_challenge(hostname, &pair).await?;
                    }
                    Challenge::Http01 => {
                        let dir = self.sink.http01_dir().ok_or_else(|| {
                            CertError::Acme(
                                "http-01 needs the proxy's cert_dir; Secrets carry tls-alpn-01 only"
                                    .into(),
                            )
                        })?;
                        // Not a secret (the validator reads it over plain HTTP); written
                        // atomically so the proxy never loads half of it.
                        write_atomic(&http01_file(dir, hostname), key_auth.as_str(), false)?;
                    }
                }
                tokio::time::sleep(self.cfg.challenge_settle).await;
                challenge.set_ready().await.map_err(acme_err)?;
                pending = true;
            }
        }
        let status = order.poll_ready(&self.poll()).await.map_err(acme_err)?;
        if status != OrderStatus::Ready {
            let mut why = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(Ok(authz)) = authzs.next().await {
                why.extend(
                    authz
                        .challenges
                        .iter()
                        .filter_map(|c| c.error.as_ref().map(|e| e.to_string())),
                );
            }
            return Err(CertError::Acme(format!(
                "order is {status:?} (validation {}): {}",
                if pending { "failed" } else { "not started" },
                why.join("; ")
            )));
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err)?;
        let csr = CertificateParams::new(vec![hostname.to_string()])
            .map_err(rcgen_err)?
            .serialize_request(&key)
            .map_err(rcgen_err)?;
        order.finalize_csr(csr.der()).await.map_err(acme_err)?;
        let chain = order
            .poll_certificate(&self.poll())
            .await
            .map_err(acme_err)?;
        Ok(PemPair {
            cert_pem: chain,
            key_pem: key.serialize_pem(),
        })
    }

    async fn revoke_pem(&self, cert_pem: &str) -> Result<(), CertError> {
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .ok_or_else(|| CertError::Acme("no certificate to revoke".into()))?
            .map_err(|e| CertError::Acme(format!("certificate PEM: {e}")))?;
        self.account()
            .await?
            .revoke(&RevocationRequest {
                certificate: &der,
                reason: None,
            })
            .await
            .or_else(|e| match e {
                // Revoked by an earlier attempt whose answer was lost (or cut short): done.
                instant_acme::Error::Api(p) if p.r#type.as_deref() == Some(ALREADY_REVOKED) => {
                    Ok(())
                }
                e => Err(acme_err(e)),
            })
    }

    async fn suggestion(&self, cert_pem: &str) -> Option<super::Suggestion> {
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()?
            .ok()?;
        let id = instant_acme::CertificateIdentifier::try_from(&der).ok()?;
        let (info, retry) = match self.account().await.ok()?.renewal_info(&id).await {
            Ok(answer) => answer,
            // Most often: the CA has no renewalInfo endpoint (pebble 2.4 has none).
            Err(e) => {
                tracing::debug!(error = %e, "no ACME renewal information");
                return None;
            }
        };
        let start = SystemTime::from(info.suggested_window.start);
        let end = SystemTime::from(info.suggested_window.end).max(start);
        // RFC 9773 §4.2: a uniformly random point in the window, so the CA's clients spread out.
        let span = end.duration_since(start).unwrap_or_default();
        let offset = span.mul_f64(rand::random::<f64>());
        Some(super::Suggestion {
            renew_at: start + offset,
            ask_in: retry,
        })
    }
}
