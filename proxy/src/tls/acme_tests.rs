//! TLS-ALPN-01 through the edge's own rustls configuration, handshakes in memory: the
//! challenge certificate reaches only a client offering exactly `acme-tls/1`.

use std::sync::Arc;

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};

use super::{acme::ACME_TLS_ALPN, config::server_config, CertStore};
use crate::{devcerts::LocalCa, metrics::Metrics};

const ALPHA: &str = "alpha.us-east1.kanmon.test";
const BETA: &str = "beta.us-east1.kanmon.test";

/// Accepts any certificate: the tests look at which one was served, not whether it is trusted
/// (a challenge certificate is self-signed).
#[derive(Debug)]
struct AnyCert;

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct Served {
    leaf: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
}

/// A full handshake between a client offering `alpn` for `host` and the edge's config.
fn handshake(
    server: &Arc<ServerConfig>,
    host: &str,
    alpn: &[&[u8]],
) -> Result<Served, rustls::Error> {
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(host.to_string()).expect("name");
    let mut client = ClientConnection::new(Arc::new(cfg), name)?;
    let mut srv = ServerConnection::new(server.clone())?;
    for _ in 0..16 {
        let mut wire = Vec::new();
        client.write_tls(&mut wire).expect("client writes");
        if !wire.is_empty() {
            srv.read_tls(&mut wire.as_slice()).expect("server reads");
            srv.process_new_packets()?;
        }
        let mut wire = Vec::new();
        srv.write_tls(&mut wire).expect("server writes");
        if !wire.is_empty() {
            client.read_tls(&mut wire.as_slice()).expect("client reads");
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !srv.is_handshaking() {
            break;
        }
    }
    Ok(Served {
        leaf: client.peer_certificates().expect("a certificate")[0].clone(),
        alpn: client.alpn_protocol().map(<[u8]>::to_vec),
    })
}

fn der_of(path: &std::path::Path) -> CertificateDer<'static> {
    let pem = std::fs::read(path).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    der.into_owned()
}

fn setup() -> (tempfile::TempDir, Arc<ServerConfig>, Metrics) {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::open_or_create(dir.path(), "kanmon.test").unwrap();
    ca.issue(dir.path(), ALPHA).unwrap();
    ca.issue(dir.path(), BETA).unwrap();
    // A challenge certificate as RFC 8737 describes it: self-signed, the validated name as
    // its only SAN, the acmeIdentifier extension.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![ALPHA.to_string()]).unwrap();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&[7u8; 32])];
    let cert = params.self_signed(&key).unwrap();
    let pair = crate::devcerts::PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    crate::devcerts::write_pair(dir.path(), &format!("{ALPHA}.tls-alpn-01"), &pair).unwrap();
    let metrics = Metrics::new().unwrap();
    let store = Arc::new(CertStore::new(dir.path().to_path_buf(), metrics.clone()));
    let report = store.reload();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(store.len(), 2, "the challenge is not a served certificate");
    let config = server_config(
        store,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        0,
        None,
        metrics.ticket_counts(),
    )
    .unwrap();
    (dir, Arc::new(config), metrics)
}

fn failures(metrics: &Metrics, reason: &str) -> u64 {
    metrics.tls_failures.with_label_values(&[reason]).get()
}

#[test]
fn the_challenge_certificate_goes_only_to_an_acme_tls_offer() {
    let (dir, server, _) = setup();
    let challenge = der_of(&dir.path().join(format!("{ALPHA}.tls-alpn-01.crt")));
    let real = der_of(&dir.path().join(format!("{ALPHA}.crt")));

    let acme = handshake(&server, ALPHA, &[ACME_TLS_ALPN]).expect("validator handshake");
    assert_eq!(acme.leaf, challenge);
    assert_eq!(acme.alpn.as_deref(), Some(ACME_TLS_ALPN));

    for alpn in [&[b"h2".as_slice(), b"http/1.1"][..], &[b"http/1.1"], &[]] {
        let game = handshake(&server, ALPHA, alpn).expect("client handshake");
        assert_eq!(
            game.leaf, real,
            "offer {alpn:?} got the challenge certificate"
        );
        assert_ne!(game.alpn.as_deref(), Some(ACME_TLS_ALPN));
    }
}

#[test]
fn acme_tls_without_a_pending_challenge_or_mixed_with_others_is_refused() {
    let (_dir, server, metrics) = setup();
    assert!(handshake(&server, BETA, &[ACME_TLS_ALPN]).is_err());
    assert_eq!(failures(&metrics, "acme_no_challenge"), 1);
    assert!(handshake(&server, ALPHA, &[b"http/1.1", ACME_TLS_ALPN]).is_err());
    assert_eq!(failures(&metrics, "acme_mixed_alpn"), 1);
    // BETA's real certificate is still there for its clients.
    assert!(handshake(&server, BETA, &[b"http/1.1"]).is_ok());
}
