//! The request-path view of the configuration: only what the hot path reads, already in
//! the units it needs.

use std::time::Duration;

use crate::config::ProxyConfig;

/// Settings read per request.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lower-case base domain.
    pub base_domain: String,
    /// The console hostname rule (`routing.console_label`).
    pub console: kanmon_router::ConsoleNames,
    /// Header block limit (431 past it).
    pub max_header_bytes: usize,
    /// Time allowed for a request head, and a body's grace before `min_body_rate`.
    pub request_read_timeout: Duration,
    /// Idle limit of an upgraded WebSocket.
    pub websocket_idle_timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Passive ejection period in ms.
    pub eject_for_ms: u64,
    /// Idle time of pooled upstream connections.
    pub pool_idle_timeout: Duration,
    /// Time a node has to start its response, and between reads of its body.
    pub response_timeout: Duration,
    /// Time one write to a client or a node may take.
    pub write_timeout: Duration,
    /// Bytes/s a request body must average after its grace (`request_read_timeout`).
    pub min_body_rate: u64,
}

impl From<&ProxyConfig> for Settings {
    fn from(c: &ProxyConfig) -> Self {
        Self {
            base_domain: c
                .routing
                .base_domain
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            // Validated with the config (`routing.console_label`); the default only stands in
            // for a config built in code without validation.
            console: kanmon_router::ConsoleNames::parse(&c.routing.console_label)
                .unwrap_or_default(),
            max_header_bytes: c.limits.max_header_bytes,
            request_read_timeout: c.limits.request_read_timeout,
            websocket_idle_timeout: c.websocket.idle_timeout,
            connect_timeout: c.upstream.connect_timeout,
            eject_for_ms: c.upstream.eject_for.as_millis() as u64,
            pool_idle_timeout: c.upstream.pool_idle_timeout,
            response_timeout: c.upstream.response_timeout,
            write_timeout: c.limits.write_timeout,
            min_body_rate: c.limits.min_body_rate,
        }
    }
}
