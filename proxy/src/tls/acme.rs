//! TLS-ALPN-01 (RFC 8737): the edge answers an ACME server's validation of a hostname itself,
//! on its TLS listener, with the challenge certificate the control plane put beside the real
//! ones in `cert_dir` as `<hostname>.tls-alpn-01.crt` + `.key` (hot reloaded like them).
//!
//! The challenge certificate goes only to a ClientHello that offers exactly one ALPN
//! protocol, `acme-tls/1`, as RFC 8737 §3 requires of the ACME server: no game client ever
//! sees it. Such a hello for a hostname with no pending challenge is refused rather than
//! answered with the hostname's real certificate, and a hello that offers `acme-tls/1` among
//! other protocols is refused too (no client of ours mixes them; serving either certificate
//! would be wrong for one of the two protocols).

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What comes between the hostname and `.crt`/`.key` in a challenge certificate's file name.
/// Not a suffix any deployment hostname can have: those end in the base domain.
pub const CHALLENGE_SUFFIX: &str = ".tls-alpn-01";

/// What a ClientHello's ALPN offer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Anything without `acme-tls/1` (or no ALPN at all): the hostname's certificate.
    Service,
    /// Exactly `acme-tls/1`: the pending challenge certificate.
    Challenge,
    /// `acme-tls/1` among other protocols: refused.
    Mixed,
}

/// Classifies the protocols a ClientHello offers.
pub fn classify<'a>(offered: Option<impl Iterator<Item = &'a [u8]>>) -> Offer {
    let Some(offered) = offered else {
        return Offer::Service;
    };
    let (mut acme, mut other) = (false, false);
    for p in offered {
        if p == ACME_TLS_ALPN {
            acme = true;
        } else {
            other = true;
        }
    }
    match (acme, other) {
        (false, _) => Offer::Service,
        (true, false) => Offer::Challenge,
        (true, true) => Offer::Mixed,
    }
}

/// The listener's ALPN list with `acme-tls/1` last, so it is negotiated only with a client
/// that offers nothing else we speak. An empty list stays empty: a listener without ALPN
/// must not start refusing clients whose offers do not overlap `acme-tls/1`.
pub fn with_acme(mut alpn: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    if !alpn.is_empty() && !alpn.iter().any(|p| p == ACME_TLS_ALPN) {
        alpn.push(ACME_TLS_ALPN.to_vec());
    }
    alpn
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(list: &[&'static [u8]]) -> Offer {
        classify(Some(list.iter().copied()))
    }

    #[test]
    fn only_an_offer_of_exactly_acme_tls_is_a_challenge() {
        assert_eq!(classify(None::<std::iter::Empty<&[u8]>>), Offer::Service);
        assert_eq!(offer(&[b"h2", b"http/1.1"]), Offer::Service);
        assert_eq!(offer(&[ACME_TLS_ALPN]), Offer::Challenge);
        assert_eq!(offer(&[b"h2", ACME_TLS_ALPN]), Offer::Mixed);
        assert_eq!(offer(&[b"acme-tls/10"]), Offer::Service);
    }

    #[test]
    fn acme_tls_goes_last_and_never_into_an_empty_list() {
        assert_eq!(
            with_acme(vec![b"h2".to_vec(), b"http/1.1".to_vec()]),
            [b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()]
        );
        assert!(with_acme(Vec::new()).is_empty());
    }
}
