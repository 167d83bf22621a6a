//! Stateless TLS session tickets, counted.
//!
//! Game clients reconnect in crowds: every client of a node that drains or restarts comes back
//! within seconds. A client holding a ticket resumes without the certificate, the ECDSA
//! signature and (on its side) the chain verification. Tickets are sealed with keys kept in
//! memory and rotated by rustls (a 6-hour window, 12-hour life), so any number of clients can
//! hold one at no memory cost to the proxy. A ticket does not outlive the process: after a
//! restart, or against another replica, it is rejected and the client does a full handshake.
//!
//! The counts tell an operator whether resumption works for their clients: tickets issued,
//! tickets accepted (a resumed handshake, short of the rare session rustls still refuses for
//! a changed SNI or suite), and tickets rejected (expired keys, another process's ticket).

use std::sync::Arc;

use prometheus::IntCounter;
use rustls::server::ProducesTickets;

/// A ticket sealer that counts what it does.
#[derive(Debug)]
pub struct CountedTickets {
    inner: Arc<dyn ProducesTickets>,
    counts: TicketCounts,
}

/// `kanmon_tls_session_tickets_total{event}` handles.
#[derive(Debug, Clone)]
pub struct TicketCounts {
    /// `event="issued"`
    pub issued: IntCounter,
    /// `event="accepted"`
    pub accepted: IntCounter,
    /// `event="rejected"`
    pub rejected: IntCounter,
}

impl CountedTickets {
    /// rustls' recommended ticketer (ring, ChaCha20-Poly1305, rotating keys), counted.
    pub fn new(counts: TicketCounts) -> Result<Self, rustls::Error> {
        Ok(Self::over(rustls::crypto::ring::Ticketer::new()?, counts))
    }

    /// `inner` (e.g. keys from a file), counted.
    pub fn over(inner: Arc<dyn ProducesTickets>, counts: TicketCounts) -> Self {
        Self { inner, counts }
    }
}

impl ProducesTickets for CountedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let sealed = self.inner.encrypt(plain);
        if sealed.is_some() {
            self.counts.issued.inc();
        }
        sealed
    }

    fn decrypt(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(sealed);
        match plain {
            Some(_) => self.counts.accepted.inc(),
            None => self.counts.rejected.inc(),
        }
        plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> TicketCounts {
        let c = |n: &str| IntCounter::new(n, n).unwrap();
        TicketCounts {
            issued: c("issued"),
            accepted: c("accepted"),
            rejected: c("rejected"),
        }
    }

    #[test]
    fn a_sealed_ticket_opens_and_a_foreign_one_is_rejected() {
        let t = CountedTickets::new(counts()).unwrap();
        let other = CountedTickets::new(counts()).unwrap();
        let sealed = t.encrypt(b"session state").unwrap();
        assert_ne!(&sealed[..], b"session state");
        assert_eq!(t.decrypt(&sealed).as_deref(), Some(&b"session state"[..]));
        // Another process (another key) cannot open it; neither can a tampered copy.
        assert_eq!(other.decrypt(&sealed), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(t.decrypt(&tampered), None);
        assert_eq!(t.counts.issued.get(), 1);
        assert_eq!(t.counts.accepted.get(), 1);
        assert_eq!(t.counts.rejected.get(), 1);
        assert_eq!(other.counts.rejected.get(), 1);
        assert!(t.enabled() && t.lifetime() > 0);
    }
}
