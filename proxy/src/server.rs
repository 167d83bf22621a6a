//! Assembles the pingora server: the TLS proxy service, the admin listener, discovery and the
//! certificate watcher as background services, and the early exit on graceful shutdown.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use kanmon_router::HealthTable;
use pingora::{
    apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream},
    listeners::{tls::TlsSettings, ListenerConfig},
    protocols::http::ServerSession,
    protocols::l4::stream::{L4BufferSettings, DEFAULT_L4_WRITE_BUFFER_SIZE},
    proxy::HttpProxy,
    server::{
        configuration::{Opt, ServerConf},
        RunArgs, Server, ShutdownWatch,
    },
    services::{background::background_service, listening::Service},
};

use crate::{
    admin::AdminApp,
    app::KanmonProxy,
    certwatch::{CertWatcher, TicketKeyWatcher},
    client_limits::ClientLimits,
    config::{DiscoveryKind, ProxyConfig},
    discovery::{
        file::FileSource,
        kubernetes::{CertificateSecrets, KubernetesSource},
        DiscoverySource, Publisher,
    },
    edge::{EdgeApp, EdgeLimits},
    h1::Lane,
    h2ws::Tunnels,
    inflight::Inflight,
    metrics::Metrics,
    routing::Routes,
    settings::Settings,
    shutdown::exit_when_idle,
    tls::{config::server_config, ticket_keys::TicketKeys, CertStore, SniCallbacks},
    upgrade_sock::{self, CheckedSignals},
};

/// Why the proxy could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// pingora refused its configuration.
    #[error("pingora: {0}")]
    Pingora(#[from] Box<pingora::Error>),
    /// Metric registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// rustls refused the TLS configuration.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The session-ticket key file is unusable.
    #[error("session-ticket keys: {0}")]
    TicketKeys(#[from] crate::tls::ticket_keys::KeyFileError),
    /// The upgrade socket's directory is missing, shared or another user's.
    #[error("shutdown.upgrade_sock: {0}")]
    UpgradeSock(#[from] crate::upgrade_sock::UpgradeSockError),
}

/// Puts the header read timeout on each new HTTP session before pingora reads its header, so
/// a client that stalls its request is cut after `request_read_timeout`, not pingora's fixed
/// 60 s. The same limit bounds how long an idle keep-alive connection waits for its next
/// request. (pingora applies it per read, so a client trickling a byte at a time within the
/// limit is bounded by `max_header_bytes`, not by time.)
struct HeaderTimeout {
    inner: Arc<HttpProxy<KanmonProxy>>,
    timeout: Duration,
}

#[async_trait]
impl HttpServerApp for HeaderTimeout {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // pingora waits for an HTTP/1 request header under the keep-alive timeout (60 s by
        // default, also for a fresh connection) and only then applies the read timeout.
        // HTTP/2 sessions ignore the keep-alive setting.
        if !*shutdown.borrow() {
            session.set_keepalive(Some(self.timeout.as_secs().max(1)));
        }
        session.set_read_timeout(Some(self.timeout));
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// Runs a discovery source as a pingora background service.
struct DiscoveryService {
    source: Box<dyn DiscoverySource>,
    publisher: Publisher,
}

#[async_trait]
impl pingora::services::background::BackgroundService for DiscoveryService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.publisher.announce(self.source.name());
        self.source.run(self.publisher.clone(), shutdown).await;
    }
}

/// A built proxy, ready to run.
pub struct Proxy {
    server: Server,
    /// Handles to the metrics (for in-process embedding and tests).
    pub metrics: Metrics,
    /// The health table the proxy routes with.
    pub table: Arc<HealthTable>,
    publisher: Publisher,
    inflight: Inflight,
    going_away: tokio::sync::watch::Sender<bool>,
    grace: Duration,
    upgrade_sock: std::path::PathBuf,
}

pub use pingora::server::{ShutdownSignal, ShutdownSignalWatch as ShutdownWatcher};

/// Options that come from the command line rather than the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take over the listening sockets of a running proxy (graceful binary upgrade).
    pub upgrade: bool,
    /// Use this table and do not start a discovery source: the caller (the in-process control
    /// plane of `kanmon up`) publishes into it.
    pub table: Option<Arc<HealthTable>>,
}

impl Proxy {
    /// Builds the server from `cfg`.
    pub fn build(cfg: &ProxyConfig, opts: RunOptions) -> Result<Self, BuildError> {
        let metrics = Metrics::new()?;
        let external_table = opts.table.is_some();
        let table = opts.table.unwrap_or_default();
        let inflight = Inflight::default();
        let settings = Arc::new(Settings::from(cfg));
        // Before pingora binds it (with `--upgrade`) or could send to it (on SIGQUIT).
        upgrade_sock::prepare_dir(&cfg.shutdown.upgrade_sock)?;

        let conf = ServerConf {
            threads: cfg.server.threads,
            work_stealing: cfg.server.work_stealing,
            upgrade_sock: cfg.shutdown.upgrade_sock.to_string_lossy().into_owned(),
            // pingora sleeps this long unconditionally; we exit earlier ourselves once the
            // last request has ended (see `exit_when_idle`).
            grace_period_seconds: Some(cfg.shutdown.grace_period.as_secs().max(1)),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        let opt = Opt {
            upgrade: opts.upgrade,
            ..Opt::default()
        };
        let mut server = Server::new_with_opt_and_conf(opt, conf);
        server.bootstrap();

        let certs = Arc::new(CertStore::new(cfg.tls.cert_dir.clone(), metrics.clone()));
        let report = certs.reload();
        tracing::info!(dir = %cfg.tls.cert_dir.display(), %report, "certificates loaded");

        let publisher = Publisher::new(table.clone(), metrics.clone());
        // With an external table the embedding control plane publishes through
        // `Proxy::publisher`, so metrics and readiness follow its publishes too.
        if !external_table {
            let source: Box<dyn DiscoverySource> = match cfg.discovery.kind {
                DiscoveryKind::File => Box::new(FileSource::new(
                    cfg.discovery.path.clone(),
                    Some(cfg.limits.max_connections_per_deployment),
                )),
                DiscoveryKind::Kubernetes => {
                    let source = KubernetesSource::new(
                        &cfg.discovery,
                        Some(cfg.limits.max_connections_per_deployment),
                    );
                    Box::new(if cfg.discovery.certificate_secrets {
                        source.with_certificates(CertificateSecrets {
                            store: certs.clone(),
                            base_domain: cfg.routing.base_domain.clone(),
                            namespace: cfg.discovery.certificate_namespace.clone(),
                        })
                    } else {
                        source
                    })
                }
            };
            server.add_service(background_service(
                "discovery",
                DiscoveryService {
                    source,
                    publisher: publisher.clone(),
                },
            ));
        }
        server.add_service(background_service(
            "cert-watcher",
            CertWatcher::new(certs.clone()),
        ));
        let ticket_keys = match &cfg.tls.ticket_key_file {
            Some(path) if cfg.tls.session_tickets > 0 => {
                let keys = Arc::new(TicketKeys::load(path, metrics.ticket_key_errors.clone())?);
                server.add_service(background_service(
                    "ticket-key-watcher",
                    TicketKeyWatcher::new(keys.clone()),
                ));
                Some(keys)
            }
            _ => None,
        };

        let (going_away_tx, going_away) = tokio::sync::watch::channel(false);
        let routes = Routes::new(table.clone(), metrics.clone(), settings.clone());
        let tunnels = Tunnels {
            connections: inflight.clone(),
            going_away: going_away.clone(),
        };
        let lane = Arc::new(Lane::new(routes.clone(), inflight.clone(), going_away));
        let app = KanmonProxy::new(routes, tunnels);
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, app);
        // RFC 8441: h2 clients may open WebSockets on the connection they have
        // (SETTINGS_ENABLE_CONNECT_PROTOCOL); the CONNECTs pingora then lets through are
        // served by `h2ws` or refused (405) in the application, never proxied as CONNECT.
        let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
        h2.enable_connect_protocol();
        proxy.h2_options = Some(h2);
        let mut options = proxy.server_options.clone().unwrap_or_default();
        options.allow_connect_method_proxying = true;
        proxy.server_options = Some(options);
        let mut tls = TlsSettings::with_callbacks(Box::new(SniCallbacks::new(
            &settings.base_domain,
            settings.console.clone(),
        )))?;
        tls.set_cert_resolver(certs.clone());
        tls.enable_h2();
        let http = Arc::new(HeaderTimeout {
            inner: Arc::new(proxy),
            timeout: cfg.limits.request_read_timeout,
        });
        let mut acceptor = tls.build();
        // pingora's acceptor keeps our callbacks; its rustls configuration is replaced by
        // ours (cipher order, tickets), with the same resolver and ALPN.
        let rustls_config = server_config(
            certs.clone(),
            acceptor.acceptor.config().alpn_protocols.clone(),
            cfg.tls.session_tickets,
            ticket_keys,
            metrics.ticket_counts(),
        )?;
        acceptor.acceptor = pingora::tls::TlsAcceptor::from(Arc::new(rustls_config));
        let edge = EdgeApp::new(
            acceptor,
            http,
            lane,
            EdgeLimits {
                handshake_timeout: cfg.limits.handshake_timeout,
                clients: ClientLimits::new(
                    cfg.limits.max_connections_per_client,
                    cfg.limits.max_handshakes_per_client,
                    cfg.limits.exempt_loopback,
                ),
                proxy_protocol: crate::proxy_protocol::Policy::new(&cfg.listen),
                handshakes: cfg.limits.handshake_queue(cfg.server.threads),
            },
            metrics.clone(),
            inflight.clone(),
            !cfg.server.work_stealing,
        );
        let mut service = Service::new("kanmon-proxy".to_string(), edge);
        // No L4 read buffer under TLS: rustls buffers records itself, and pingora's default
        // 64 KiB read buffer per connection would dominate the memory of idle WebSockets.
        service.add_listener(
            ListenerConfig::tcp(cfg.listen.tls.to_string())
                .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
        );
        server.add_service(service);

        if let Some(http) = cfg.listen.http {
            let mut acme = Service::new(
                "kanmon-acme-http".to_string(),
                crate::tls::http01::Http01App::new(certs.clone()),
            );
            acme.add_tcp(&http.to_string());
            acme.threads = Some(1);
            server.add_service(acme);
        }
        let mut admin = Service::new(
            "kanmon-admin".to_string(),
            AdminApp::new(metrics.clone(), certs, publisher.clone()),
        );
        admin.add_tcp(&cfg.listen.admin.to_string());
        admin.threads = Some(1);
        server.add_service(admin);

        Ok(Self {
            server,
            metrics,
            table,
            publisher,
            inflight,
            going_away: going_away_tx,
            grace: cfg.shutdown.grace_period,
            upgrade_sock: cfg.shutdown.upgrade_sock.clone(),
        })
    }

    /// Runs until shut down. SIGTERM: stop accepting, let in-flight requests and WebSockets
    /// run for the grace period, exit as soon as the last one ends. SIGQUIT: hand the
    /// listening sockets to a new process started with `--upgrade`, then drain the same way
    /// (refused, and the proxy keeps serving, unless the socket is this user's: see
    /// `upgrade_sock`).
    pub fn run(self) {
        exit_when_idle(
            &self.server,
            self.inflight.clone(),
            self.going_away,
            self.grace,
        );
        self.server.run(RunArgs {
            shutdown_signal: Box::new(CheckedSignals::new(self.upgrade_sock)),
        });
        std::process::exit(0)
    }

    /// The publisher into this proxy's table: an embedding control plane (`kanmon up`)
    /// publishes node states through it so metrics and `/readyz` follow.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Runs until `signal` resolves (instead of listening for SIGTERM/SIGINT/SIGQUIT itself),
    /// then returns, so an embedding process can clean up after the proxy. A graceful
    /// signal still drains: the process exits once nothing is in flight.
    pub fn run_with(self, signal: Box<dyn ShutdownWatcher>) {
        exit_when_idle(
            &self.server,
            self.inflight.clone(),
            self.going_away,
            self.grace,
        );
        self.server.run(RunArgs {
            shutdown_signal: signal,
        });
    }
}
