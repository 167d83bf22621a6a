//! `kanmon up`: wires the control plane (own thread and tokio runtime) and the embedded proxy
//! (main thread, pingora's runtimes) together; see `kanmon_control::up`.

use std::{
    path::PathBuf,
    sync::{mpsc, Arc, Mutex},
};

use anyhow::{bail, Context};
use async_trait::async_trait;
use kanmon_control::{
    cli::args::UpArgs,
    runtime::Settings,
    up::{
        issue_certs, progress::say, proxy_config, ControlPlane, Databases, DemoDeployment,
        ProxyPublisher, StatsConfig, UpConfig,
    },
};
use kanmon_proxy::{
    server::{ShutdownSignal, ShutdownWatcher},
    Proxy, RunOptions,
};
use tokio::sync::oneshot;

/// What the banner shows.
struct Started {
    api: std::net::SocketAddr,
    /// The API speaks TLS (`--api-tls`): reached as `https://localhost:PORT`.
    api_tls: bool,
    metrics: std::net::SocketAddr,
    token_file: PathBuf,
    hostname: String,
    /// The demo deployment's console hostname.
    console: String,
    ca: PathBuf,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    instance: String,
}

/// Ends the proxy once the control thread has stopped nodes and databases.
struct AfterControlStops {
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait]
impl ShutdownWatcher for AfterControlStops {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(rx) = rx {
            // Err: the control thread is gone (it failed); stop too.
            let _ = rx.await;
        }
        ShutdownSignal::FastShutdown
    }
}

/// `kanmon-bench` next to this executable, else on PATH.
fn find_node_program() -> anyhow::Result<PathBuf> {
    let name = "kanmon-bench";
    let exe = std::env::current_exe().context("locating the kanmon executable")?;
    if let Some(dir) = exe.parent() {
        let beside = dir.join(name);
        if beside.is_file() {
            return Ok(beside);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "the demo node program `{name}` is neither next to {} nor on PATH: build it with \
         `cargo build --release -p kanmon-bench` (or pass --node-program)",
        exe.display()
    )
}

fn port_free(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .with_context(|| {
            format!("{what} {addr} is not available (is another `kanmon up` running?)")
        })
}

pub(crate) fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let program = match &args.node_program {
        Some(p) => p.clone(),
        None => find_node_program()?,
    };
    port_free(args.listen, "the proxy address")?;
    port_free(args.admin, "the proxy admin address")?;
    port_free(args.api, "the API address")?;
    port_free(args.metrics_listen, "the control-plane metrics address")?;
    let databases = if args.no_database {
        None
    } else {
        Some(Arc::new(Databases::new(&dir.join("postgres")).context(
            "PostgreSQL is needed for the deployments' databases",
        )?))
    };
    let mut settings = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    if let Some(base) = &args.base_domain {
        settings.base_domain = base.clone();
    }
    let ca = issue_certs(&dir.join("certs"), &settings)?;
    let cfg = proxy_config(&dir, args.listen, args.admin, &settings);
    let table = Arc::new(kanmon_router::HealthTable::new());
    let proxy = Proxy::build(
        &cfg,
        RunOptions {
            upgrade: false,
            table: Some(table),
        },
    )
    .context("building the proxy")?;
    let publisher = Arc::new(ProxyPublisher::new(proxy.publisher()));

    let mut up = UpConfig::new(&dir, &program);
    up.api_listen = args.api;
    up.api_tls = args.api_tls;
    up.certs = args.certs.source()?;
    up.metrics_listen = args.metrics_listen;
    up.database_stats = StatsConfig {
        interval: args.database_stats_interval,
        top_queries: args.top_queries,
    };
    up.settings = settings;
    up.settings.timings.grace = args.grace;
    if !args.node_args.is_empty() {
        up.node.args = args.node_args.clone();
    }
    up.demo = Some(DemoDeployment {
        instance: args.instance.clone(),
        zone: args.zone.clone(),
        ..DemoDeployment::default()
    });
    let hostname = format!(
        "{}.{}.{}",
        args.instance, args.zone, up.settings.base_domain
    );

    // The rule the edge and the certificate keeper use (a bad name is refused later, when the
    // demo deployment is created; the banner then never shows).
    let console = match (
        kanmon_router::InstanceName::parse(&args.instance),
        kanmon_router::Zone::parse(&args.zone),
    ) {
        (Ok(i), Ok(z)) => up
            .settings
            .console
            .hostname(&i, &z, &up.settings.base_domain),
        _ => String::new(),
    };
    let info = Started {
        console,
        api: args.api,
        api_tls: args.api_tls,
        metrics: args.metrics_listen,
        token_file: PathBuf::new(),
        hostname,
        ca,
        listen: args.listen,
        admin: args.admin,
        instance: args.instance.clone(),
    };
    let (started_tx, started_rx) = mpsc::channel::<anyhow::Result<()>>();
    let (done_tx, done_rx) = oneshot::channel();
    let control = std::thread::Builder::new()
        .name("kanmon-control".into())
        .spawn(move || control_thread(up, databases, publisher, info, started_tx, done_tx))?;
    match started_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let _ = control.join();
            bail!("the control plane stopped while starting");
        }
    }
    proxy.run_with(Box::new(AfterControlStops {
        done: Mutex::new(Some(done_rx)),
    }));
    // The proxy may also end the process itself once it has stopped (no connection left).
    if control.join().is_err() {
        // Its panic message is on stderr (if that is still open); say so in the exit status.
        bail!(
            "the control plane thread panicked; nodes and databases may not have stopped in order"
        );
    }
    Ok(())
}

fn control_thread(
    up: UpConfig,
    databases: Option<Arc<Databases>>,
    publisher: Arc<ProxyPublisher>,
    mut info: Started,
    started: mpsc::Sender<anyhow::Result<()>>,
    done: oneshot::Sender<()>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("kanmon-control")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(e.into()));
            return;
        }
    };
    let dir = up.dir.clone();
    rt.block_on(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = started.send(Err(e.into()));
                    return;
                }
            };
        let mut cp = match ControlPlane::start(up, databases, publisher).await {
            Ok(cp) => cp,
            Err(e) => {
                let _ = started.send(Err(
                    anyhow::Error::new(e).context("starting the control plane")
                ));
                return;
            }
        };
        info.api = cp.api_addr;
        info.metrics = cp.metrics_addr;
        info.token_file = cp.token_file.clone();
        banner(&info);
        cp.spawn_progress();
        let _ = started.send(Ok(()));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        say("kanmon up: stopping nodes and databases …");
        cp.shutdown().await;
        say(format_args!(
            "kanmon up: stopped; state kept in {} (run `kanmon up` there again to resume)",
            dir.display()
        ));
        let _ = done.send(());
    });
}

fn banner(s: &Started) {
    let (api, ca_env) = if s.api_tls {
        let env = format!("KANMON_CA={} ", s.ca.display());
        (format!("https://localhost:{}", s.api.port()), env)
    } else {
        (format!("http://{}", s.api), String::new())
    };
    let port = s.listen.port();
    let ip = s.listen.ip();
    let host = &s.hostname;
    say(format_args!(
        "\nkanmon is up.\n\
         \n  deployment   {host}  (production, 2 nodes)\
         \n  proxy        https://{host}:{port}  (listening on {})\
         \n  console      https://{console}:{port}  (closed until `kanmon console allow {instance} 127.0.0.1/32`)\
         \n  local CA     {ca}\
         \n  control API  {}  (token in {})\
         \n  metrics      http://{}/metrics (proxy), http://{}/metrics (control plane)\
         \n\nTry:\
         \n  curl --cacert {ca} --resolve {host}:{port}:{ip} https://{host}:{port}/healthcheck\
         \n  {ca_env}KANMON_SERVER={api} KANMON_TOKEN_FILE={tf} kanmon keys {inst} --json | jq -r .server_key > server.key\
         \n  kanmon-bench ws-connect --url wss://{host}:{port}/ws --connect {ip}:{port} --ca {ca} --server-key-file server.key -n 100 -c 10\
         \n  (nodes refuse /ws without the server key; any WebSocket client works: wss://{host}:{port}/ws with {host} resolving to {ip}, the key as HTTP Basic username; send `whoami`)\
         \n  {ca_env}KANMON_SERVER={api} KANMON_TOKEN_FILE={tf} kanmon reboot {inst} --wait\
         \n\nOperations as they happen (Ctrl-C stops everything; `kanmon up` again resumes):",
        s.listen,
        api,
        s.token_file.display(),
        s.admin,
        s.metrics,
        tf = s.token_file.display(),
        inst = s.instance,
        ca = s.ca.display(),
        console = s.console,
        instance = s.instance,
    ));
}
