//! Command-line arguments (clap derive). Every command and flag carries help text.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use super::logs::LogsArgs;

/// kanmon: run game-server deployments behind the kanmon edge.
#[derive(Debug, Parser)]
#[command(name = "kanmon", version, about)]
pub struct Cli {
    /// Connection and output options shared by the client commands.
    #[command(flatten)]
    pub conn: Connection,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the control plane is and how to authenticate.
#[derive(Debug, Args)]
pub struct Connection {
    /// Control-plane URL.
    #[arg(
        long,
        env = "KANMON_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub server: String,
    /// Bearer token. Prefer --token-file or the KANMON_TOKEN environment variable: a token
    /// given on the command line is visible to every local user in `ps` and /proc.
    #[arg(long, env = "KANMON_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// File holding the bearer token (e.g. the admin token `kanmon serve` wrote on first
    /// start); the preferred way to pass a token.
    #[arg(long, env = "KANMON_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify an https control plane with, e.g. `kanmon up`'s
    /// `certs/ca.crt` (default: the system's roots).
    #[arg(long, env = "KANMON_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Print the raw JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log line format on stderr: `text` for a terminal, `json` (one object per line with
    /// `timestamp` in UTC, `level`, `target`, `fields`) for a log pipeline.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "KANMON_LOG_FORMAT"
    )]
    pub log_format: kanmon_proxy::logging::LogFormat,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole local platform in one process: control plane, edge proxy on
    /// 127.0.0.1:8443 with a local CA, and a demo production deployment with two nodes and
    /// its own PostgreSQL. Ctrl-C stops everything; running it again in the same directory
    /// resumes the same deployments.
    #[command(
        after_help = "Example:\n  kanmon up                  # state in ./.kanmon\n  \
        kanmon up --dir /tmp/k     # elsewhere\n  \
        kanmon up --no-database    # without PostgreSQL"
    )]
    Up(Box<UpArgs>),
    /// Run the control plane's HTTP API (creates an admin token on first start).
    Serve(Box<ServeArgs>),
    /// Create, list, show, edit and delete deployments.
    #[command(subcommand)]
    Deployments(DeploymentsCmd),
    /// Roll out a version (or image) to a deployment, one node at a time.
    Deploy {
        /// Deployment instance name.
        instance: String,
        /// Target version (no downgrades).
        #[arg(long)]
        version: String,
        /// Image override.
        #[arg(long)]
        image: Option<String>,
        /// Wait and show progress.
        #[command(flatten)]
        wait: Wait,
    },
    /// Restart every node of a deployment, one at a time.
    Reboot {
        /// Deployment instance name.
        instance: String,
        /// Wait and show progress.
        #[command(flatten)]
        wait: Wait,
    },
    /// Change node CPUs (node count and each node's CPU limit) and database CPUs (only up: the
    /// database's resources and PostgreSQL settings); triggers a rolling reboot.
    Scale {
        /// Deployment instance name.
        instance: String,
        /// Node CPUs: 1 → one node, 2 → two (HA), more → more (development: always one node,
        /// limited to all of them). Each node runs limited to its share.
        #[arg(long)]
        node_cpus: u32,
        /// Database CPUs (can only be raised): sizes max_connections, shared_buffers, work_mem,
        /// effective_cache_size and the worker processes; the database restarts for them.
        #[arg(long)]
        db_cpus: u32,
        /// Wait and show progress.
        #[command(flatten)]
        wait: Wait,
    },
    /// Replace the runtime variables (KEY=VALUE ...); triggers a rolling reboot.
    Vars {
        /// Deployment instance name.
        instance: String,
        /// Variables as KEY=VALUE.
        vars: Vec<String>,
        /// Wait and show progress.
        #[command(flatten)]
        wait: Wait,
    },
    /// Change config and secret config: only the keys named are set or removed, the others
    /// are kept; triggers a rolling reboot.
    Config {
        /// Deployment instance name.
        instance: String,
        /// Config entries to set, as KEY=VALUE. `shutdown_grace_sec=N` (Nakama's key, 0–3600;
        /// unset: 0) is also how long a node drains and may finish after SIGTERM, at most the
        /// platform's `--grace`.
        #[arg(long = "set")]
        config: Vec<String>,
        /// Secret config entries to set, as KEY=VALUE (needs the secrets permission).
        #[arg(long = "secret")]
        secret: Vec<String>,
        /// Config keys to remove.
        #[arg(long = "unset")]
        unset: Vec<String>,
        /// Secret config keys to remove (needs the secrets permission).
        #[arg(long = "unset-secret")]
        unset_secret: Vec<String>,
        /// Wait and show progress.
        #[command(flatten)]
        wait: Wait,
    },
    /// Export a deployment's settings (no keys or secret values) and, under `kanmon up`, dump
    /// its database (downloadable with the export permission until the link expires).
    Export {
        /// Deployment instance name.
        instance: String,
        /// Download the database dump into this file (created readable by you only).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// List a deployment's operations, or show one by id.
    Ops {
        /// Deployment instance name.
        instance: Option<String>,
        /// Show one operation by id instead.
        #[arg(long)]
        id: Option<u64>,
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show the audit log of a deployment (or of the platform, for admins).
    Audit {
        /// Deployment instance name (omit for the platform log).
        instance: Option<String>,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Search a deployment's node logs (needs view): lines as `TS NODE SEVERITY TEXT`,
    /// oldest first, the newest --limit; with --json one record per line.
    #[command(
        after_help = "Example:\n  kanmon logs demo --grep error --severity warn --since 10m\n  \
        kanmon logs demo --since 2026-12-01T22:00:00Z --until 2026-12-01T23:00:00Z\n  \
        kanmon logs demo --follow   # new lines every 2 s until Ctrl-C"
    )]
    Logs(LogsArgs),
    /// Show the CPUs charged per UTC day, the day's highest sample (needs billing).
    Usage {
        /// Deployment instance name.
        instance: String,
        /// First day, YYYY-MM-DD (default: 30 days before --to).
        #[arg(long)]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        to: Option<String>,
    },
    /// Show a deployment's server key and runtime key (needs the secrets permission), or
    /// rotate one with --rotate.
    Keys {
        /// Deployment instance name.
        instance: String,
        /// Replace this key with a new random one: a rolling reboot that starts every node
        /// with it (needs deploy and secrets; audited). Clients need the new server key once
        /// the node they reach was rebooted.
        #[arg(long, value_enum)]
        rotate: Option<RotateKey>,
        /// Wait and show progress (with --rotate).
        #[command(flatten)]
        wait: Wait,
    },
    /// A deployment's console (`{instance}-console.{zone}.{base_domain}`): show its hostname,
    /// set or clear the client networks allowed to reach it.
    #[command(subcommand)]
    Console(super::console::ConsoleCmd),
    /// List released versions and their support status.
    Versions,
    /// List zones (with --org: as that organization sees them), or enable an on-request zone
    /// for an organization (admin).
    Zones(ZonesArgs),
    /// Show who the token belongs to and its grants.
    Whoami,
    /// Create users and service users, rotate their tokens.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Notifications when operations end: webhook and e-mail subscriptions per organization
    /// or deployment, and their delivery logs.
    #[command(subcommand)]
    Notify(super::notify::NotifyCmd),
    /// A deployment's builders: a source (directory or git URL) and the Nakama version to
    /// compile against.
    #[command(subcommand)]
    Builders(super::builds::BuildersCmd),
    /// Queue a build (needs deploy): runs the builder's command on its source; a success's
    /// result names the image reference to give `kanmon deploy --image`.
    Build {
        /// Deployment instance name.
        instance: String,
        /// The builder to run (default: the deployment's only builder).
        #[arg(long)]
        builder: Option<String>,
        /// Wait and show progress.
        #[command(flatten)]
        wait: Wait,
    },
    /// A deployment's builds and their logs.
    #[command(subcommand)]
    Builds(super::builds::BuildsCmd),
    /// Grant permissions (admin).
    Grant(GrantArgs),
    /// List and revoke grants (`kanmon grant` adds them).
    #[command(subcommand)]
    Grants(GrantsCmd),
    /// A minimal node for the local driver's tests: prints `listening on ADDR`, answers every
    /// HTTP request with 200, stops on SIGTERM.
    #[command(hide = true)]
    DemoNode {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

/// Which driver runs the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// Tiny HTTP servers inside the control-plane process (no node binary needed).
    Loopback,
    /// Child processes started from --node-program (the demo game node by default).
    Local,
    /// Pods of a Kubernetes cluster, one namespace per deployment (see the Kubernetes driver
    /// options). The edge learns nodes from the cluster's EndpointSlices itself, so nothing
    /// is published to it (--nodes-file is refused), and a node drains when its pod is
    /// deleted (its endpoint turns `serving && terminating`).
    Kubernetes,
}

/// `--wait` and its limit.
#[derive(Debug, Args)]
pub struct Wait {
    /// Wait until the operation finishes, printing node-by-node progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 30m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    pub wait_limit: Duration,
}

/// Deployment type.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// One node; brief downtime on reboot.
    Development,
    /// One node per CPU; rolling operations keep serving.
    Production,
}

/// `kanmon deployments ...`
#[derive(Debug, Subcommand)]
pub enum DeploymentsCmd {
    /// Create a deployment. Type, zone, instance name and version are permanent choices.
    Create {
        /// Instance name (DNS label, unique on the platform).
        instance: String,
        /// Zone (see `kanmon zones`).
        #[arg(long)]
        zone: String,
        /// Deployment type.
        #[arg(long = "type", value_enum)]
        kind: Kind,
        /// Version (see `kanmon versions`).
        #[arg(long)]
        version: String,
        /// Organization.
        #[arg(long, default_value = "default")]
        org: String,
        /// Title (game).
        #[arg(long, default_value = "default")]
        title: String,
        /// Node CPUs.
        #[arg(long, default_value_t = 1)]
        node_cpus: u32,
        /// Database CPUs.
        #[arg(long, default_value_t = 1)]
        db_cpus: u32,
        /// Turn delete protection off (on by default for production).
        #[arg(long)]
        no_delete_protection: bool,
        /// Wait for the first deploy and show progress.
        #[command(flatten)]
        wait: Wait,
    },
    /// List deployments you can view.
    List,
    /// Show one deployment with its nodes and queue.
    Show {
        /// Instance name.
        instance: String,
    },
    /// Turn delete protection on or off.
    Protect {
        /// Instance name.
        instance: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Allow one deploy to an older version (platform admin: the support team's intervention).
    AllowDowngrade {
        /// Instance name.
        instance: String,
        /// The older supported version the next deploy may move to.
        #[arg(long)]
        version: String,
    },
    /// Delete a deployment (refused while delete protection is on).
    Delete {
        /// Instance name.
        instance: String,
        /// Wait and show progress.
        #[command(flatten)]
        wait: Wait,
    },
}

/// `kanmon zones [--org ORG] [enable|disable ZONE --org ORG]`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ZonesArgs {
    /// Show the zones as this organization sees them (on-request zones it was given count as
    /// available).
    #[arg(long)]
    pub org: Option<String>,
    /// Enable or disable an on-request zone.
    #[command(subcommand)]
    pub cmd: Option<ZonesCmd>,
}

/// `kanmon zones enable|disable`
#[derive(Debug, Subcommand)]
pub enum ZonesCmd {
    /// Enable an on-request zone for an organization (admin; audited).
    Enable {
        /// Zone (on request; see `kanmon zones`).
        zone: String,
        /// Organization.
        #[arg(long)]
        org: String,
    },
    /// Take an on-request zone back from an organization (its deployments there stay).
    Disable {
        /// Zone.
        zone: String,
        /// Organization.
        #[arg(long)]
        org: String,
    },
}

/// `kanmon users ...`
#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Create a user and print its token (shown once).
    Create {
        /// User name.
        name: String,
        /// A service user (CI, bots).
        #[arg(long)]
        service: bool,
        /// May manage users and grants.
        #[arg(long)]
        admin: bool,
        /// Token lifetime, e.g. 30d or 12h, or `never` (default 90d).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Replace every token of a user with a new one and print it (shown once).
    ///
    /// For a leaked token: the user's old tokens stop working at once. Admins may rotate
    /// anyone's token, other users only their own (after which the token they called with no
    /// longer works either: keep the new one).
    #[command(after_help = "Example:\n  kanmon users rotate-token ci-bot --json > ci-bot.json")]
    RotateToken {
        /// User name.
        name: String,
        /// Lifetime of the new token, e.g. 30d or 12h, or `never` (default 90d).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Disable a user (admin): its tokens are refused from its next request on.
    Disable {
        /// User name.
        name: String,
    },
    /// Enable a disabled user again (admin).
    Enable {
        /// User name.
        name: String,
    },
}

/// `kanmon grants ...`
#[derive(Debug, Subcommand)]
pub enum GrantsCmd {
    /// List a user's grants with their ids (admins: anyone's; others: their own).
    List {
        /// User name.
        user: String,
    },
    /// Revoke a grant by id (admin). Takes effect on the user's next request.
    #[command(
        after_help = "Example:\n  kanmon grants list bob     # find the id\n  \
        kanmon grants revoke 7"
    )]
    Revoke {
        /// Grant id, from `kanmon grants list`.
        id: u64,
    },
}

/// `kanmon grant ...`
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// User name.
    pub user: String,
    /// Permissions, comma-separated: view,edit,deploy,delete,export,scale,secrets.
    #[arg(long, value_delimiter = ',', required = true)]
    pub permissions: Vec<String>,
    /// Organization (`*` = all); alone: organization-level grant.
    #[arg(long)]
    pub org: Option<String>,
    /// Title, with --org: title-level grant.
    #[arg(long, requires = "org")]
    pub title: Option<String>,
    /// Deployment instance: deployment-level grant (most specific, wins).
    #[arg(long, conflicts_with_all = ["org", "title"])]
    pub deployment: Option<String>,
}

/// `kanmon up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// State directory: SQLite store, admin token, local CA and certificates, node logs,
    /// databases, exports.
    #[arg(long, default_value = ".kanmon")]
    pub dir: PathBuf,
    /// TLS listener of the edge proxy.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// Admin listener of the proxy (/metrics, /healthz, /readyz).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub admin: std::net::SocketAddr,
    /// Control-plane API listener.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub api: std::net::SocketAddr,
    /// Admin listener of the control plane (/metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:9101")]
    pub metrics_listen: std::net::SocketAddr,
    /// Node program (default: `kanmon-bench` next to this executable, else on PATH).
    #[arg(long)]
    pub node_program: Option<PathBuf>,
    /// Node arguments (repeat; default: `node --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --console-listen 127.0.0.1:0`).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// Run without PostgreSQL (nodes get no DATABASE_URL; export holds settings only).
    #[arg(long)]
    pub no_database: bool,
    /// Serve the control API over TLS with a `localhost` certificate from the local CA
    /// (clients: `--server https://localhost:PORT --ca DIR/certs/ca.crt`).
    #[arg(long)]
    pub api_tls: bool,
    /// Instance name of the demo deployment created on first start.
    #[arg(long, default_value = "demo")]
    pub instance: String,
    /// Zone of the demo deployment.
    #[arg(long, default_value = "us-east1")]
    pub zone: String,
    /// Base domain of deployment hostnames (default: the config file's, else kanmon.test).
    #[arg(long)]
    pub base_domain: Option<String>,
    /// Platform configuration (TOML: released versions, zones, base domain; see
    /// control/README.md). Without it the built-in catalogs apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where deployment certificates come from (local CA by default, so it works offline).
    #[command(flatten)]
    pub certs: crate::certs::args::CertArgs,
    /// The cap on every deployment's shutdown grace. A deployment's own `shutdown_grace_sec`
    /// config (Nakama's key; unset: Nakama's default, 0 s) is how long a rolling step lets
    /// its draining node keep connections and how long the node may take after SIGTERM
    /// before it is killed (plus a few seconds to exit); this is the most any deployment gets.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub grace: Duration,
    /// Time between samples of each database's pg_stat_statements (query load, top queries).
    #[arg(long, value_parser = positive_duration, default_value = "10s")]
    pub database_stats_interval: Duration,
    /// Queries per deployment in kanmon_database_top_query_* (by total execution time).
    #[arg(long, default_value_t = 10)]
    pub top_queries: usize,
}

/// A key `kanmon keys --rotate` replaces.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RotateKey {
    /// The server key (Nakama's `socket.server_key`): what game clients present.
    Server,
    /// The runtime key (Nakama's `runtime.http_key`): what server-to-server calls present.
    Runtime,
}

/// `kanmon serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen one is printed). Plain HTTP
    /// is refused on a non-loopback address: give --tls-cert/--tls-key (or --insecure-http).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Admin listener of the control plane (GET /metrics, /healthz; plain HTTP, so keep it on
    /// loopback or a private network; port 0 picks a free port, printed).
    #[arg(long, default_value = "127.0.0.1:9101")]
    pub metrics_listen: String,
    /// Serve the API over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (only when something else, such as a
    /// TLS-terminating proxy on the same host, encrypts the traffic).
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_http: bool,
    /// SQLite database file (created if missing).
    #[arg(long, default_value = "kanmon.db")]
    pub db: PathBuf,
    /// Where the first-start admin token is written (default: next to the database).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Base domain of deployment hostnames (default: the config file's, else kanmon.test).
    #[arg(long)]
    pub base_domain: Option<String>,
    /// Platform configuration (TOML: released versions, zones, base domain; see
    /// control/README.md). Without it the built-in catalogs apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How often deployments' CPUs are sampled for billing (default: the config file's, else
    /// 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub billing_interval: Option<Duration>,
    /// Let notification webhooks reach loopback receivers (tests and development only; the
    /// control plane's own listeners stay refused). Same as `allow_loopback = true` under
    /// `[notifications]` in --config.
    #[arg(long)]
    pub notify_allow_loopback: bool,
    /// Where deployment certificates come from (with --cert-dir).
    #[command(flatten)]
    pub certs: crate::certs::args::CertArgs,
    /// Which driver runs nodes.
    #[arg(long, value_enum, default_value = "loopback")]
    pub driver: DriverKind,
    /// Node program for the local driver.
    #[arg(long, default_value = "kanmon-bench")]
    pub node_program: PathBuf,
    /// Node arguments for the local driver (repeat; default: the demo node's
    /// `node --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --console-listen 127.0.0.1:0`).
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    pub node_args: Vec<String>,
    /// Directory for node logs (local driver).
    #[arg(long, default_value = "logs")]
    pub log_dir: PathBuf,
    /// Write node states to this proxy nodes file (file discovery; not with --driver
    /// kubernetes, whose edge reads EndpointSlices).
    #[arg(long)]
    pub nodes_file: Option<PathBuf>,
    /// Keep a certificate per deployment in this proxy `cert_dir` (from the local CA made
    /// there, whose `ca.crt` clients trust, or from an ACME CA with --certs acme). With
    /// --driver kubernetes the certificates go to kubernetes.io/tls Secrets in
    /// --edge-namespace instead, which every edge replica watches, and this directory holds
    /// only the local CA.
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// The cap on every deployment's shutdown grace. A deployment's own `shutdown_grace_sec`
    /// config (Nakama's key; unset: Nakama's default, 0 s) is how long a rolling step lets
    /// its draining node keep connections and how long the node may take after SIGTERM
    /// before it is killed (plus a few seconds to exit); this is the most any deployment gets.
    /// Under kubernetes a rolling step deletes the pod at once (the cluster drains it) and the
    /// pod's terminationGracePeriodSeconds is --pre-stop + that grace.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub grace: Duration,
    /// How long a started node has to become healthy.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub health_timeout: Duration,
    /// How long a node may crash-loop before the operation fails.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60m")]
    pub crashloop_timeout: Duration,
    /// First CrashLoopBackOff delay (doubles per crash).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub backoff_base: Duration,
    /// Largest CrashLoopBackOff delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub backoff_cap: Duration,
    /// Options of `--driver kubernetes`.
    #[command(flatten)]
    pub kube: super::kube_args::KubeArgs,
}

/// A duration of more than zero (an interval of zero would sample without pause).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        super::Cli::command().debug_assert();
    }

    /// `--help` is the CLI's manual: every command and argument must say something.
    #[test]
    fn every_command_and_argument_has_help() {
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id();
                assert!(arg.get_help().is_some(), "{path} {id} has no help text");
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no help text");
                check(sub, &path);
            }
        }
        check(&super::Cli::command(), "kanmon");
    }

    #[test]
    fn a_zero_database_stats_interval_is_refused() {
        use clap::Parser;
        let err = super::Cli::try_parse_from(["kanmon", "up", "--database-stats-interval", "0s"])
            .expect_err("zero refused");
        assert!(err.to_string().contains("more than zero"), "{err}");
        assert!(
            super::Cli::try_parse_from(["kanmon", "up", "--database-stats-interval", "1s"]).is_ok()
        );
    }
}
