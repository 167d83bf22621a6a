//! `kanmon-bench`: demo game node, test certificates and load generators for kanmon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use kanmon_bench::loads::{connect, echo, http, idle, rate, storm, Limits};
use kanmon_bench::report::Report;
use kanmon_bench::target::Target;
use kanmon_bench::{certs, compare, node, tls};

/// Demo game node, test certificates and load generators for kanmon (loopback only).
#[derive(Parser, Debug)]
#[command(
    name = "kanmon-bench",
    version,
    about = "Demo game node, test certificates and load generators for kanmon (loopback only).",
    after_help = "Example:\n  kanmon-bench certs --dir certs --hosts alpha.us-east1.kanmon.test\n  \
                  kanmon-bench ws-connect --url wss://alpha.us-east1.kanmon.test:8443/ws \\\n    \
                  --connect 127.0.0.1:8443 --ca certs/ca.crt -n 5000 -c 64"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log line format on stderr (the demo node's diagnostics): `text`, or `json` (one object
    /// per line with `timestamp` in UTC, `level`, `target`, `fields`), whose `level` the
    /// control plane's local driver reads as the line's severity.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "KANMON_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

/// `--log-format` (the same two formats as kanmon and kanmon-proxy).
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs at `RUST_LOG` (default `info`) on stderr in `format`.
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a demo game node: HTTP, WebSocket echo on /ws, optional h2c gRPC echo.
    Node(NodeArgs),
    /// Write a test CA and per-host ECDSA P-256 certificates named as the proxy's cert_dir expects.
    Certs(CertsArgs),
    /// Open N fresh connections (TCP + TLS + upgrade + one echo + close) at a concurrency;
    /// report connections/s and connect latency.
    WsConnect(WsConnectArgs),
    /// C connections each echoing M messages of B bytes; report messages/s and round trips.
    WsEcho(WsEchoArgs),
    /// Open-loop game traffic: C connections each sending R msgs/s on a schedule, round trips
    /// timed from the scheduled send (no coordinated omission); echo or room broadcast;
    /// optionally search for the highest rate with p99 under --slo-p99.
    WsRate(WsRateArgs),
    /// Reconnect storm: C clients connected, then all lose their connection at once and
    /// reconnect together; report time until all are back, refusals, timeouts, p99.
    WsStorm(WsStormArgs),
    /// Hold N idle WebSockets for S seconds; with --pid, report the proxy's KiB per connection.
    WsIdle(WsIdleArgs),
    /// HTTP(S) keep-alive GET load over C connections; report requests/s and p99.
    Http(HttpArgs),
    /// Print the comparison table from `<target>.<load>.json` files written with --out.
    CompareTable(CompareArgs),
}

/// Flags every load takes.
#[derive(clap::Args, Debug)]
struct Common {
    /// What the client believes it talks to: SNI, Host header and path (ws, wss, http, https).
    #[arg(long, default_value = "wss://alpha.us-east1.kanmon.test:8443/ws")]
    url: String,
    /// The address actually dialed; must be loopback (127.0.0.0/8 or ::1). Default: the URL's.
    #[arg(long)]
    connect: Option<String>,
    /// Test CA certificate (PEM) trusted for wss/https.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// File holding the deployment's server key (`kanmon keys NAME --json | jq -r
    /// .server_key > key`): nodes started by kanmon refuse WebSockets without it. Read from a
    /// file so the key stays out of process listings; without it, no key is sent.
    #[arg(long)]
    server_key_file: Option<PathBuf>,
    /// Print the result as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop starting new work after this long (the run always ends by itself).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// One connect, echo, request or close fails after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    op_timeout: Duration,
    /// WebSocket loads: open each WebSocket as an RFC 8441 extended CONNECT stream over
    /// shared h2 connections instead of a connection of its own.
    #[arg(long)]
    h2: bool,
    /// With `--h2`: how many h2 connections the WebSockets share.
    #[arg(long, default_value_t = 1, requires = "h2")]
    h2_connections: usize,
    /// WebSocket loads: spread the connections over N deployments of the URL's zone, named
    /// after its instance: `wss://alpha.us-east1.kanmon.test/ws --spread 1000` sends the i-th
    /// WebSocket to `alpha-{i mod N}.us-east1.kanmon.test` (SNI and Host), through the same
    /// --connect address. N ≥ 1.
    #[arg(long, value_parser = parse_spread)]
    spread: Option<usize>,
}

/// `--spread`: a count of deployments, at least 1.
fn parse_spread(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (the number of deployments to spread over)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count of deployments: {e}")),
    }
}

impl Common {
    fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout,
            op_timeout: self.op_timeout,
        }
    }
}

#[derive(clap::Args, Debug)]
struct WsConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Connections in total.
    #[arg(short = 'n', long, default_value_t = 5000)]
    connections: u64,
    /// Connections in flight at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Bytes of the one echoed message.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Reconnecting clients: each of the -c workers keeps its own TLS session cache, so its
    /// connections after the first resume with the server's session tickets (the report
    /// counts how many did). Without it every connection is a full handshake.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args, Debug)]
struct WsEchoArgs {
    #[command(flatten)]
    common: Common,
    /// Connections echoing at once.
    #[arg(short = 'c', long, default_value_t = 100)]
    connections: usize,
    /// Messages per connection (one in flight per connection).
    #[arg(short = 'm', long, default_value_t = 200)]
    messages: u64,
    /// Bytes per message.
    #[arg(short = 'b', long, default_value_t = 64)]
    size: usize,
    /// Connections being opened at once during set-up.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(clap::Args, Debug)]
struct WsRateArgs {
    #[command(flatten)]
    common: Common,
    /// Connections sending at once.
    #[arg(short = 'c', long, default_value_t = 2000)]
    connections: usize,
    /// Messages per second each connection sends (the first step of a --steps search).
    #[arg(short = 'r', long, default_value_t = 20.0)]
    rate: f64,
    /// Bytes per message (at least 18: the header with the scheduled send time).
    #[arg(short = 'b', long, default_value_t = 64)]
    size: usize,
    /// How long each step sends.
    #[arg(short = 'd', long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Put the connections in rooms of this many members; the node relays each message to
    /// its whole room (a match) instead of echoing it. 0: echo.
    #[arg(long, default_value_t = 0)]
    room: usize,
    /// Steps of the search for the highest sustained rate (doubling while sustained, then
    /// bisecting); 1 runs the one rate.
    #[arg(long, default_value_t = 1)]
    steps: u32,
    /// A step is sustained when its p99 round trip stays under this, nothing is lost and no
    /// connection fails.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    slo_p99: Duration,
    /// Connections being opened at once during set-up.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
}

#[derive(clap::Args, Debug)]
struct WsStormArgs {
    #[command(flatten)]
    common: Common,
    /// Clients connected before the storm; all of them reconnect at once.
    #[arg(short = 'c', long, default_value_t = 5000)]
    clients: usize,
    /// Connections opened at once while setting up (the storm itself is not paced).
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Each client keeps its TLS session from its first connection and resumes with it.
    #[arg(long)]
    resume: bool,
    /// Further attempts of a client whose reconnect failed (refused or timed out), each after
    /// a jittered backoff, as game clients do.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// The first retry's backoff; it doubles for each further retry, jittered ±50%.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    retry_backoff: Duration,
}

#[derive(clap::Args, Debug)]
struct WsIdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to hold (each costs the proxy two descriptors: stay near 9,000).
    #[arg(short = 'n', long, default_value_t = 1000)]
    connections: usize,
    /// Connections being opened at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// How long to hold them once open.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// The proxy's PID; RSS of it and its child processes is sampled from /proc.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(clap::Args, Debug)]
struct HttpArgs {
    #[command(flatten)]
    common: Common,
    /// Keep-alive connections.
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// How long to send for.
    #[arg(short = 'd', long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many requests in total.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct CompareArgs {
    /// Directory holding `<target>.<load>.json`.
    #[arg(long)]
    dir: PathBuf,
    /// Columns, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,kanmon,nginx,haproxy"
    )]
    targets: Vec<String>,
    /// The target ratios are relative to.
    #[arg(long, default_value = "nginx")]
    baseline: String,
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// HTTP/WebSocket listen address (port 0: the OS picks; the first stdout line says which).
    #[arg(long, default_value = "127.0.0.1:7350")]
    listen: SocketAddr,
    /// Optional h2c (prior knowledge) gRPC-style echo listener.
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// Optional console listener (Nakama's console port, 7351): plain HTTP/1.1 answering every
    /// path with a small JSON page naming the node; its bound address is printed as
    /// `console listening on ADDR`.
    #[arg(long)]
    console_listen: Option<SocketAddr>,
    /// Node id reported in replies and in `ws-connect node=ID` log lines.
    #[arg(long, env = "KANMON_NODE_ID", default_value = "node-0")]
    node_id: String,
    /// Serve TLS with this certificate (PEM) on --listen; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Do not print a `ws-connect` line per WebSocket.
    #[arg(long)]
    quiet: bool,
    /// Configuration file kanmon's local driver writes (0600 JSON: `KANMON_CONFIG_<KEY>`,
    /// `KANMON_SECRET_KEYS`, `DATABASE_URL`); read at start, its values are never printed.
    /// With `KANMON_CONFIG_SOCKET_SERVER_KEY` in it, `/ws` refuses (401) clients that do not
    /// present that key (HTTP Basic username, or `?server_key=`); `GET /kanmon/received`
    /// reports what arrived, secret values masked.
    #[arg(long, env = "KANMON_NODE_CONFIG")]
    config_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CertsArgs {
    /// Output directory (created if missing; an existing ca.crt/ca.key there is reused).
    #[arg(long)]
    dir: PathBuf,
    /// Comma-separated hostnames; `*.zone.base` makes a wildcard written as `_.zone.base.crt`.
    #[arg(long, value_delimiter = ',', required = true)]
    hosts: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let nofile = raise_nofile_limit();
    if let Command::WsIdle(a) = &cli.command {
        // Each held connection is one descriptor here (and two in the proxy).
        if a.connections as u64 + 64 > nofile {
            eprintln!(
                "warning: holding {} connections needs more than the open-files limit of {nofile}",
                a.connections
            );
        }
    }
    match cli.command {
        Command::Certs(args) => run_certs(&args),
        Command::Node(args) => runtime()?.block_on(run_node(args)),
        Command::WsConnect(a) if a.resume && a.common.spread.is_some() => {
            anyhow::bail!("--resume with --spread: a client's TLS session is for one hostname, and its next connection goes to the next deployment")
        }
        Command::WsStorm(a) if a.resume && a.common.spread.is_some() => {
            anyhow::bail!("--resume with --spread: a client's TLS session is for one hostname, and its reconnect goes to the next deployment")
        }
        Command::WsConnect(a) => run_load(&a.common, |t| {
            connect::run(
                t,
                connect::ConnectParams {
                    connections: a.connections,
                    concurrency: a.concurrency,
                    message_size: a.size,
                    resume: a.resume,
                    limits: a.common.limits(),
                },
            )
        }),
        Command::WsEcho(a) => run_load(&a.common, |t| {
            echo::run(
                t,
                echo::EchoParams {
                    connections: a.connections,
                    messages: a.messages,
                    size: a.size,
                    connect_concurrency: a.connect_concurrency,
                    limits: a.common.limits(),
                },
            )
        }),
        Command::WsRate(a) => {
            anyhow::ensure!(a.rate > 0.0, "--rate must be above 0");
            anyhow::ensure!(a.connections > 0, "--connections must be at least 1");
            anyhow::ensure!(
                (1..=100).contains(&a.steps),
                "--steps must be from 1 to 100"
            );
            run_load(&a.common, |t| {
                rate::run(
                    t,
                    rate::RateParams {
                        connections: a.connections,
                        per_conn_rate: a.rate,
                        size: a.size,
                        duration: a.duration,
                        room_size: (a.room > 0).then_some(a.room),
                        steps: a.steps,
                        slo_p99: a.slo_p99,
                        connect_concurrency: a.connect_concurrency,
                        limits: a.common.limits(),
                    },
                )
            })
        }
        Command::WsStorm(a) => run_load(&a.common, |t| {
            storm::run(
                t,
                storm::StormParams {
                    clients: a.clients,
                    connect_concurrency: a.connect_concurrency,
                    resume: a.resume,
                    limits: a.common.limits(),
                    retries: a.retries,
                    retry_backoff: a.retry_backoff,
                },
            )
        }),
        Command::WsIdle(a) => run_load(&a.common, |t| {
            idle::run(
                t,
                idle::IdleParams {
                    connections: a.connections,
                    concurrency: a.concurrency,
                    hold: a.hold,
                    pid: a.pid,
                    limits: a.common.limits(),
                },
            )
        }),
        Command::Http(a) if a.common.h2 => {
            anyhow::bail!("--h2 is for the WebSocket loads (ws-connect, ws-echo, ws-idle)")
        }
        Command::Http(a) if a.common.spread.is_some() => {
            anyhow::bail!("--spread is for the WebSocket loads (ws-connect, ws-echo, ws-idle, ws-rate, ws-storm)")
        }
        Command::Http(a) => run_load(&a.common, |t| {
            http::run(
                t,
                http::HttpParams {
                    connections: a.connections,
                    duration: a.duration,
                    requests: a.requests,
                    limits: a.common.limits(),
                },
            )
        }),
        Command::CompareTable(a) => {
            print!("{}", compare::table(&a.dir, &a.targets, &a.baseline));
            Ok(())
        }
    }
}

/// Sets up the target, runs one load on a fresh runtime and prints/writes its report.
fn run_load<F, Fut>(common: &Common, load: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Target>) -> Fut,
    Fut: std::future::Future<Output = Report>,
{
    let rt = runtime()?;
    let report = rt.block_on(async {
        let mut target =
            Target::new(&common.url, common.connect.as_deref(), common.ca.as_deref()).await?;
        if common.h2 {
            anyhow::ensure!(
                common.spread.is_none(),
                "--spread does not go with --h2: a shared h2 connection carries one SNI"
            );
            target = target.over_h2(common.h2_connections);
        }
        if let Some(n) = common.spread {
            target = target.with_spread(n)?;
        }
        if let Some(path) = &common.server_key_file {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("reading --server-key-file {}", path.display()))?;
            target = target.with_server_key(key.trim().to_string());
        }
        anyhow::Ok(load(Arc::new(target)).await)
    })?;
    // Worker tasks are all joined; do not wait on stray connection drivers.
    rt.shutdown_timeout(Duration::from_secs(1));
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &common.out {
        std::fs::write(out, format!("{json}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    if common.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Load tests hold thousands of sockets: lift the soft open-files limit to the hard one.
/// Returns the limit now in force.
fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            if n < 4096 {
                eprintln!("warning: open-files limit is only {n}");
            }
            n
        }
        Err(e) => {
            eprintln!("warning: could not raise the open-files limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _hard)| soft)
        }
    }
}

fn run_certs(args: &CertsArgs) -> anyhow::Result<()> {
    let hosts: Vec<&str> = args
        .hosts
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .collect();
    let (_ca, files) = certs::write_host_certs(&args.dir, &hosts)
        .with_context(|| format!("writing certificates into {}", args.dir.display()))?;
    println!("{}", args.dir.join(certs::CA_CERT_FILE).display());
    for f in files {
        println!("{} {}", f.cert.display(), f.key.display());
    }
    Ok(())
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            Some(tls::server_config(c, k).context("loading --tls-cert/--tls-key")?)
        }
        _ => None,
    };
    let received = match &args.config_file {
        Some(path) => {
            let entries = node::read_config(path)?;
            tracing::info!(entries = entries.len(), path = %path.display(), "node config read");
            node::Received::new(&entries, std::env::vars())
        }
        None => node::Received::default(),
    };
    let cfg = node::NodeConfig {
        listen: args.listen,
        grpc_listen: args.grpc_listen,
        console_listen: args.console_listen,
        node_id: args.node_id,
        tls,
        log_connections: !args.quiet,
        record_accepts: false,
        received: std::sync::Arc::new(received),
    };
    node::run_node(cfg, stop_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            eprintln!("warning: cannot watch SIGTERM ({e}); stopping on Ctrl-C only");
            if let Err(e) = tokio::signal::ctrl_c().await {
                eprintln!("warning: cannot watch Ctrl-C either: {e}");
                std::future::pending::<()>().await;
            }
        }
    }
}
