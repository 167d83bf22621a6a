//! Real ClientHellos from rustls (a fresh one, and one resuming the session of an earlier
//! handshake), hostile variants of them, and the peek over a loopback socket.

use std::{sync::Arc, time::Duration};

use pingora::protocols::l4::stream::Stream as L4Stream;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const HOST: &str = "alpha.us-east1.kanmon.test";

/// Accepts any certificate: these tests look at the client's first flight only.
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server() -> Arc<ServerConfig> {
    let issued = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![issued.cert.der().clone()], key)
        .unwrap();
    Arc::new(cfg)
}

fn client() -> Arc<ClientConfig> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    Arc::new(cfg)
}

fn first_flight(client: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    wire
}

/// A fresh ClientHello and one that resumes the session a first handshake left behind.
fn hellos() -> (Vec<u8>, Vec<u8>) {
    let (server, client_cfg) = (server(), client());
    let name = || ServerName::try_from(HOST.to_string()).unwrap();
    let mut c = ClientConnection::new(client_cfg.clone(), name()).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    let fresh = first_flight(&mut c);
    let mut pending = fresh.clone();
    for _ in 0..16 {
        if !pending.is_empty() {
            s.read_tls(&mut pending.as_slice()).unwrap();
            s.process_new_packets().unwrap();
        }
        let mut wire = Vec::new();
        s.write_tls(&mut wire).unwrap();
        if !wire.is_empty() {
            c.read_tls(&mut wire.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        pending = first_flight(&mut c);
        if !c.is_handshaking() && !s.is_handshaking() && pending.is_empty() {
            // Let the session tickets sent after the handshake reach the client.
            let mut wire = Vec::new();
            s.write_tls(&mut wire).unwrap();
            if !wire.is_empty() {
                c.read_tls(&mut wire.as_slice()).unwrap();
                c.process_new_packets().unwrap();
            }
            break;
        }
    }
    let mut again = ClientConnection::new(client_cfg, name()).unwrap();
    (fresh, first_flight(&mut again))
}

#[test]
fn real_hellos_are_told_apart() {
    let (fresh, resuming) = hellos();
    assert_eq!(classify(&fresh), Parsed::Done(Hello::Full));
    assert_eq!(classify(&resuming), Parsed::Done(Hello::Resumption));
    // Every strict prefix needs more; nothing past the first record matters.
    for hello in [&fresh, &resuming] {
        for end in 0..hello.len() {
            assert_eq!(classify(&hello[..end]), Parsed::NeedMore, "prefix {end}");
        }
        let mut longer = hello.clone();
        longer.extend_from_slice(b"\x17\x03\x03garbage");
        assert_eq!(classify(&longer), classify(hello));
    }
}

#[test]
fn hostile_hellos_are_full_or_not_tls() {
    let (_, resuming) = hellos();
    assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Parsed::Done(Hello::NotTls));
    assert_eq!(classify(b"\x16\x03\x01\x00\x00"), Parsed::Done(Hello::Full));
    assert_eq!(classify(b"\x16\x03\x01\xff\xff"), Parsed::Done(Hello::Full));
    // A record that is no ClientHello (a ServerHello's type), or one whose inner lengths
    // lie: full, never a panic.
    let mut not_hello = resuming.clone();
    not_hello[5] = 2;
    assert_eq!(classify(&not_hello), Parsed::Done(Hello::Full));
    let mut lying = resuming.clone();
    // The session id length byte, after record header (5), handshake header (4), version
    // (2) and random (32).
    lying[5 + 4 + 2 + 32] = 0xff;
    assert!(matches!(classify(&lying), Parsed::Done(_)));
    // The same record cut short and re-framed: whatever is left is scanned safely.
    for cut in (6..resuming.len()).step_by(7) {
        let mut short = resuming[..cut].to_vec();
        let len = (cut - 5) as u16;
        short[3..5].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(classify(&short), Parsed::Done(_)), "cut {cut}");
    }
}

async fn pair() -> (L4Stream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (L4Stream::from(server), client)
}

#[tokio::test]
async fn a_peeked_hello_is_all_read_again_by_the_acceptor() {
    let (_, resuming) = hellos();
    let (mut server, mut client) = pair().await;
    // Sent in two pieces, the second after the first has been read.
    let (head, tail) = resuming.split_at(3);
    client.write_all(head).await.unwrap();
    let peeking = tokio::spawn(async move {
        let hello = peek(&mut server, Duration::from_secs(30)).await;
        (hello, server)
    });
    client.write_all(tail).await.unwrap();
    let (hello, mut server) = peeking.await.unwrap();
    assert_eq!(hello, Hello::Resumption);
    let mut again = vec![0u8; resuming.len()];
    server.read_exact(&mut again).await.unwrap();
    assert_eq!(again, resuming);
}

#[tokio::test(start_paused = true)]
async fn a_partial_hello_counts_as_full_and_keeps_its_bytes() {
    let (fresh, _) = hellos();
    let (mut server, mut client) = pair().await;
    let half = &fresh[..fresh.len() / 2];
    client.write_all(half).await.unwrap();
    // The rest never comes: after `rest_within` (virtual time) it is a full handshake.
    assert_eq!(peek(&mut server, Duration::from_secs(1)).await, Hello::Full);
    let mut again = vec![0u8; half.len()];
    server.read_exact(&mut again).await.unwrap();
    assert_eq!(again, half);
}

#[tokio::test]
async fn not_tls_and_early_closes_are_left_to_the_acceptor() {
    let (mut server, mut client) = pair().await;
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(
        peek(&mut server, Duration::from_secs(30)).await,
        Hello::NotTls
    );
    let mut first = [0u8; 3];
    server.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"GET");
    let (mut server, client) = pair().await;
    drop(client);
    assert_eq!(
        peek(&mut server, Duration::from_secs(30)).await,
        Hello::NotTls
    );
}
