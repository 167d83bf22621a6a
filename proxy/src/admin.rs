//! The admin listener: `/metrics`, `/healthz` (the process runs) and `/readyz` (certificates
//! and a first node table are loaded, so a load balancer may send traffic; `stale` once the
//! discovery source has been out of contact for longer than `discovery.stale_after`).

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

    fn readiness(&self) -> Result<(), String> {
        if self.certs.is_empty() {
            return Err("not ready: no certificate loaded".into());
        }
        if !self.publisher.loaded() {
            return Err("not ready: no node table loaded yet".into());
        }
        // A stale table still routes (it is the last good one), but a load balancer should
        // prefer a proxy that can see the cluster.
        if let Some(stale) = self.publisher.stale() {
            return Err(format!("stale: {stale}"));
        }
        Ok(())
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
                Ok(()) => text(200, "text/plain", b"ready\n".to_vec()),
                Err(why) => text(503, "text/plain", format!("{why}\n").into_bytes()),
            },
            _ => text(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}
