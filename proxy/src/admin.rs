//! The admin listener: `/metrics`, `/healthz` (the process runs) and `/readyz` (certificates
//! and a first node table are loaded: this replica can serve, so a load balancer may send it
//! traffic).
//!
//! A stale discovery source does not make a replica unready: every replica watches the same
//! API, so an API outage would turn them all unready at once and the cloud load balancer would
//! drop the whole edge, while the last good table still routes. Staleness is a metric
//! (`kanmon_discovery_last_success_timestamp_seconds`) and an alert, and `/readyz` says it in
//! its body.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::{apps::http_app::ServeHttp, protocols::http::ServerSession};

use crate::{discovery::Publisher, metrics::Metrics, tls::CertStore};

/// The admin HTTP application.
pub struct AdminApp {
    metrics: Metrics,
    certs: Arc<CertStore>,
    publisher: Publisher,
}

impl AdminApp {
    /// Admin over the proxy's metrics, certificates and discovery.
    pub fn new(metrics: Metrics, certs: Arc<CertStore>, publisher: Publisher) -> Self {
        Self {
            metrics,
            certs,
            publisher,
        }
    }

    /// `Ok` with the body of a ready answer, `Err` with why the replica cannot serve.
    fn readiness(&self) -> Result<String, String> {
        if self.certs.is_empty() {
            return Err("not ready: no certificate loaded".into());
        }
        if !self.publisher.loaded() {
            return Err("not ready: no node table loaded yet".into());
        }
        Ok(match self.publisher.stale() {
            Some(stale) => format!("ready (stale: {stale})"),
            None => "ready".into(),
        })
    }
}

fn text(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => text(200, "text/plain; version=0.0.4", self.metrics.render()),
            "/healthz" => text(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.readiness() {
                Ok(body) => text(200, "text/plain", format!("{body}\n").into_bytes()),
                Err(why) => text(503, "text/plain", format!("{why}\n").into_bytes()),
            },
            _ => text(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
