//! The proxy's TOML configuration (DESIGN.md, "Proxy configuration").
//!
//! Parsed once into validated types: every field has a default, unknown keys are errors that
//! name the line and key (serde's `deny_unknown_fields` through the `toml` crate's spans), and
//! relative paths are taken relative to the config file so a config works from any directory.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown/invalid keys (the message names line and key).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is well-formed but breaks a rule.
    #[error("invalid config {path}: {key}: {rule}")]
    Rule {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        rule: String,
    },
}

/// Whole proxy configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Listening addresses.
    pub listen: Listen,
    /// Certificates.
    pub tls: Tls,
    /// Hostname rules.
    pub routing: Routing,
    /// Where the node health table comes from.
    pub discovery: Discovery,
    /// Graceful shutdown.
    pub shutdown: Shutdown,
    /// Limits against bad or abusive clients.
    pub limits: Limits,
    /// WebSocket policy.
    pub websocket: WebSocket,
    /// Upstream (node) connections.
    pub upstream: Upstream,
    /// Process-level settings.
    pub server: Server,
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// TLS listener for game clients.
    pub tls: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin: SocketAddr,
    /// Optional plain-HTTP listener that answers only ACME HTTP-01 validations (see
    /// `tls::http01`); none by default: TLS-ALPN-01 needs only the TLS listener.
    pub http: Option<SocketAddr>,
    /// Whether connections from `trusted_proxies` start with a PROXY protocol header (which
    /// is then required from them) carrying the client's address.
    pub proxy_protocol: ProxyProtocolMode,
    /// The load balancers allowed to send a PROXY protocol header; from anywhere else a
    /// header is refused, so a client cannot claim another's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a trusted peer has to send its whole header: a silent one cannot hold a
    /// connection slot.
    #[serde(with = "humantime_serde")]
    pub proxy_protocol_timeout: Duration,
}

/// `listen.proxy_protocol`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ProxyProtocolMode {
    /// No header is expected from anyone.
    #[serde(rename = "off")]
    Off,
    /// Binary version 2 (what cloud load balancers send).
    #[serde(rename = "v2")]
    V2,
    /// Version 2, or the text version 1 of older balancers.
    #[serde(rename = "v1+v2")]
    V1V2,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            tls: SocketAddr::from(([0, 0, 0, 0], 443)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9100)),
            http: None,
            proxy_protocol: ProxyProtocolMode::Off,
            trusted_proxies: Vec::new(),
            proxy_protocol_timeout: Duration::from_secs(5),
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Directory of `<hostname>.crt` / `<hostname>.key` pairs, watched and hot reloaded.
    pub cert_dir: PathBuf,
    /// Stateless TLS 1.3 session tickets sent after each handshake; 0 turns resumption off.
    /// One by default: a reconnecting client needs one (TLS 1.3 tickets are single-use and
    /// every resumed handshake brings a fresh one), and each extra ticket costs every
    /// handshake a seal and a record.
    pub session_tickets: usize,
    /// Session-ticket keys shared by every replica (one 64-hex-digit key per line, the first
    /// seals; re-read on change). Without it each process seals with its own in-memory keys,
    /// so a ticket resumes only on the process that issued it.
    pub ticket_key_file: Option<PathBuf>,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            cert_dir: PathBuf::from("certs"),
            session_tickets: 1,
            ticket_key_file: None,
        }
    }
}

/// `[routing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    /// Hostnames are `{instance}.{zone}.{base_domain}`.
    pub base_domain: String,
    /// The first label of a deployment's console hostname, `{console_label}.{zone}.{base_domain}`:
    /// `{instance}` once with a fixed prefix or suffix (default `{instance}-console`).
    pub console_label: String,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            base_domain: "kanmon.test".into(),
            console_label: kanmon_router::ConsoleNames::DEFAULT_PATTERN.into(),
        }
    }
}

/// Which discovery source feeds the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    /// A watched TOML nodes file.
    File,
    /// Kubernetes EndpointSlices.
    Kubernetes,
}

/// `[discovery]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// The source kind.
    pub kind: DiscoveryKind,
    /// The nodes file, for `kind = "file"`.
    pub path: PathBuf,
    /// Namespaces to watch, for `kind = "kubernetes"`; empty means all (which needs a
    /// ClusterRole rather than per-namespace Roles).
    pub namespaces: Vec<String>,
    /// How long the Kubernetes API may be unreachable before `/readyz` says "stale" in its
    /// body (still 200: the last good table stays in force and the replica can serve).
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// A kubeconfig file for running outside the cluster; unset means the in-cluster service
    /// account, else `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace that owns an instance, `{instance}` standing for its name: a Service
    /// claiming the instance from any other namespace is refused, so whoever can create a
    /// Service somewhere cannot take another tenant's traffic. Without `{instance}`, that one
    /// namespace owns every instance.
    pub instance_namespace: String,
    /// Instances owned by a namespace other than `instance_namespace`'s (instance → namespace).
    pub owners: BTreeMap<String, String>,
    /// Endpoint addresses may only route into these networks (the cluster's pod ranges), so a
    /// slice cannot turn the proxy into a relay onto any host. Loopback and link-local
    /// addresses also need an entry inside those ranges: `0.0.0.0/0` does not admit them.
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// With `kind = "kubernetes"`: also serve the certificates of `kubernetes.io/tls` Secrets
    /// labelled `kanmon.dev/certificate` in `certificate_namespace` (what `kanmon serve
    /// --driver kubernetes` writes), beside `tls.cert_dir`. Needs get/list/watch on Secrets
    /// in that namespace (configs/kubernetes/10-rbac.yaml).
    pub certificate_secrets: bool,
    /// The one namespace whose certificate Secrets are served; unset: the proxy's own (the
    /// in-cluster service account's namespace, else the kubeconfig context's). Never a
    /// tenant's.
    pub certificate_namespace: Option<String>,
}

/// Where pod networks are allocated unless a cluster says otherwise: RFC 1918, the shared
/// address space (RFC 6598, used by some CNIs) and IPv6 unique-local addresses.
pub const DEFAULT_POD_CIDRS: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

impl Default for Discovery {
    fn default() -> Self {
        Self {
            kind: DiscoveryKind::File,
            path: PathBuf::from("nodes.toml"),
            namespaces: Vec::new(),
            stale_after: Duration::from_secs(30),
            kubeconfig: None,
            instance_namespace: "kanmon-{instance}".into(),
            owners: BTreeMap::new(),
            allowed_cidrs: DEFAULT_POD_CIDRS
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            certificate_secrets: true,
            certificate_namespace: None,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shutdown {
    /// How long live connections may run after SIGTERM. The process exits as soon as the last
    /// one ends, so this is an upper bound, not a wait.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Socket path for graceful binary upgrades (pingora's listener hand-over). Its directory
    /// must be this user's and closed to others (created 0700 when missing). Unset (empty):
    /// `$RUNTIME_DIRECTORY/kanmon-proxy-upgrade.sock`, else `run/upgrade.sock` beside the
    /// config file (see `upgrade_sock`).
    pub upgrade_sock: PathBuf,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(10),
            upgrade_sock: PathBuf::new(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request header block (names + values) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Most concurrent connections and in-flight requests per deployment; past it, 503.
    pub max_connections_per_deployment: u64,
    /// How long a request head may take to arrive before the connection is closed, and the
    /// grace a body has before `min_body_rate` applies: slow clients cannot hold connections
    /// open for free.
    #[serde(with = "humantime_serde")]
    pub request_read_timeout: Duration,
    /// How long a TLS handshake may take before the connection is dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How long one write to a client or a node (a response chunk, a request body chunk, a
    /// WebSocket frame) may take: a peer that stops reading cannot hold a node connection
    /// and a deployment slot forever.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Bytes per second a request body must average once `request_read_timeout` (its grace)
    /// has passed: one deadline for the whole body, so a client trickling a byte at a time
    /// cannot stretch it the way a per-read deadline would let it.
    pub min_body_rate: u64,
    /// Most connections open at once from one client address (IPv6: one /64); 0 is no limit.
    /// Sized for carrier-grade NAT, where many players share an address.
    pub max_connections_per_client: u32,
    /// Most new connections (TLS handshakes) per second from one client address (IPv6: one
    /// /64), with a burst of as many; 0 is no limit.
    pub max_handshakes_per_client: u32,
    /// Whether loopback clients (the host itself: a local load generator, health checks, a
    /// local L4 balancer that does not pass client addresses on) are exempt from the
    /// per-client limits.
    pub exempt_loopback: bool,
    /// Most TLS handshakes running at once in the whole proxy (all threads share the cores);
    /// more wait in a queue. Unset: [`DEFAULT_HANDSHAKES_PER_THREAD`] per `server.threads`;
    /// 0 turns admission off (every handshake starts at once).
    pub max_handshakes_in_progress: Option<u32>,
    /// Most handshakes waiting for a slot; past it, new connections are closed before any
    /// TLS work. 0: none wait.
    pub max_queued_handshakes: u32,
    /// Longest wait for a slot: a handshake that would wait longer is refused (its TCP
    /// connection closed), so its client retries at once elsewhere or after its backoff,
    /// instead of timing out after the edge has spent a handshake on it.
    #[serde(with = "humantime_serde")]
    pub handshake_queue_timeout: Duration,
    /// Whether queued resumed handshakes (the ClientHello offers a pre-shared key, ~10× cheaper
    /// than a full one) start before queued full ones.
    pub resumed_handshakes_first: bool,
}

/// Handshakes in progress per proxy thread when `limits.max_handshakes_in_progress` is unset.
/// A full handshake costs the proxy 0.2–0.36 ms of CPU (README, reconnect storm), so 256 on
/// one thread all wanting their crypto at once are done within ~60–90 ms, far inside any
/// client's timeout; and since a slot is held through the client's second flight, at a
/// 100 ms round trip 256 still admit ~2,500 handshakes/s per thread, more than a thread
/// completes besides its other work (~1,300 connects/s per core measured).
pub const DEFAULT_HANDSHAKES_PER_THREAD: u32 = 256;

impl Limits {
    /// The handshake admission policy for a proxy of `threads` threads; `None`: off.
    pub fn handshake_queue(&self, threads: usize) -> Option<crate::handshake_queue::QueueLimits> {
        let threads = u32::try_from(threads).unwrap_or(u32::MAX);
        let max_in_progress = self
            .max_handshakes_in_progress
            .unwrap_or(DEFAULT_HANDSHAKES_PER_THREAD.saturating_mul(threads.max(1)));
        (max_in_progress > 0).then(|| crate::handshake_queue::QueueLimits {
            max_in_progress,
            max_queued: self.max_queued_handshakes,
            queue_timeout_ms: u64::try_from(self.handshake_queue_timeout.as_millis())
                .unwrap_or(u64::MAX),
            resumed_first: self.resumed_handshakes_first,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_connections_per_deployment: 20_000,
            request_read_timeout: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            max_connections_per_client: 1000,
            max_handshakes_per_client: 200,
            exempt_loopback: true,
            max_handshakes_in_progress: None,
            max_queued_handshakes: 8192,
            handshake_queue_timeout: Duration::from_secs(3),
            resumed_handshakes_first: true,
        }
    }
}

/// `[websocket]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocket {
    /// A WebSocket with no traffic from the client for this long is closed. Well above
    /// Nakama's 25 s ping interval, so a live client is never cut.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// `[upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// Connect timeout to a node.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a node that refused a connection is skipped by new picks.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
    /// How long an idle pooled keep-alive connection to a node is kept.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// How long a node may take to start an HTTP/1.1 response (and between two reads of its
    /// body) before the client gets 504: a hung node must not hold client connections
    /// forever. (gRPC streams over h2 are left to their own deadlines.)
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            eject_for: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Whether idle worker threads take tasks queued on busy ones (tokio's multi-thread
    /// scheduler). Off (the default), each thread runs its own single-threaded runtime and a
    /// connection stays on the thread it was given, like an NGINX worker: no cross-thread
    /// wake-ups, and the per-thread upstream pool and buffer pool always hit. Measured on the
    /// comparison harness (README): off was as good or better in every paired run, up to
    /// 1.4× the requests/s on a busy machine.
    pub work_stealing: bool,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            work_stealing: false,
        }
    }
}

impl ProxyConfig {
    /// Reads, parses and validates `path`; relative paths inside are resolved against the
    /// file's directory, and an unset upgrade socket goes to `$RUNTIME_DIRECTORY`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let runtime_dir = std::env::var_os("RUNTIME_DIRECTORY").map(PathBuf::from);
        Self::load_with_runtime_dir(path, runtime_dir.as_deref())
    }

    /// [`ProxyConfig::load`] with the runtime directory given rather than read from the
    /// environment.
    pub fn load_with_runtime_dir(
        path: &Path,
        runtime_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.tls.cert_dir = base.join(&cfg.tls.cert_dir);
        cfg.tls.ticket_key_file = cfg.tls.ticket_key_file.map(|p| base.join(p));
        cfg.discovery.path = base.join(&cfg.discovery.path);
        cfg.discovery.kubeconfig = cfg.discovery.kubeconfig.map(|p| base.join(p));
        cfg.shutdown.upgrade_sock = if cfg.shutdown.upgrade_sock.as_os_str().is_empty() {
            crate::upgrade_sock::default_path(path, runtime_dir)
        } else {
            base.join(&cfg.shutdown.upgrade_sock)
        };
        Ok(cfg)
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let rule = |key, rule: &str| ConfigError::Rule {
            path: path.into(),
            key,
            rule: rule.into(),
        };
        if cfg.routing.base_domain.trim_matches('.').is_empty() {
            return Err(rule("routing.base_domain", "must not be empty"));
        }
        if let Err(e) = kanmon_router::ConsoleNames::parse(&cfg.routing.console_label) {
            return Err(rule("routing.console_label", &e.to_string()));
        }
        if cfg.discovery.instance_namespace.is_empty()
            || cfg.discovery.owners.values().any(String::is_empty)
        {
            return Err(rule(
                "discovery.instance_namespace",
                "an owning namespace must not be empty",
            ));
        }
        if cfg.server.threads == 0 {
            return Err(rule("server.threads", "must be at least 1"));
        }
        if cfg.limits.max_header_bytes < 1024 {
            return Err(rule("limits.max_header_bytes", "must be at least 1024"));
        }
        if cfg.limits.min_body_rate == 0 {
            return Err(rule("limits.min_body_rate", "must be at least 1"));
        }
        if cfg.listen.proxy_protocol != ProxyProtocolMode::Off
            && cfg.listen.trusted_proxies.is_empty()
        {
            return Err(rule(
                "listen.trusted_proxies",
                "must list the load balancers' networks when listen.proxy_protocol is on",
            ));
        }
        if cfg.shutdown.grace_period.is_zero() {
            return Err(rule("shutdown.grace_period", "must be more than 0s"));
        }
        for (key, value) in [
            (
                "limits.request_read_timeout",
                cfg.limits.request_read_timeout,
            ),
            ("limits.write_timeout", cfg.limits.write_timeout),
            (
                "limits.handshake_queue_timeout",
                cfg.limits.handshake_queue_timeout,
            ),
            (
                "listen.proxy_protocol_timeout",
                cfg.listen.proxy_protocol_timeout,
            ),
            ("upstream.connect_timeout", cfg.upstream.connect_timeout),
            ("upstream.response_timeout", cfg.upstream.response_timeout),
        ] {
            if value.is_zero() {
                return Err(rule(key, "must be more than 0s"));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_defaults() {
        let cfg = ProxyConfig::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(cfg.listen.tls.port(), 443);
        assert_eq!(cfg.shutdown.grace_period, Duration::from_secs(10));
        assert_eq!(cfg.discovery.kind, DiscoveryKind::File);
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for name in ["dev.toml", "prod.toml"] {
            let cfg = ProxyConfig::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!cfg.routing.base_domain.is_empty(), "{name}");
            let sock_dir = cfg.shutdown.upgrade_sock.parent().unwrap();
            assert_ne!(sock_dir, Path::new("/tmp"), "{name}: a shared directory");
        }
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
[listen]
tls = "127.0.0.1:8443"
admin = "127.0.0.1:9100"
[tls]
cert_dir = "certs"
[routing]
base_domain = "kanmon.test"
[discovery]
kind = "file"
path = "nodes.toml"
[shutdown]
grace_period = "10s"
"#;
        let cfg = ProxyConfig::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(cfg.listen.tls.port(), 8443);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = ProxyConfig::parse(
            "[listen]\ntls = \"127.0.0.1:1\"\nbogus = 1\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn the_upgrade_socket_is_never_in_a_shared_directory_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "").unwrap();
        let cfg = ProxyConfig::load_with_runtime_dir(&path, None).unwrap();
        assert_eq!(
            cfg.shutdown.upgrade_sock,
            dir.path().join("run/upgrade.sock")
        );
        let cfg = ProxyConfig::load_with_runtime_dir(&path, Some(Path::new("/run/k"))).unwrap();
        assert_eq!(
            cfg.shutdown.upgrade_sock,
            Path::new("/run/k/kanmon-proxy-upgrade.sock")
        );
        std::fs::write(&path, "[shutdown]\nupgrade_sock = \"u/x.sock\"\n").unwrap();
        let cfg = ProxyConfig::load_with_runtime_dir(&path, None).unwrap();
        assert_eq!(cfg.shutdown.upgrade_sock, dir.path().join("u/x.sock"));
        assert!(!ProxyConfig::default()
            .shutdown
            .upgrade_sock
            .starts_with("/tmp"));
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies() {
        let text = "[listen]\nproxy_protocol = \"v1+v2\"\n";
        let err = ProxyConfig::parse(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.trusted_proxies"), "{err}");
        let text = "[listen]\nproxy_protocol = \"v2\"\ntrusted_proxies = [\"10.0.0.0/8\"]\nproxy_protocol_timeout = \"2s\"\n";
        let cfg = ProxyConfig::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(cfg.listen.proxy_protocol, ProxyProtocolMode::V2);
        assert_eq!(cfg.listen.proxy_protocol_timeout, Duration::from_secs(2));
        let err = ProxyConfig::parse("[listen]\nproxy_protocol = \"v3\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("proxy_protocol"), "{err}");
    }

    #[test]
    fn a_console_label_without_its_placeholder_is_refused() {
        let err = ProxyConfig::parse(
            "[routing]\nconsole_label = \"console\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("routing.console_label"), "{err}");
        let ok = ProxyConfig::parse(
            "[routing]\nconsole_label = \"admin-{instance}\"\n",
            Path::new("x.toml"),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn handshake_admission_defaults_scale_with_threads_and_zero_is_off() {
        let cfg = ProxyConfig::parse("[server]\nthreads = 3\n", Path::new("x.toml")).unwrap();
        let q = cfg.limits.handshake_queue(cfg.server.threads).unwrap();
        assert_eq!(q.max_in_progress, 3 * DEFAULT_HANDSHAKES_PER_THREAD);
        assert_eq!(q.max_queued, 8192);
        assert_eq!(q.queue_timeout_ms, 3000);
        assert!(q.resumed_first);
        let text = "[limits]\nmax_handshakes_in_progress = 4\nmax_queued_handshakes = 0\nhandshake_queue_timeout = \"250ms\"\nresumed_handshakes_first = false\n";
        let cfg = ProxyConfig::parse(text, Path::new("x.toml")).unwrap();
        let q = cfg.limits.handshake_queue(2).unwrap();
        assert_eq!(
            (q.max_in_progress, q.max_queued, q.queue_timeout_ms),
            (4, 0, 250)
        );
        assert!(!q.resumed_first);
        let off = ProxyConfig::parse(
            "[limits]\nmax_handshakes_in_progress = 0\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert!(off.limits.handshake_queue(2).is_none());
        let err = ProxyConfig::parse(
            "[limits]\nhandshake_queue_timeout = \"0s\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.handshake_queue_timeout"), "{err}");
        let err = ProxyConfig::parse(
            "[limits]\nmax_handshakes_in_progress = -1\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_handshakes_in_progress"), "{err}");
    }

    #[test]
    fn rules_are_named() {
        let err = ProxyConfig::parse("[server]\nthreads = 0\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.threads"), "{err}");
    }
}
