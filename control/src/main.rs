//! `kanmon`: the control plane server (`kanmon serve`) and its CLI client.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use kanmon_control::{
    api,
    bootstrap::bootstrap_admin,
    certs,
    cli::{self, args::DriverKind, Cli, Command, ServeArgs},
    domain::Timings,
    driver::{
        serve_ok, Driver, LocalDriver, LocalDriverConfig, LoopbackDriver, NodeStatePublisher,
        NodesFilePublisher, NullPublisher, ProcessDriver,
    },
    k8s::{self, KubeDriver},
    metrics::{self, MetricsSources},
    runtime::{Runtime, Settings},
    store::Store,
};

mod up_cmd;

fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    // `kanmon up` prints its own progress lines; its logs are for problems only.
    let default_filter = match args.command {
        Command::Up(_) => "warn",
        _ => "info",
    };
    {
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| default_filter.into());
        kanmon_proxy::logging::subscriber(args.conn.log_format, filter, std::io::stderr).init();
    }
    if let Command::Up(up_args) = args.command {
        // Not inside a tokio runtime: the proxy runs pingora's own runtimes on this thread.
        return up_cmd::run(*up_args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.command {
            Command::Serve(serve_args) => serve(*serve_args).await,
            Command::DemoNode { listen } => demo_node(&listen).await,
            command => {
                let out = cli::run(&args.conn, command).await?;
                println!("{out}");
                Ok(())
            }
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store =
        Arc::new(Store::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?);
    let token_file = args.admin_token_file.clone().unwrap_or_else(|| {
        let mut p = args.db.clone().into_os_string();
        p.push(".admin-token");
        PathBuf::from(p)
    });
    // The token goes only to the 0600 file, never to the terminal or logs, which are often
    // captured by process supervisors.
    if bootstrap_admin(&store, &token_file)?.is_some() {
        println!(
            "admin token written to {} (use it with --token-file or KANMON_TOKEN_FILE)",
            token_file.display()
        );
    }
    if args.driver == DriverKind::Kubernetes && args.nodes_file.is_some() {
        // The edge reads the cluster's EndpointSlices; a nodes file would be a second truth.
        anyhow::bail!("--nodes-file cannot be used with --driver kubernetes");
    }
    let publisher: Arc<dyn NodeStatePublisher> = match &args.nodes_file {
        Some(path) => Arc::new(NodesFilePublisher::new(path)),
        None => Arc::new(NullPublisher),
    };
    let mut settings = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    if let Some(base) = &args.base_domain {
        settings.base_domain = base.clone();
    }
    if let Some(every) = args.billing_interval {
        settings.billing_interval = every;
    }
    if args.notify_allow_loopback {
        settings.notify.allow_loopback = true;
    }
    settings.timings = Timings {
        grace: args.grace,
        health_timeout: args.health_timeout,
        crashloop_timeout: args.crashloop_timeout,
        backoff_base: args.backoff_base,
        backoff_cap: args.backoff_cap,
    };
    let mut local = None;
    let mut kube_builds = None;
    let mut kube_client = None;
    let driver: Arc<dyn Driver> = match args.driver {
        DriverKind::Loopback => Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        DriverKind::Local => {
            let mut config = LocalDriverConfig::demo_node(&args.node_program, &args.log_dir);
            if !args.node_args.is_empty() {
                config.args = args.node_args.clone();
            }
            config.build_images = settings.builds.as_ref().map(|b| b.dir.clone());
            settings.node_logs = Some(args.log_dir.clone());
            let driver = Arc::new(LocalDriver::new(config));
            local = Some(driver.clone());
            Arc::new(ProcessDriver::new(driver))
        }
        DriverKind::Kubernetes => {
            let client = k8s::connect(args.kube.kubeconfig.as_deref())
                .await
                .context("connecting to the Kubernetes API")?;
            // Builds run as Jobs in the deployments' namespaces, laid out as the driver's.
            kube_builds = Some(k8s::KubeBuildRunner::new(
                client.clone(),
                args.kube.settings(args.grace),
            ));
            kube_client = Some(client.clone());
            Arc::new(KubeDriver::new(
                client,
                args.kube.settings(args.grace),
                store.clone(),
            ))
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(api::tls::server_config(cert, key)?),
        _ => None,
    };
    let base_domain = settings.base_domain.clone();
    let runtime = Runtime::start(store.clone(), settings, driver, publisher)?;
    if let Some(runner) = kube_builds {
        runtime.set_build_runner(Arc::new(runner));
    }
    tokio::spawn(kanmon_control::billing::run(runtime.clone()));
    let app = api::App::new(runtime.clone());
    let mut sources =
        MetricsSources::new(runtime.clone(), app.auth_failures.clone(), local.clone());
    if let Some(dir) = &args.cert_dir {
        let cert_metrics = kanmon_control::metrics::certs::CertMetrics::new()?;
        let mut account = args.db.clone().into_os_string();
        account.push(".acme-account.json");
        // With the Kubernetes driver certificates go to Secrets in the edge's namespace, which
        // every edge replica watches; `--cert-dir` then holds only the local CA.
        let sink = match kube_client {
            Some(client) => certs::SinkConfig::Secrets {
                client,
                namespace: args.kube.edge_namespace.clone(),
            },
            None => certs::SinkConfig::Dir,
        };
        let source = args.certs.source()?;
        if matches!(&sink, certs::SinkConfig::Secrets { .. })
            && matches!(&source, certs::SourceConfig::Acme(a) if a.challenge == certs::acme::Challenge::Http01)
        {
            anyhow::bail!("--acme-challenge http-01 needs the proxy's cert_dir; with --driver kubernetes use tls-alpn-01");
        }
        let keeper = certs::keeper(
            &source,
            sink,
            dir,
            &base_domain,
            store.clone(),
            std::path::Path::new(&account),
            cert_metrics.clone(),
        )
        .await?;
        keeper.spawn(runtime.clone(), certs::PASS);
        sources = sources.with_certs(cert_metrics);
    }
    let metrics_listener = tokio::net::TcpListener::bind(&args.metrics_listen)
        .await
        .with_context(|| format!("binding {}", args.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;
    // Tests and scripts read this line to learn the port when --metrics-listen used port 0.
    println!(
        "metrics on http://{}/metrics",
        metrics_listener.local_addr()?
    );
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(metrics_listener, sources).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Webhooks are tenant input: they must never be aimed at our own listeners.
    runtime.set_listeners(vec![addr, metrics_addr]);
    tokio::spawn(kanmon_control::notify::run(runtime.clone()));
    if tls.is_none() {
        api::check_plain_http(addr, args.insecure_http)?;
    }
    // Tests and scripts read this line to learn the port when --listen used port 0.
    println!("listening on {addr}");
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(db = %args.db.display(), %addr, scheme, "control plane serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let routes = metrics::count_requests(api::router_for(app), runtime.metrics().clone());
    let served = async {
        match tls {
            Some(config) => {
                axum::serve(api::tls::TlsListener::new(listener, config)?, routes).await
            }
            None => axum::serve(listener, routes).await,
        }
    };
    tokio::select! {
        served = served => served?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // SIGINT/SIGTERM: stop the node processes we started (the deployments stay recorded and
    // are resumed by the next start); nodes must not outlive the control plane.
    if let Some(local) = local {
        tracing::info!("stopping nodes");
        local.shutdown().await;
    }
    Ok(())
}

async fn demo_node(listen: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // EOF on stdin means the driver that started us is gone: do not linger as an orphan.
    let parent_gone = async {
        let mut sink = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await
    };
    tokio::select! {
        _ = serve_ok(listener) => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = parent_gone => {}
    }
    Ok(())
}
