//! The TLS edge: owns the handshake so that every failure is counted by reason and logged at
//! debug level (a client that sends garbage or an unknown SNI is routine, not an error), and
//! so the handshake timeout is ours rather than pingora's fixed 60 s.
//!
//! Before the handshake, the client's address must be under its per-client limits
//! (`client_limits`): a refusal is a closed socket, counted, with no TLS work spent on it.
//! From a trusted load balancer that address is the one its PROXY protocol header carries,
//! read first (`proxy_protocol`); it then stands in the socket digest for the TCP peer's.
//!
//! After the handshake the connection goes by ALPN: h2 to pingora's HTTP application
//! (keep-alive reuse loops here, so a reused connection is never handshaken twice), HTTP/1.1
//! or no ALPN to kanmon's own HTTP/1.1 lane (`h1`).

use std::{cell::Cell, net::IpAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use pingora::{
    apps::ServerApp,
    listeners::tls::Acceptor,
    protocols::{l4::stream::Stream as L4Stream, Stream, ALPN},
    server::ShutdownWatch,
};

use crate::{
    client_limits::{ClientLimits, ClientSlot},
    clock::Clock,
    h1::Lane,
    inflight::Inflight,
    metrics::Metrics,
    proxy_protocol::{accept, Policy, Refusal, Versions},
    rehome,
};

tokio::task_local! {
    /// Set by the certificate resolver when it refused the handshake (and counted why), so
    /// the edge does not count the same failure again as a protocol error.
    pub(crate) static REFUSED_BY_RESOLVER: Cell<bool>;
}

/// Marks the current handshake as refused by the resolver (no-op outside a handshake).
pub(crate) fn mark_refused() {
    if REFUSED_BY_RESOLVER.try_with(|c| c.set(true)).is_err() {
        // Not inside an edge handshake (e.g. a unit test calling the resolver directly).
    }
}

/// What the edge allows a connection before and during its handshake.
pub struct EdgeLimits {
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Per-client-address limits on open and new connections.
    pub clients: Arc<ClientLimits>,
    /// Which peers send a PROXY protocol header first.
    pub proxy_protocol: Policy,
}

/// Where a connection stands with the per-client limits before its handshake.
enum Admission {
    /// Admitted under its TCP peer's address.
    Admitted(ClientSlot),
    /// From a trusted balancer: admitted once its PROXY protocol header names the client.
    AfterHeader(Versions),
}

/// TLS termination in front of an HTTP application.
pub struct EdgeApp<A> {
    acceptor: Acceptor,
    inner: Arc<A>,
    lane: Arc<Lane>,
    handshake_timeout: Duration,
    clients: Arc<ClientLimits>,
    proxy_protocol: Policy,
    clock: Clock,
    metrics: Metrics,
    connections: Inflight,
    /// Re-register each connection with the serving thread's I/O driver (per-thread runtimes).
    rehome: bool,
}

impl<A> EdgeApp<A> {
    /// Terminates TLS with `acceptor`, then hands h2 connections to `inner` and HTTP/1.1 ones
    /// to `lane`; every connection is counted in `connections` from accept to close
    /// (graceful shutdown waits on it).
    pub fn new(
        acceptor: Acceptor,
        inner: Arc<A>,
        lane: Arc<Lane>,
        limits: EdgeLimits,
        metrics: Metrics,
        connections: Inflight,
        rehome: bool,
    ) -> Self {
        Self {
            acceptor,
            inner,
            lane,
            handshake_timeout: limits.handshake_timeout,
            clients: limits.clients,
            proxy_protocol: limits.proxy_protocol,
            clock: Clock::new(),
            metrics,
            connections,
            rehome,
        }
    }

    fn failed(&self, reason: &'static str, error: &dyn std::fmt::Display) {
        self.metrics.tls_failures.with_label_values(&[reason]).inc();
        tracing::debug!(reason, error = %error, "TLS handshake failed");
    }

    /// The client's place under its address's limits, or `None` (counted) when refused.
    fn admit(&self, client_ip: Option<IpAddr>) -> Option<ClientSlot> {
        match self.clients.admit(client_ip, self.clock.now_ms()) {
            Ok(slot) => Some(slot),
            Err(refused) => {
                let reason = refused.reason();
                self.metrics
                    .refused_connections
                    .with_label_values(&[reason])
                    .inc();
                let client = client_ip.map(tracing::field::display);
                tracing::debug!(
                    reason,
                    client,
                    "connection refused before the TLS handshake"
                );
                None
            }
        }
    }

    /// Reads the PROXY protocol header of a connection from a trusted balancer and makes its
    /// source the connection's address; `None` (counted) when the connection must close.
    async fn proxy_header(
        &self,
        l4: &mut L4Stream,
        versions: Versions,
        peer: Option<IpAddr>,
    ) -> Option<Option<IpAddr>> {
        match accept::read_header(l4, versions, self.proxy_protocol.timeout).await {
            Ok(Some(header)) => Some(accept::carry_client_address(l4, &header, peer)),
            Ok(None) => {
                tracing::debug!("trusted proxy closed without a PROXY protocol header");
                None
            }
            Err(refusal) => {
                self.metrics.proxy_protocol_refused(refusal);
                let peer = peer.map(tracing::field::display);
                tracing::debug!(
                    reason = refusal.reason(),
                    peer,
                    "PROXY protocol header refused"
                );
                None
            }
        }
    }

    /// Whether an untrusted peer starts with a PROXY protocol header (counted; the
    /// connection must close). Only looked for while the protocol is on.
    async fn untrusted_header(&self, l4: &mut L4Stream, peer: Option<IpAddr>) -> bool {
        if !self.proxy_protocol.enabled() {
            return false;
        }
        match accept::sends_header(l4).await {
            Ok(false) => false,
            Ok(true) => {
                self.metrics.proxy_protocol_refused(Refusal::Untrusted);
                let peer = peer.map(tracing::field::display);
                tracing::debug!(
                    peer,
                    "PROXY protocol header from an untrusted source refused"
                );
                true
            }
            Err(error) => {
                tracing::debug!(%error, "connection failed before the TLS handshake");
                true
            }
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for EdgeApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer: Option<IpAddr> = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let expects_header = self.proxy_protocol.expects_header(peer);
        // Refused before anything else is spent on it, unless the client's address is still
        // to come in a PROXY protocol header.
        let admission = match expects_header {
            Some(versions) => Admission::AfterHeader(versions),
            None => Admission::Admitted(self.admit(peer)?),
        };
        let _connection = self.connections.enter();
        // The listener is plain TCP, so the stream is pingora's L4 stream; the acceptor needs
        // the concrete type.
        let l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => *l4,
            Err(_) => {
                tracing::warn!("edge listener got a non-TCP stream; closing it");
                return None;
            }
        };
        let mut l4 = if self.rehome {
            match rehome::onto_current_runtime(l4) {
                Ok(moved) => moved,
                Err(rehome::Rehome::Kept { stream, error }) => {
                    tracing::debug!(%error, "connection kept on the accepting thread's driver");
                    *stream
                }
                Err(rehome::Rehome::Lost(error)) => {
                    tracing::warn!(%error, "connection lost while moving it to its thread");
                    return None;
                }
            }
        } else {
            l4
        };
        // After the move: what is read past the header is put back into this stream.
        let slot = match admission {
            Admission::Admitted(slot) => slot,
            Admission::AfterHeader(versions) => {
                let client_ip = self.proxy_header(&mut l4, versions, peer).await?;
                self.admit(client_ip)?
            }
        };
        let untrusted_header = expects_header.is_none();
        let handshake = REFUSED_BY_RESOLVER.scope(Cell::new(false), async {
            if untrusted_header && self.untrusted_header(&mut l4, peer).await {
                return None;
            }
            let result = self.acceptor.tls_handshake(l4).await;
            Some((result, REFUSED_BY_RESOLVER.with(Cell::get)))
        });
        let tls: Stream = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(None) => return None,
            Ok(Some((Ok(tls), _))) => Box::new(tls),
            Ok(Some((Err(e), true))) => {
                tracing::debug!(error = %e, "TLS handshake refused: no certificate for this name");
                return None;
            }
            Ok(Some((Err(e), false))) => {
                self.failed("protocol", &e);
                return None;
            }
            Err(elapsed) => {
                self.failed("timeout", &elapsed);
                return None;
            }
        };
        if !matches!(tls.selected_alpn_proto(), Some(ALPN::H2)) {
            self.lane.serve(tls, shutdown, slot).await;
            return None;
        }
        let mut next = self.inner.process_new(tls, shutdown).await;
        while let Some(reused) = next {
            next = self.inner.process_new(reused, shutdown).await;
        }
        drop(slot);
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
