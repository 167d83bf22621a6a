//! `kanmon-proxy`: run the edge proxy, or make local development certificates.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kanmon_proxy::{
    devcerts::LocalCa,
    logging::{self, LogFormat},
    Proxy, ProxyConfig, RunOptions,
};

/// The kanmon edge proxy: TLS per instance hostname, routing to ready nodes, metrics.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Proxy configuration file (TOML; see configs/dev.toml).
    #[arg(
        long,
        short,
        global = true,
        default_value = "configs/dev.toml",
        env = "KANMON_PROXY_CONFIG"
    )]
    config: PathBuf,
    /// Take over the listening sockets of the running proxy (graceful binary upgrade): start
    /// the new binary with --upgrade, then send SIGQUIT to the old one.
    #[arg(long, global = true)]
    upgrade: bool,
    /// Log line format on stderr: `text` for a terminal, `json` (one object per line with
    /// `timestamp` in UTC, `level`, `target`, `fields`) for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "KANMON_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Make a local ECDSA P-256 CA (reused if present) and certificates for hostnames, in the
    /// cert_dir layout (`<hostname>.crt/.key`; `_.<zone>.<base>` for a zone wildcard).
    DevCerts {
        /// Directory to write into (the proxy's cert_dir).
        #[arg(long, default_value = "configs/certs")]
        dir: PathBuf,
        /// The base domain the CA is name-constrained to (every hostname must be under it).
        #[arg(long, default_value = "kanmon.test")]
        base_domain: String,
        /// Hostnames to issue certificates for.
        #[arg(required = true)]
        hostnames: Vec<String>,
    },
    /// Check a configuration file and exit.
    Check,
    /// Print a fresh session-ticket key (32 random bytes, hex) for `tls.ticket_key_file`:
    /// put it on the first line to start sealing with it, keep the previous key below it
    /// until that key's tickets have expired (12 hours).
    TicketKey,
}

/// pingora's proxy layer logs client-caused failures (a client closing while its request header
/// is read) as errors; kanmon logs requests itself (upstream failures at warn, client-caused
/// ends at debug), so pingora_proxy is silent unless RUST_LOG asks for it.
const DEFAULT_LOG_FILTER: &str = "info,pingora_core=warn,pingora_proxy=off";

fn main() -> anyhow::Result<()> {
    use tracing_subscriber::util::SubscriberInitExt;
    let cli = Cli::parse();
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    logging::subscriber(cli.log_format, env, std::io::stderr).init();
    raise_open_files_limit();
    match cli.command.unwrap_or(Command::Run) {
        Command::DevCerts {
            dir,
            base_domain,
            hostnames,
        } => {
            let ca = LocalCa::open_or_create(&dir, &base_domain)?;
            for h in &hostnames {
                let path = ca.issue(&dir, &h.to_ascii_lowercase())?;
                println!("issued {}", path.display());
            }
            println!("trust this CA: {}", ca.cert_path.display());
            Ok(())
        }
        Command::TicketKey => {
            let line = kanmon_proxy::tls::ticket_keys::new_key_line()
                .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
            println!("{line}");
            Ok(())
        }
        Command::Check => {
            let cfg = ProxyConfig::load(&cli.config)?;
            if let Some(path) = &cfg.tls.ticket_key_file {
                let unused = prometheus::IntCounter::new("unused", "unused")?;
                kanmon_proxy::tls::ticket_keys::TicketKeys::load(path, unused)?;
            }
            println!("{}: ok", cli.config.display());
            Ok(())
        }
        Command::Run => {
            let cfg = ProxyConfig::load(&cli.config)?;
            let proxy = Proxy::build(
                &cfg,
                RunOptions {
                    upgrade: cli.upgrade,
                    table: None,
                },
            )
            .context("building the proxy")?;
            tracing::info!(tls = %cfg.listen.tls, admin = %cfg.listen.admin, "kanmon-proxy starting");
            proxy.run();
            Ok(())
        }
    }
}

/// A proxy holds two descriptors per proxied connection: lift the soft open-files limit to the
/// hard one so the process can use what the system grants it.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}
