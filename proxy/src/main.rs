//! `kanmon-proxy`: run the edge proxy, or make local development certificates.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kanmon_proxy::{devcerts::LocalCa, Proxy, ProxyConfig, RunOptions};

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

/// Warnings and errors of dependencies that are routine events, not faults (operators page on
/// ERROR), whatever `RUST_LOG` says. pingora 0.9.1's "failed to acquire reusable stream" is
/// its h2 client losing a race with its own idle-pool watcher (a fresh connection is used, the
/// response is fine). kube-client warns when a watch stream ends on an EOF or a read timeout
/// (an API server's clean shutdown, the timeout that notices a partition) and when a body
/// fails to decode, and logs every failed request as an ERROR: the watcher resumes, and the
/// discovery source counts and logs the failures that matter itself, at warning.
fn is_routine(meta: &tracing::Metadata<'_>) -> bool {
    let (target, level) = (meta.target(), *meta.level());
    (target == "pingora_core::connectors" && level == tracing::Level::ERROR)
        || (target == "kube_client::client" && level == tracing::Level::WARN)
        || (target == "kube_client::client::builder" && level == tracing::Level::ERROR)
}

/// The log subscriber: `filter` (`RUST_LOG` or the default), minus the routine events.
fn subscriber<W>(filter: tracing_subscriber::EnvFilter, writer: W) -> impl tracing::Subscriber
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::{layer::SubscriberExt, Layer};
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(writer)
            .with_filter(filter)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| !is_routine(m))),
    )
}

fn main() -> anyhow::Result<()> {
    use tracing_subscriber::util::SubscriberInitExt;
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    subscriber(env, std::io::stderr).init();
    let cli = Cli::parse();
    raise_open_files_limit();
    match cli.command.unwrap_or(Command::Run) {
        Command::DevCerts { dir, hostnames } => {
            let ca = LocalCa::open_or_create(&dir)?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn routine_dependency_events_are_dropped_whatever_rust_log_says() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = super::subscriber("debug".into(), move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
            tracing::warn!(target: "kube_client::client", "eof in poll: UnexpectedEof");
            tracing::error!(target: "kube_client::client::builder", "failed with error client error (Connect)");
            // The same crates' other events, and ours, still show.
            tracing::warn!(target: "pingora_core::connectors", "Unexpected data read in idle connection");
            tracing::warn!(target: "kube_client::client::tls", "failed to reload CA bundle");
            tracing::warn!(target: "kanmon_proxy::discovery", "discovery failed");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for routine in ["reusable stream", "eof in poll", "failed with error"] {
            assert!(!text.contains(routine), "{routine}: {text}");
        }
        for kept in ["Unexpected data", "CA bundle", "discovery failed"] {
            assert!(text.contains(kept), "{kept}: {text}");
        }
    }
}
