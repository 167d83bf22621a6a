//! `kanmon-bench`: demo game node, test certificates and load generators for kanmon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use kanmon_bench::{certs, node, tls};

/// Demo game node, test certificates and load generators for kanmon (loopback only).
#[derive(Parser, Debug)]
#[command(name = "kanmon-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a demo game node: HTTP, WebSocket echo on /ws, optional h2c gRPC echo.
    Node(NodeArgs),
    /// Write a test CA and per-host ECDSA P-256 certificates named as the proxy's cert_dir expects.
    Certs(CertsArgs),
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// HTTP/WebSocket listen address (port 0: the OS picks; the first stdout line says which).
    #[arg(long, default_value = "127.0.0.1:7350")]
    listen: SocketAddr,
    /// Optional h2c (prior knowledge) gRPC-style echo listener.
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
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
    raise_nofile_limit();
    match cli.command {
        Command::Certs(args) => run_certs(&args),
        Command::Node(args) => runtime()?.block_on(run_node(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Load tests hold thousands of sockets: lift the soft open-files limit to the hard one.
fn raise_nofile_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            if n < 4096 {
                eprintln!("warning: open-files limit is only {n}");
            }
        }
        Err(e) => eprintln!("warning: could not raise the open-files limit: {e}"),
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
    let cfg = node::NodeConfig {
        listen: args.listen,
        grpc_listen: args.grpc_listen,
        node_id: args.node_id,
        tls,
        log_connections: !args.quiet,
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
