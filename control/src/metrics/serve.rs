//! The control plane's admin listener (`GET /metrics`, `GET /healthz`) and the API layer that
//! counts requests by route.

use std::sync::{Arc, Mutex};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use super::{ControlMetrics, DatabaseSample, NodeSample, UNMATCHED_ROUTE};
use crate::{api::refusals::AuthFailures, driver::LocalDriver, runtime::Runtime};

/// The deployments' databases as a scrape sees them (under `kanmon up`: the local PostgreSQL
/// servers, sampled on an interval by `crate::up::postgres::DatabaseStats`).
pub trait DatabaseSource: Send + Sync + std::fmt::Debug {
    /// One sample per running database; called at scrape time, so it must not wait on a
    /// database.
    fn samples(&self) -> Vec<DatabaseSample>;
}

/// What a scrape reads: the runtime's state and metrics, the API's refusal counter and, under
/// the local driver, the node processes and the databases.
#[derive(Debug, Clone)]
pub struct MetricsSources {
    /// The control plane.
    pub rt: Runtime,
    /// The API's refused authentications (the counter the API records into).
    pub auth: Arc<AuthFailures>,
    /// The local driver, whose node processes are sampled from `/proc`.
    pub local: Option<Arc<LocalDriver>>,
    /// The deployments' databases, where the platform runs them.
    pub databases: Option<Arc<dyn DatabaseSource>>,
    /// One scrape at a time: gauges are reset and set again from a snapshot.
    scrape: Arc<Mutex<()>>,
    /// The certificate keeper's series, when it runs.
    certs: Option<super::certs::CertMetrics>,
}

impl MetricsSources {
    /// Sources over `rt`, `auth` and, when nodes are local processes, `local`.
    pub fn new(rt: Runtime, auth: Arc<AuthFailures>, local: Option<Arc<LocalDriver>>) -> Self {
        Self {
            rt,
            auth,
            local,
            databases: None,
            scrape: Arc::default(),
            certs: None,
        }
    }

    /// These sources with the deployments' databases.
    pub fn with_databases(mut self, databases: Arc<dyn DatabaseSource>) -> Self {
        self.databases = Some(databases);
        self
    }

    /// Also renders the certificate keeper's series.
    pub fn with_certs(mut self, certs: super::certs::CertMetrics) -> Self {
        self.certs = Some(certs);
        self
    }

    /// Brings the state gauges up to date and renders every series.
    pub fn render(&self) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let m = self.rt.metrics();
        m.observe_deployments(self.rt.queue_depths().iter().map(|(d, q)| (d, *q)));
        m.observe_auth_failures(self.auth.total());
        let samples: Vec<NodeSample> = self
            .local
            .iter()
            .flat_map(|l| l.node_pids())
            .filter_map(|(deployment, node, pid)| {
                let (cpu_seconds, memory_bytes) = super::procfs::sample(pid)?;
                Some(NodeSample {
                    deployment,
                    node,
                    cpu_seconds,
                    memory_bytes,
                })
            })
            .collect();
        m.observe_processes(&samples);
        if let Some(local) = &self.local {
            m.observe_cpu_limit_mode(local.cpu_limit_mode());
        }
        let databases = self
            .databases
            .as_ref()
            .map(|d| d.samples())
            .unwrap_or_default();
        m.observe_databases(&databases);
        let mut text = m.render();
        if let Some(certs) = &self.certs {
            text.push_str(&certs.render());
        }
        text
    }
}

async fn metrics(State(src): State<MetricsSources>) -> Response {
    let body = tokio::task::spawn_blocking(move || src.render()).await;
    match body {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The admin application: `/metrics` and `/healthz`.
pub fn router(src: MetricsSources) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(src)
}

/// Serves the admin application on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, src: MetricsSources) -> std::io::Result<()> {
    axum::serve(listener, router(src)).await
}

/// `api` with every request counted by its route template (never the raw path, which holds
/// names a client chose) and status.
pub fn count_requests(api: Router, metrics: ControlMetrics) -> Router {
    api.layer(axum::middleware::from_fn_with_state(metrics, count))
}

async fn count(State(m): State<ControlMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let res = next.run(req).await;
    m.api_request(&route, res.status().as_u16());
    res
}
