//! The TLS edge: owns the handshake so that every failure is counted by reason and logged at
//! debug level (a client that sends garbage or an unknown SNI is routine, not an error), and
//! so the handshake timeout is ours rather than pingora's fixed 60 s.
//!
//! Before the handshake, the client's address must be under its per-client limits
//! (`client_limits`): a refusal is a closed socket, counted, with no TLS work spent on it.
//! From a trusted load balancer that address is the one its PROXY protocol header carries,
//! read first (`proxy_protocol`); it then stands in the socket digest for the TCP peer's.
//!
//! Then the handshake is admitted (`handshake_gate`): its ClientHello is peeked (resumed or
//! full, `tls::client_hello`) and it waits for one of the process's handshake slots, or is
//! refused with a closed socket, still before any crypto. The handshake timeout covers the
//! client's first flight and the handshake itself; the wait for a slot is bounded apart by
//! `handshake_queue_timeout`.
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
use prometheus::IntCounter;
use tokio::time::Instant;

use crate::{
    client_limits::{ClientLimits, ClientSlot},
    clock::Clock,
    h1::Lane,
    handshake_gate::{HandshakeGate, Permit},
    handshake_queue::{Kind, QueueLimits},
    inflight::Inflight,
    metrics::Metrics,
    proxy_protocol::{accept, Policy, Refusal, Versions},
    rehome,
    tls::client_hello::{self, Hello},
};

/// How long the rest of a ClientHello may take once its first bytes are in: a hello is one
/// flight (a segment or two), so more is a stalled or hostile client, whose handshake is then
/// taken as a full one and left to the handshake timeout.
const HELLO_REST_WITHIN: Duration = Duration::from_secs(1);

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
    /// Handshake admission for the whole process; `None`: every handshake starts at once.
    pub handshakes: Option<QueueLimits>,
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
    /// One gate for all threads: their handshakes compete for the same cores.
    gate: Option<HandshakeGate>,
    refused_by_admission: IntCounter,
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
            gate: limits
                .handshakes
                .map(|q| HandshakeGate::new(q, metrics.admission.gate())),
            refused_by_admission: metrics
                .refused_connections
                .with_label_values(&["admission"]),
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

    /// The client's first flight, before any TLS work: whether it brought a PROXY protocol
    /// header it may not send (`None`, counted: close) and, with admission on, what its
    /// ClientHello offers.
    async fn first_flight(
        &self,
        l4: &mut L4Stream,
        peer: Option<IpAddr>,
        untrusted: bool,
    ) -> Option<Hello> {
        if untrusted && self.untrusted_header(l4, peer).await {
            return None;
        }
        Some(match self.gate {
            Some(_) => client_hello::peek(l4, HELLO_REST_WITHIN).await,
            None => Hello::NotTls,
        })
    }

    /// A handshake slot for a connection whose hello says `hello`: `Ok(None)` when it needs
    /// none (admission off, or not TLS: the acceptor refuses it without crypto), `Err` (counted)
    /// when refused.
    async fn admit_handshake(&self, hello: Hello) -> Result<Option<Permit<'_>>, ()> {
        let kind = match hello {
            Hello::NotTls => return Ok(None),
            Hello::Full => Kind::Full,
            Hello::Resumption => Kind::Resumed,
        };
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        match gate.admit(kind).await {
            Ok(permit) => Ok(Some(permit)),
            Err(refusal) => {
                self.refused_by_admission.inc();
                tracing::debug!(
                    reason = "admission",
                    why = refusal.reason(),
                    kind = kind.label(),
                    "connection refused before the TLS handshake"
                );
                Err(())
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
        let started = Instant::now();
        let first = self.first_flight(&mut l4, peer, expects_header.is_none());
        let hello = match tokio::time::timeout_at(started + self.handshake_timeout, first).await {
            Ok(Some(hello)) => hello,
            Ok(None) => return None,
            Err(elapsed) => {
                self.failed("timeout", &elapsed);
                return None;
            }
        };
        let queued_at = Instant::now();
        let permit = self.admit_handshake(hello).await.ok()?;
        // The handshake's own time: what the first flight left of the timeout; the wait for
        // a slot is not taken out of it.
        let deadline = started + self.handshake_timeout + queued_at.elapsed();
        let handshake = REFUSED_BY_RESOLVER.scope(Cell::new(false), async {
            let result = self.acceptor.tls_handshake(l4).await;
            (result, REFUSED_BY_RESOLVER.with(Cell::get))
        });
        let outcome = tokio::time::timeout_at(deadline, handshake).await;
        // The slot is the handshake's only: the connection it opens does not keep it.
        drop(permit);
        let tls: Stream = match outcome {
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
