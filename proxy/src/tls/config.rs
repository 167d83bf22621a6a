//! The rustls server configuration: which cipher suites, in which order, and what else the
//! edge turns on or off.
//!
//! Cipher suites follow the server's order, AES-128-GCM first. Every client of ours has AES
//! in hardware (x86 AES-NI, ARMv8 crypto extensions) and AES-128 is as safe as AES-256 for a
//! game session, but cheaper per record, and its SHA-256 key schedule is cheaper than the
//! SHA-384 one AES-256-GCM brings: measured on the edge, a TLS 1.3 handshake spent about 6%
//! of its CPU in SHA-512 compression when clients (rustls, OpenSSL) got their first choice,
//! AES-256-GCM-SHA384.

use std::sync::Arc;

use rustls::{
    crypto::CryptoProvider, server::ResolvesServerCert, CipherSuite, ServerConfig,
    SupportedCipherSuite,
};

use super::{
    ticket_keys::TicketKeys,
    tickets::{CountedTickets, TicketCounts},
};

/// Builds the edge's rustls configuration over `resolver`, offering `alpn` (wire order) and,
/// after it, `acme-tls/1` for TLS-ALPN-01 (see [`super::acme`]).
/// With `tickets` > 0 it sends that many stateless TLS 1.3 session tickets after each
/// handshake (TLS 1.2 clients get one too) and resumes sessions from them, counted in
/// `counts`: sealed with `keys` (a key file shared by replicas) or else with in-memory keys
/// rotated by rustls. With 0 it neither issues nor accepts tickets.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
    tickets: usize,
    keys: Option<Arc<TicketKeys>>,
    counts: TicketCounts,
) -> Result<ServerConfig, rustls::Error> {
    let ring = rustls::crypto::ring::default_provider();
    let provider = CryptoProvider {
        cipher_suites: server_order(ring.cipher_suites.clone()),
        ..ring
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = super::acme::with_acme(alpn);
    config.ignore_client_order = true;
    config.send_tls13_tickets = tickets;
    if tickets > 0 {
        config.ticketer = Arc::new(match keys {
            Some(keys) => CountedTickets::over(keys, counts),
            None => CountedTickets::new(counts)?,
        });
    }
    Ok(config)
}

/// AES-128-GCM first, then ChaCha20-Poly1305, then AES-256-GCM, within each TLS version
/// (the sort is stable, so anything else keeps its place after them).
fn server_order(mut suites: Vec<SupportedCipherSuite>) -> Vec<SupportedCipherSuite> {
    suites.sort_by_key(|s| rank(s.suite()));
    suites
}

fn rank(suite: CipherSuite) -> u8 {
    match suite {
        CipherSuite::TLS13_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes128_leads_and_nothing_is_dropped() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let ordered = server_order(all.clone());
        assert_eq!(ordered.len(), all.len());
        assert_eq!(ordered[0].suite(), CipherSuite::TLS13_AES_128_GCM_SHA256);
        let tls13: Vec<_> = ordered
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            tls13,
            [
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384
            ]
        );
    }
}
