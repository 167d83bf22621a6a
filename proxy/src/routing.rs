//! Where a request goes, shared by both HTTP paths (kanmon's HTTP/1.1 lane and pingora's
//! HTTP/2 service): `Host` against the connection's SNI (421), the deployment (404), a ready
//! node from the router (503), and what happens when a node refuses the connection (count,
//! eject for a while, move the request once to another ready node).

use std::{net::IpAddr, sync::Arc};

use kanmon_router::{ConnectionGuard, ConsolePickError, Deployment, HealthTable, PickError};

use crate::{
    clock::Clock, metrics::Metrics, responses::Refusal, settings::Settings, tls::SniTarget,
};

/// Routing decisions over the live health table.
#[derive(Clone)]
pub struct Routes {
    table: Arc<HealthTable>,
    metrics: Metrics,
    settings: Arc<Settings>,
    clock: Clock,
}

impl Routes {
    /// Decisions over `table`.
    pub fn new(table: Arc<HealthTable>, metrics: Metrics, settings: Arc<Settings>) -> Self {
        Self {
            table,
            metrics,
            settings,
            clock: Clock::new(),
        }
    }

    /// The settings requests are served with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The live health table.
    pub fn table(&self) -> &HealthTable {
        &self.table
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Decides where a request goes, or why it is refused. `host` is the request's host
    /// (port stripped), `header_bytes` the size of its header block, `client` the client's
    /// address (the PROXY protocol's when a trusted balancer sent one): a console name's
    /// allow-list is checked against it (403).
    pub fn route(
        &self,
        sni: Option<&SniTarget>,
        host: Option<&str>,
        header_bytes: usize,
        client: Option<IpAddr>,
    ) -> Result<ConnectionGuard, Refusal> {
        if header_bytes > self.settings.max_header_bytes {
            return Err(Refusal::HeadersTooLarge);
        }
        let target = sni.ok_or(Refusal::UnknownHost)?;
        if let Some(host) = host {
            // The API name on a console connection (or the other way round) is another
            // target too: one connection, one target, one allow-list decision.
            let same = self
                .settings
                .console
                .target(host, &self.settings.base_domain)
                .is_some_and(|t| t.same(&target.target()));
            if !same {
                return Err(Refusal::Misdirected);
            }
        }
        if target.console {
            let now = self.clock.now_ms();
            return self
                .table
                .pick_console(&target.instance, &target.zone, client, now, None)
                .map_err(|e| match e {
                    ConsolePickError::Refused(why) => {
                        self.console_refused(&target.instance, &target.zone, why.reason());
                        Refusal::ConsoleForbidden
                    }
                    ConsolePickError::Pick(e) => refusal_of(e),
                });
        }
        self.pick(&target.instance, &target.zone, None)
            .map_err(refusal_of)
    }

    /// Counts a console refusal under its deployment (the table holds it: the allow-list
    /// is only read from a deployment found there).
    fn console_refused(&self, instance: &str, zone: &str, reason: &'static str) {
        self.metrics
            .console_refused
            .with_label_values(&[instance, zone, reason])
            .inc();
        tracing::debug!(deployment = instance, reason, "console request refused");
    }

    /// The deployment the connection's SNI names, if it is one in the table now: requests
    /// refused before a node was picked are counted under it (see [`crate::accounting`]).
    pub fn named_deployment(&self, sni: Option<&SniTarget>) -> Option<Arc<Deployment>> {
        let target = sni?;
        self.table
            .load()
            .find(&target.instance, &target.zone)
            .map(Arc::clone)
    }

    /// Counts a refusal (metric + debug log: refusals are routine, never errors).
    pub fn refused(&self, r: Refusal) {
        self.metrics.rejected.with_label_values(&[r.reason()]).inc();
        tracing::debug!(status = r.status(), reason = r.reason(), "request refused");
    }

    /// Counts a failed connect to the picked node and ejects it for a while; on the first
    /// failure (`retried` false) moves `guard` to another ready node. Returns whether to retry.
    pub fn connect_failed(
        &self,
        guard: &mut Option<ConnectionGuard>,
        retried: &mut bool,
        error: &dyn std::fmt::Display,
    ) -> bool {
        let Some(current) = guard.as_ref() else {
            return false;
        };
        let node = current.node();
        let dep = current.deployment();
        self.metrics
            .upstream_failures
            .with_label_values(&[dep.instance().as_str(), dep.zone().as_str(), node.id()])
            .inc();
        current.eject(self.clock.now_ms(), self.settings.eject_for_ms);
        tracing::info!(node = node.id(), error = %error, "upstream connect failed; node ejected for a while");
        if *retried {
            return false;
        }
        *retried = true;
        let failed = node.id().to_string();
        let dep = Arc::clone(dep);
        let next = if current.is_console() {
            kanmon_router::pick_console_in(&dep, self.clock.now_ms(), Some(&failed))
        } else {
            self.pick(dep.instance().as_str(), dep.zone().as_str(), Some(&failed))
        };
        match next {
            Ok(next) if next.node().id() != failed => {
                *guard = Some(next);
                true
            }
            _ => false,
        }
    }

    fn pick(
        &self,
        instance: &str,
        zone: &str,
        exclude: Option<&str>,
    ) -> Result<ConnectionGuard, PickError> {
        self.table
            .pick_excluding(instance, zone, self.clock.now_ms(), exclude)
    }
}

/// The answer to a failed pick.
fn refusal_of(e: PickError) -> Refusal {
    match e {
        PickError::UnknownDeployment => Refusal::UnknownHost,
        PickError::NoReadyNode => Refusal::NoReadyNode,
        PickError::AtCapacity => Refusal::AtCapacity,
    }
}

/// Status codes as label strings, formatted once: no allocation per request.
pub fn status_label(status: u16) -> &'static str {
    static LABELS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..600).map(|c| c.to_string()).collect());
    LABELS.get(status as usize).map_or("0", String::as_str)
}
