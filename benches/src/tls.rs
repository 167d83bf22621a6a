//! rustls configurations for the node (server side) and the load generators (client side).
//!
//! Everything uses the `ring` provider explicitly, so no process-wide default provider has to be
//! installed and the crate never pulls a second crypto backend in. Client configs disable session
//! resumption: every benchmark connection pays a full handshake, which is what a crowd of game
//! clients arriving at once costs the proxy.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN id for HTTP/1.1, the only protocol the WebSocket and HTTP loads speak.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM text held no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls rejected the material or the protocol selection.
    #[error("rustls")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider this crate uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses every certificate in a PEM text.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// Parses the first private key in a PEM text.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut BufReader::new(pem.as_bytes()))
        .map_err(|e| TlsError::Pem(format!("bad key PEM: {e}")))?
        .ok_or_else(|| TlsError::Pem("no private key in PEM".into()))
}

/// A client config trusting only the CA in `ca_pem`, offering `http/1.1`, without resumption.
pub fn client_config_from_pem(ca_pem: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem)? {
        roots.add(cert)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// [`client_config_from_pem`] reading the CA from a file (`--ca`).
pub fn client_config(ca_path: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_from_pem(&read_file(ca_path)?)
}

/// A server config presenting one certificate for every SNI, offering `http/1.1`.
pub fn server_config_from_pem(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(parse_certs(cert_pem)?, parse_key(key_pem)?)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// [`server_config_from_pem`] reading both PEM files.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_from_pem(&read_file(cert_path)?, &read_file(key_path)?)
}
