//! Every metric the proxy exports, in one place (DESIGN.md, "Metrics").
//!
//! Handles are created once, registered in the proxy's own registry and passed around, so
//! tests can read a counter and two proxies in one process never collide. Label values come
//! only from known deployments, nodes and status codes: a hostname that is no deployment is
//! counted as `deployment="unknown"`, so a client can never grow the metric set.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Metric names: the contract other tools (dashboards, alerts) rely on.
pub mod names {
    /// Requests by the status sent to the client (`101` for WebSocket upgrades).
    pub const HTTP_REQUESTS: &str = "kanmon_http_requests_total";
    /// Request duration (for WebSockets: until the upgrade is answered).
    pub const HTTP_REQUEST_DURATION: &str = "kanmon_http_request_duration_seconds";
    /// Active proxied WebSocket connections.
    pub const WEBSOCKET_CONNECTIONS: &str = "kanmon_websocket_connections";
    /// TLS handshakes refused or failed, by reason.
    pub const TLS_HANDSHAKE_FAILURES: &str = "kanmon_tls_handshake_failures_total";
    /// Failed connects to nodes.
    pub const UPSTREAM_CONNECT_FAILURES: &str = "kanmon_upstream_connect_failures_total";
    /// Nodes by state.
    pub const NODES: &str = "kanmon_nodes";
    /// Table publishes by discovery source.
    pub const DISCOVERY_UPDATES: &str = "kanmon_discovery_updates_total";
    /// Discovery failures (invalid file, API errors) by source.
    pub const DISCOVERY_ERRORS: &str = "kanmon_discovery_errors_total";
    /// Unix time of the last successful discovery update, by source.
    pub const DISCOVERY_LAST_SUCCESS: &str = "kanmon_discovery_last_success_timestamp_seconds";
    /// Certificate files that failed to load (the previous certificate stays in use).
    pub const CERT_RELOAD_ERRORS: &str = "kanmon_tls_certificate_errors_total";
    /// Hostnames with a loaded certificate.
    pub const CERTIFICATES: &str = "kanmon_tls_certificates";
    /// TLS session tickets issued, accepted (resumed handshakes) and rejected.
    pub const SESSION_TICKETS: &str = "kanmon_tls_session_tickets_total";
    /// Session-ticket key files that failed to load (the keys in use stay).
    pub const TICKET_KEY_ERRORS: &str = "kanmon_tls_ticket_key_errors_total";
    /// Requests refused for bad input or limits, by reason.
    pub const REJECTED_REQUESTS: &str = "kanmon_rejected_requests_total";
    /// Generation of the node health table in force.
    pub const TABLE_GENERATION: &str = "kanmon_table_generation";
    /// Discovery objects (or endpoints) refused by the tenant policy, by source and reason.
    pub const DISCOVERY_REJECTED: &str = "kanmon_discovery_rejected_total";
    /// 1 while the cluster's EndpointSlices lack the `serving`/`terminating` conditions.
    pub const DISCOVERY_CONDITIONS_MISSING: &str = "kanmon_discovery_kubernetes_conditions_missing";
    /// Connections refused before the TLS handshake by a per-client limit, by reason.
    pub const CONNECTIONS_REFUSED: &str = "kanmon_connections_refused_total";
    /// Connections cut because a peer was too slow (a write past `write_timeout`, a body
    /// under `min_body_rate`, a head past `request_read_timeout`), by reason.
    pub const CONNECTIONS_CUT: &str = "kanmon_connections_cut_total";
    /// Connections closed by the PROXY protocol rules (missing, untrusted or bad header), by
    /// reason.
    pub const PROXY_PROTOCOL_ERRORS: &str = "kanmon_proxy_protocol_errors_total";
    /// Console requests refused by the deployment's allow-list, by reason
    /// (`kanmon_router::ConsoleRefusal::reason`).
    pub const CONSOLE_REFUSED: &str = "kanmon_console_refused_total";
    /// TLS handshakes running now (admitted by the handshake queue).
    pub const HANDSHAKES_IN_PROGRESS: &str = "kanmon_tls_handshakes_in_progress";
    /// TLS handshakes waiting for a slot, by kind (`full`, `resumed`).
    pub const HANDSHAKES_QUEUED: &str = "kanmon_tls_handshakes_queued";
    /// Time handshakes that had to wait spent in the queue (admitted or refused).
    pub const HANDSHAKE_QUEUE_SECONDS: &str = "kanmon_tls_handshake_queue_seconds";
}

/// Handshake admission: slots in use, the queue, and time spent in it (kept apart so it
/// merges cleanly).
#[derive(Clone)]
pub struct Admission {
    /// `kanmon_tls_handshakes_in_progress`
    pub in_progress: IntGauge,
    /// `kanmon_tls_handshakes_queued{kind}`
    pub queued: IntGaugeVec,
    /// `kanmon_tls_handshake_queue_seconds`
    pub queue_seconds: prometheus::Histogram,
}

impl Admission {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let admission = Self {
            in_progress: IntGauge::with_opts(opts(
                names::HANDSHAKES_IN_PROGRESS,
                "TLS handshakes running now, at most limits.max_handshakes_in_progress.",
            ))?,
            queued: IntGaugeVec::new(
                opts(names::HANDSHAKES_QUEUED, "TLS handshakes waiting for a slot, by kind: full, or resumed (the ClientHello offers a pre-shared key)."),
                &["kind"],
            )?,
            queue_seconds: prometheus::Histogram::with_opts(
                HistogramOpts::new(names::HANDSHAKE_QUEUE_SECONDS, "Time TLS handshakes that had to wait spent queued, admitted or refused at limits.handshake_queue_timeout.")
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
        };
        for kind in crate::handshake_queue::Kind::ALL {
            admission.queued.with_label_values(&[kind.label()]);
        }
        registry.register(Box::new(admission.in_progress.clone()))?;
        registry.register(Box::new(admission.queued.clone()))?;
        registry.register(Box::new(admission.queue_seconds.clone()))?;
        Ok(admission)
    }

    /// The handles the handshake gate keeps current.
    pub fn gate(&self) -> crate::handshake_gate::GateMetrics {
        use crate::handshake_queue::Kind;
        crate::handshake_gate::GateMetrics {
            in_progress: self.in_progress.clone(),
            queued_full: self.queued.with_label_values(&[Kind::Full.label()]),
            queued_resumed: self.queued.with_label_values(&[Kind::Resumed.label()]),
            queue_seconds: self.queue_seconds.clone(),
        }
    }
}

/// Discovery hardening: refusals and cluster requirements (kept apart so it merges cleanly).
#[derive(Clone)]
pub struct DiscoveryChecks {
    /// `kanmon_discovery_rejected_total{source,reason}`
    pub rejected: IntCounterVec,
    /// `kanmon_discovery_kubernetes_conditions_missing`
    pub conditions_missing: IntGauge,
}

impl DiscoveryChecks {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let checks = Self {
            rejected: IntCounterVec::new(
                opts(names::DISCOVERY_REJECTED, "Services, slices or endpoints refused by the discovery policy (namespace ownership, allowed networks, address type), by reason."),
                &["source", "reason"],
            )?,
            conditions_missing: IntGauge::with_opts(opts(
                names::DISCOVERY_CONDITIONS_MISSING,
                "1 when the cluster's EndpointSlices carry no serving/terminating conditions (Kubernetes < 1.22): pods that terminate are unhealthy, not draining.",
            ))?,
        };
        registry.register(Box::new(checks.rejected.clone()))?;
        registry.register(Box::new(checks.conditions_missing.clone()))?;
        Ok(checks)
    }
}

/// All metric handles of one proxy.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `kanmon_http_requests_total{deployment,zone,status}`
    pub requests: IntCounterVec,
    /// `kanmon_http_request_duration_seconds{deployment,zone}`
    pub duration: HistogramVec,
    /// `kanmon_websocket_connections{deployment,zone,node}`
    pub websockets: IntGaugeVec,
    /// `kanmon_tls_handshake_failures_total{reason}`
    pub tls_failures: IntCounterVec,
    /// `kanmon_upstream_connect_failures_total{deployment,zone,node}`
    pub upstream_failures: IntCounterVec,
    /// `kanmon_nodes{deployment,zone,state}`
    pub nodes: IntGaugeVec,
    /// `kanmon_discovery_updates_total{source}`
    pub discovery_updates: IntCounterVec,
    /// `kanmon_discovery_errors_total{source}`
    pub discovery_errors: IntCounterVec,
    /// `kanmon_discovery_last_success_timestamp_seconds{source}`
    pub discovery_last_success: IntGaugeVec,
    /// `kanmon_tls_certificate_errors_total`
    pub cert_errors: IntCounter,
    /// `kanmon_tls_certificates`
    pub certificates: IntGauge,
    /// `kanmon_tls_session_tickets_total{event}`
    pub session_tickets: IntCounterVec,
    /// `kanmon_tls_ticket_key_errors_total`
    pub ticket_key_errors: IntCounter,
    /// `kanmon_rejected_requests_total{reason}`
    pub rejected: IntCounterVec,
    /// `kanmon_table_generation`
    pub generation: IntGauge,
    /// Discovery refusals and requirement checks.
    pub discovery_checks: DiscoveryChecks,
    /// `kanmon_connections_refused_total{reason}` (`client_connections`, `client_handshakes`,
    /// `admission`: the handshake queue was full or the wait reached its timeout)
    pub refused_connections: IntCounterVec,
    /// `kanmon_connections_cut_total{reason}` (`client_write_timeout`, `node_write_timeout`,
    /// `slow_body`, `slow_head`)
    pub cut_connections: IntCounterVec,
    /// `kanmon_proxy_protocol_errors_total{reason}` (`proxy_protocol::Refusal::reason`)
    pub proxy_protocol_errors: IntCounterVec,
    /// `kanmon_console_refused_total{deployment,zone,reason}`: the deployment is one in the
    /// table, the reason one of `kanmon_router::ConsoleRefusal::ALL`.
    pub console_refused: IntCounterVec,
    /// Handshake admission (`handshake_gate`).
    pub admission: Admission,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let deployment = &["deployment", "zone"];
        let m = Self {
            requests: IntCounterVec::new(
                opts(names::HTTP_REQUESTS, "Requests by the status code sent to the client; 101 counts WebSocket upgrades."),
                &["deployment", "zone", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(names::HTTP_REQUEST_DURATION, "Time from request to the end of the response (for WebSockets, until the upgrade is answered).")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0]),
                deployment,
            )?,
            websockets: IntGaugeVec::new(
                opts(names::WEBSOCKET_CONNECTIONS, "Active proxied WebSocket connections."),
                &["deployment", "zone", "node"],
            )?,
            tls_failures: IntCounterVec::new(
                opts(names::TLS_HANDSHAKE_FAILURES, "TLS handshakes refused or failed, by reason."),
                &["reason"],
            )?,
            upstream_failures: IntCounterVec::new(
                opts(names::UPSTREAM_CONNECT_FAILURES, "Failed connection attempts to nodes."),
                &["deployment", "zone", "node"],
            )?,
            nodes: IntGaugeVec::new(
                opts(names::NODES, "Nodes in the health table, by state."),
                &["deployment", "zone", "state"],
            )?,
            discovery_updates: IntCounterVec::new(
                opts(names::DISCOVERY_UPDATES, "Health table updates published, by discovery source."),
                &["source"],
            )?,
            discovery_errors: IntCounterVec::new(
                opts(names::DISCOVERY_ERRORS, "Discovery failures; the last good table stays in force."),
                &["source"],
            )?,
            discovery_last_success: IntGaugeVec::new(
                opts(names::DISCOVERY_LAST_SUCCESS, "Unix time of the last successful discovery update."),
                &["source"],
            )?,
            cert_errors: IntCounter::with_opts(opts(
                names::CERT_RELOAD_ERRORS,
                "Certificate files that failed to load; the previous certificate for the hostname stays in use.",
            ))?,
            certificates: IntGauge::with_opts(opts(names::CERTIFICATES, "Hostnames with a loaded certificate."))?,
            session_tickets: IntCounterVec::new(
                opts(names::SESSION_TICKETS, "TLS session tickets: issued after a handshake, accepted (the handshake resumed) or rejected (expired key, another process's ticket)."),
                &["event"],
            )?,
            ticket_key_errors: IntCounter::with_opts(opts(
                names::TICKET_KEY_ERRORS,
                "Session-ticket key files that failed to load; the keys in use stay.",
            ))?,
            rejected: IntCounterVec::new(
                opts(names::REJECTED_REQUESTS, "Requests refused for bad input or limits, by reason."),
                &["reason"],
            )?,
            generation: IntGauge::with_opts(opts(names::TABLE_GENERATION, "Generation of the node health table in force."))?,
            discovery_checks: DiscoveryChecks::new(&registry)?,
            admission: Admission::new(&registry)?,
            refused_connections: IntCounterVec::new(
                opts(names::CONNECTIONS_REFUSED, "Connections refused before the TLS handshake by a per-client-address limit or by handshake admission (reason admission), by reason."),
                &["reason"],
            )?,
            cut_connections: IntCounterVec::new(
                opts(names::CONNECTIONS_CUT, "Connections cut because a peer was too slow: a write past limits.write_timeout, a request body under limits.min_body_rate."),
                &["reason"],
            )?,
            proxy_protocol_errors: proxy_protocol_errors()?,
            console_refused: IntCounterVec::new(
                opts(names::CONSOLE_REFUSED, "Console requests refused (403) by the deployment's console allow-list: closed (empty list), not_allowed, no_client_address."),
                &["deployment", "zone", "reason"],
            )?,
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.duration.clone()))?;
        r.register(Box::new(m.websockets.clone()))?;
        r.register(Box::new(m.tls_failures.clone()))?;
        r.register(Box::new(m.upstream_failures.clone()))?;
        r.register(Box::new(m.nodes.clone()))?;
        r.register(Box::new(m.discovery_updates.clone()))?;
        r.register(Box::new(m.discovery_errors.clone()))?;
        r.register(Box::new(m.discovery_last_success.clone()))?;
        r.register(Box::new(m.cert_errors.clone()))?;
        r.register(Box::new(m.certificates.clone()))?;
        r.register(Box::new(m.session_tickets.clone()))?;
        r.register(Box::new(m.ticket_key_errors.clone()))?;
        r.register(Box::new(m.rejected.clone()))?;
        r.register(Box::new(m.generation.clone()))?;
        r.register(Box::new(m.refused_connections.clone()))?;
        r.register(Box::new(m.cut_connections.clone()))?;
        r.register(Box::new(m.proxy_protocol_errors.clone()))?;
        r.register(Box::new(m.console_refused.clone()))?;
        for reason in ["client_connections", "client_handshakes", "admission"] {
            m.refused_connections.with_label_values(&[reason]);
        }
        for reason in [
            "client_write_timeout",
            "node_write_timeout",
            "slow_body",
            "slow_head",
        ] {
            m.cut_connections.with_label_values(&[reason]);
        }
        // Pre-create the handshake failure reasons so dashboards see zeros, not gaps.
        for reason in ["unknown_sni", "no_sni", "protocol", "timeout"] {
            m.tls_failures.with_label_values(&[reason]);
        }
        for event in ["issued", "accepted", "rejected"] {
            m.session_tickets.with_label_values(&[event]);
        }
        Ok(m)
    }

    /// Counts `refusal` of a connection by the PROXY protocol rules.
    pub fn proxy_protocol_refused(&self, refusal: crate::proxy_protocol::Refusal) {
        self.proxy_protocol_errors
            .with_label_values(&[refusal.reason()])
            .inc();
    }

    /// Creates a discovery source's counters at zero, so `increase()` sees its first
    /// update and error (a series that appears at 1 is invisible to it).
    pub fn init_discovery_source(&self, source: &str, reasons: &[&str]) {
        self.discovery_updates.with_label_values(&[source]);
        self.discovery_errors.with_label_values(&[source]);
        for reason in reasons {
            self.discovery_checks
                .rejected
                .with_label_values(&[source, reason]);
        }
    }

    /// The session-ticket counters, for the ticketer.
    pub fn ticket_counts(&self) -> crate::tls::tickets::TicketCounts {
        let event = |e: &str| self.session_tickets.with_label_values(&[e]);
        crate::tls::tickets::TicketCounts {
            issued: event("issued"),
            accepted: event("accepted"),
            rejected: event("rejected"),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// `kanmon_proxy_protocol_errors_total`, every reason at zero.
fn proxy_protocol_errors() -> Result<IntCounterVec, prometheus::Error> {
    let errors = IntCounterVec::new(
        opts(
            names::PROXY_PROTOCOL_ERRORS,
            "Connections closed by the PROXY protocol rules: a header missing from a trusted balancer, sent from an untrusted source, malformed, truncated, oversized or late, by reason.",
        ),
        &["reason"],
    )?;
    for refusal in crate::proxy_protocol::Refusal::ALL {
        errors.with_label_values(&[refusal.reason()]);
    }
    Ok(errors)
}
