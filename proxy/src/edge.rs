//! The TLS edge: owns the handshake so that every failure is counted by reason and logged at
//! debug level (a client that sends garbage or an unknown SNI is routine, not an error), and
//! so the handshake timeout is ours rather than pingora's fixed 60 s.
//!
//! Before the handshake, the client's address must be under its per-client limits
//! (`client_limits`): a refusal is a closed socket, counted, with no TLS work spent on it.
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
    client_limits::ClientLimits, clock::Clock, h1::Lane, inflight::Inflight, metrics::Metrics,
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
}

/// TLS termination in front of an HTTP application.
pub struct EdgeApp<A> {
    acceptor: Acceptor,
    inner: Arc<A>,
    lane: Arc<Lane>,
    handshake_timeout: Duration,
    clients: Arc<ClientLimits>,
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
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for EdgeApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Refused before anything else is spent on it. The address is the TCP peer's (the
        // place to take it from a PROXY-protocol header instead, once there is one).
        let client_ip: Option<IpAddr> = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let slot = match self.clients.admit(client_ip, self.clock.now_ms()) {
            Ok(slot) => slot,
            Err(refused) => {
                let reason = refused.reason();
                self.metrics
                    .refused_connections
                    .with_label_values(&[reason])
                    .inc();
                tracing::debug!(reason, "connection refused before the TLS handshake");
                return None;
            }
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
        let l4 = if self.rehome {
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
        let handshake = REFUSED_BY_RESOLVER.scope(Cell::new(false), async {
            let result = self.acceptor.tls_handshake(l4).await;
            (result, REFUSED_BY_RESOLVER.with(Cell::get))
        });
        let tls: Stream = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok((Ok(tls), _)) => Box::new(tls),
            Ok((Err(e), true)) => {
                tracing::debug!(error = %e, "TLS handshake refused: no certificate for this name");
                return None;
            }
            Ok((Err(e), false)) => {
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
