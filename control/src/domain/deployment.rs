//! A deployment: its four permanent choices, its applied spec and its nodes.

use std::{collections::BTreeMap, fmt};

use kanmon_router::{Catalog, Change, InstanceName, Support, Version, Zone};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{serde_names, DomainError, Timestamp};

/// Largest node CPU count offered (one node per CPU in production).
pub const MAX_NODE_CPUS: u32 = 16;
/// Largest database CPU count offered.
pub const MAX_DB_CPUS: u32 = 64;

/// Development deployments run one node and accept brief downtime; production ones are sized
/// for availability and protected from deletion by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentType {
    /// One node, downtime on reboot accepted.
    Development,
    /// One node per CPU; rolling operations keep the others serving.
    Production,
}

impl DeploymentType {
    /// The lower-case name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for DeploymentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many nodes a deployment runs: development always one; production one per node CPU
/// (1 → 1, 2 → 2 for HA, more → more).
pub fn node_count(kind: DeploymentType, node_cpus: u32) -> u32 {
    match kind {
        DeploymentType::Development => 1,
        DeploymentType::Production => node_cpus.max(1),
    }
}

/// Checks a CPU count is in range, naming the resource.
pub fn check_cpus(what: &'static str, got: u32, max: u32) -> Result<(), DomainError> {
    if got == 0 || got > max {
        return Err(DomainError::CpuRange { what, max, got });
    }
    Ok(())
}

/// Checks a variable or config key (keys end up in environment variables and files).
pub fn check_key(key: &str) -> Result<(), DomainError> {
    let ok = (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidKey(key.to_string()))
    }
}

/// Checks that `to` is a supported version and not older than `from`.
pub fn check_version(
    catalog: &Catalog,
    from: Option<&Version>,
    to: &Version,
) -> Result<(), DomainError> {
    match catalog.support(to) {
        Support::Supported => {}
        Support::Unsupported => {
            return Err(DomainError::VersionNotSupported {
                version: *to,
                status: "unsupported",
            })
        }
        Support::Unknown => {
            return Err(DomainError::VersionNotSupported {
                version: *to,
                status: "unknown",
            })
        }
    }
    match from {
        Some(from) if Change::between(from, to) == Change::Downgrade => {
            Err(DomainError::Downgrade {
                from: *from,
                to: *to,
            })
        }
        _ => Ok(()),
    }
}

/// What the nodes run. Changed only by operations, and only when the operation completes, so a
/// failed operation leaves the previous spec in place. `Debug` shows secret config keys only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Spec {
    /// Game-server version.
    #[serde(with = "serde_names::version")]
    #[schema(value_type = String, example = "3.37.0")]
    pub version: Version,
    /// Container image or build override, if any.
    pub image: Option<String>,
    /// Node CPUs (drives the node count).
    pub node_cpus: u32,
    /// Database CPUs (only ever raised).
    pub db_cpus: u32,
    /// Runtime variables.
    pub vars: BTreeMap<String, String>,
    /// Plain configuration.
    pub config: BTreeMap<String, String>,
    /// Secret configuration: merged into the config given to nodes, never shown without the
    /// `secrets` permission, never logged. In API answers the values are present only with
    /// `secrets`; without it every value reads `<redacted>`.
    pub secret_config: BTreeMap<String, String>,
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spec")
            .field("version", &self.version.to_string())
            .field("image", &self.image)
            .field("node_cpus", &self.node_cpus)
            .field("db_cpus", &self.db_cpus)
            .field("vars", &self.vars)
            .field("config", &self.config)
            .field(
                "secret_config_keys",
                &self.secret_config.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The config key under which nodes receive the server key, as Nakama reads it
/// (`socket.server_key`): game clients must present it.
pub const SERVER_KEY_CONFIG: &str = "socket.server_key";
/// The config key under which nodes receive the runtime (HTTP) key, as Nakama reads it
/// (`runtime.http_key`).
pub const RUNTIME_KEY_CONFIG: &str = "runtime.http_key";

/// Nakama's config key for how long a stopping node finishes its work (seconds).
pub const SHUTDOWN_GRACE_CONFIG: &str = "shutdown_grace_sec";
/// The largest `shutdown_grace_sec` accepted (an hour, as the crash-loop timeout).
pub const MAX_SHUTDOWN_GRACE_SEC: u64 = 3600;
/// Nakama's own default for `shutdown_grace_sec` (`server/config.go`: 0, "the server will shut
/// down immediately when it receives a termination signal"): a deployment that does not set
/// the key gets what Nakama would do, not a platform-wide wait.
pub const NAKAMA_DEFAULT_SHUTDOWN_GRACE_SEC: u64 = 0;

/// The shutdown grace of a node running `spec`: how long a rolling operation lets it keep its
/// connections while draining, and how long it may take to exit after SIGTERM before it is
/// killed. The deployment's own `shutdown_grace_sec` ([`NAKAMA_DEFAULT_SHUTDOWN_GRACE_SEC`]
/// when unset), at most `cap` (the platform's `--grace`: the longest an operator lets any
/// tenant hold a rolling step).
pub fn shutdown_grace(spec: &Spec, cap: std::time::Duration) -> std::time::Duration {
    let secs = spec
        .config
        .get(SHUTDOWN_GRACE_CONFIG)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(NAKAMA_DEFAULT_SHUTDOWN_GRACE_SEC);
    std::time::Duration::from_secs(secs).min(cap)
}

/// Which of a deployment's keys an operation rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyName {
    /// The server key (`socket.server_key`).
    Server,
    /// The runtime key (`runtime.http_key`).
    Runtime,
}

impl KeyName {
    /// The name as used in the API and CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Runtime => "runtime",
        }
    }
}

/// The server key and runtime key of a deployment. They come from a CSPRNG outside the domain
/// and are passed in, which keeps the domain deterministic.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    /// Key game clients use to authenticate to the server.
    pub server_key: String,
    /// Key for the runtime (HTTP) API.
    pub runtime_key: String,
}

impl Keys {
    /// These keys with `key` replaced by `value`.
    pub fn with(&self, key: KeyName, value: &str) -> Self {
        let mut keys = self.clone();
        match key {
            KeyName::Server => keys.server_key = value.to_string(),
            KeyName::Runtime => keys.runtime_key = value.to_string(),
        }
        keys
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys { <redacted> }")
    }
}

/// Lifecycle state of one node as the control plane tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeRunState {
    /// Asked to start; not yet healthy.
    Starting,
    /// Healthy and taking connections.
    Ready,
    /// Taking no new connections; waiting for existing ones to end.
    Draining,
    /// Asked to stop, or stopped.
    Stopped,
    /// Exited on start; waiting out a restart delay.
    CrashLoopBackOff,
}

impl NodeRunState {
    /// Whether the node is serving new connections.
    pub fn is_up(self) -> bool {
        self == Self::Ready
    }
}

/// One node of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeRecord {
    /// Position in the deployment (0-based); the node id is derived from it.
    pub slot: u32,
    /// `{instance}-{slot}`: stable across restarts so the proxy keeps one counter per node.
    pub id: String,
    /// Lifecycle state.
    pub state: NodeRunState,
    /// Which spec generation the node runs (or is starting with).
    pub generation: u64,
    /// Bumped on every start; events name the incarnation they are about, so a late report
    /// about a process that was already replaced cannot move the new one's state.
    #[serde(default)]
    pub incarnation: u64,
    /// HTTP/WebSocket address, once the driver reported it (stored as `"ip:port"`, the form
    /// the store and the API always had).
    #[schema(value_type = Option<String>, example = "127.0.0.1:7350")]
    pub addr: Option<std::net::SocketAddr>,
    /// gRPC address, if any.
    #[schema(value_type = Option<String>)]
    pub grpc: Option<std::net::SocketAddr>,
    /// Console address, if the node serves its console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub console: Option<std::net::SocketAddr>,
}

/// Everything a driver needs to start one node. The config holds secret values, so `Debug` is
/// redacted to keep them out of logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLaunch {
    /// Node id.
    pub id: String,
    /// Slot.
    pub slot: u32,
    /// Spec generation.
    pub generation: u64,
    /// Start counter of this node (see [`NodeRecord::incarnation`]).
    pub incarnation: u64,
    /// Version to run.
    #[serde(with = "serde_names::version")]
    pub version: Version,
    /// Image override.
    pub image: Option<String>,
    /// Runtime variables.
    pub vars: BTreeMap<String, String>,
    /// Config merged with secret config (secret values win on a clash).
    pub config: BTreeMap<String, String>,
    /// Which keys of `config` hold secrets (secret config and the deployment's keys), so a
    /// node can tell what never to show.
    #[serde(default)]
    pub secret_keys: std::collections::BTreeSet<String>,
    /// CPUs this node may use ([`super::tier::cpus_per_node`]): the local driver's CPU limit,
    /// the Kubernetes container's requests and limits.
    #[serde(default = "one")]
    pub cpus: u32,
    /// The deployment's database CPUs: the database is sized to this tier before the node
    /// starts.
    #[serde(default = "one")]
    pub db_cpus: u32,
    /// The node's shutdown grace ([`shutdown_grace`] of its spec, capped by the platform):
    /// a local process gets this long after SIGTERM before it is killed, a pod this long
    /// after its preStop pause (`terminationGracePeriodSeconds`). Decided here, applied by
    /// the drivers.
    #[serde(default)]
    pub shutdown_grace: std::time::Duration,
}

fn one() -> u32 {
    1
}

impl fmt::Debug for NodeLaunch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeLaunch")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("incarnation", &self.incarnation)
            .field("version", &self.version.to_string())
            .field("config_keys", &self.config.len())
            .field("cpus", &self.cpus)
            .field("db_cpus", &self.db_cpus)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish_non_exhaustive()
    }
}

/// A request to create a deployment (already parsed into validated names).
#[derive(Debug, Clone)]
pub struct CreateDeployment {
    /// Organization (permission scope).
    pub org: String,
    /// Title (game) within the organization (permission scope).
    pub title: String,
    /// Permanent: instance name.
    pub instance: InstanceName,
    /// Permanent: zone.
    pub zone: Zone,
    /// Permanent: type.
    pub kind: DeploymentType,
    /// Initial version.
    pub version: Version,
    /// Node CPUs.
    pub node_cpus: u32,
    /// Database CPUs.
    pub db_cpus: u32,
    /// Delete protection; `None` takes the default (on for production).
    pub delete_protection: Option<bool>,
}

/// An edit of the mutable settings. The permanent fields are here only so an attempt to change
/// them can be refused with a clear error instead of being silently ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeploymentEdit {
    /// Turn delete protection on or off.
    pub delete_protection: Option<bool>,
    /// Opt-in 503 avoidance for one-node deployments during a reboot.
    pub fallback_to_draining: Option<bool>,
    /// Permanent: refused unless equal to the current value.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Permanent: refused unless equal.
    pub zone: Option<String>,
    /// Permanent: refused unless equal.
    pub instance: Option<String>,
    /// Permanent (changes only through `deploy`): refused unless equal.
    pub version: Option<String>,
}

/// A deployment as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Permanent: instance name (unique on the platform).
    #[serde(with = "serde_names::instance")]
    pub instance: InstanceName,
    /// Permanent: zone.
    #[serde(with = "serde_names::zone")]
    pub zone: Zone,
    /// Permanent: type.
    #[serde(rename = "type")]
    pub kind: DeploymentType,
    /// Organization.
    pub org: String,
    /// Title.
    pub title: String,
    /// `{instance}.{zone}.{base_domain}`.
    pub hostname: String,
    /// The applied spec.
    pub spec: Spec,
    /// Bumped each time an operation changes the spec.
    pub generation: u64,
    /// Refuses delete while on.
    pub delete_protection: bool,
    /// See [`kanmon_router::DeploymentSpec::fallback_to_draining`].
    pub fallback_to_draining: bool,
    /// Client networks that may reach the console (`kanmon_router::console`); empty: closed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console_allow: Vec<ipnet::IpNet>,
    /// The nodes.
    pub nodes: Vec<NodeRecord>,
    /// Secret keys.
    pub keys: Keys,
    /// Creation time.
    pub created_at: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// Set once a delete operation completed.
    pub deleted: bool,
    /// One downgrade a platform admin allowed (the support team's intervention); consumed by
    /// the deploy that completes to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade_allowance: Option<DowngradeAllowance>,
}

/// A platform admin's permission for one deploy to an older version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DowngradeAllowance {
    /// The one older version a deploy may move to.
    #[serde(with = "serde_names::version")]
    #[schema(value_type = String)]
    pub version: Version,
    /// The admin who allowed it.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

impl Deployment {
    /// Allows the next deploy to `to`, an older supported version than the running one. A new
    /// allowance replaces an unused one: there is only ever one.
    pub fn allow_downgrade(
        &mut self,
        catalog: &Catalog,
        to: Version,
        who: &str,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if self.deleted {
            return Err(DomainError::Deleted);
        }
        check_version(catalog, None, &to)?;
        if Change::between(&self.spec.version, &to) != Change::Downgrade {
            return Err(DomainError::NotADowngrade {
                from: self.spec.version,
                to,
            });
        }
        self.downgrade_allowance = Some(DowngradeAllowance {
            version: to,
            by: who.to_string(),
            at: now,
        });
        Ok(())
    }

    /// Whether a deploy to `to` is the allowed downgrade.
    pub fn downgrade_allowed(&self, to: &Version) -> bool {
        self.downgrade_allowance
            .as_ref()
            .is_some_and(|a| a.version == *to)
    }

    /// Called when a deploy completed: a deploy that reached the allowed version used the
    /// allowance up.
    pub fn deployed(&mut self) {
        if self.downgrade_allowed(&self.spec.version) {
            self.downgrade_allowance = None;
        }
    }

    /// Validates a create request. The zone must be offered (`zones` lists `(zone, on_request)`,
    /// on-request zones the organization was given listed as offered)
    /// and the version supported; keys come from the caller's CSPRNG.
    pub fn create(
        req: CreateDeployment,
        catalog: &Catalog,
        zones: &[(Zone, bool)],
        base_domain: &str,
        keys: Keys,
        who: &str,
        now: Timestamp,
    ) -> Result<Self, DomainError> {
        match zones.iter().find(|(z, _)| *z == req.zone) {
            None => return Err(DomainError::UnknownZone(req.zone.to_string())),
            Some((_, true)) => {
                return Err(DomainError::ZoneOnRequest {
                    zone: req.zone.to_string(),
                    org: req.org.clone(),
                })
            }
            Some((_, false)) => {}
        }
        check_version(catalog, None, &req.version)?;
        check_cpus("node_cpus", req.node_cpus, MAX_NODE_CPUS)?;
        check_cpus("db_cpus", req.db_cpus, MAX_DB_CPUS)?;
        let hostname = kanmon_router::hostname(&req.instance, &req.zone, base_domain);
        let production = req.kind == DeploymentType::Production;
        Ok(Self {
            hostname,
            kind: req.kind,
            org: req.org,
            title: req.title,
            spec: Spec {
                version: req.version,
                image: None,
                node_cpus: req.node_cpus,
                db_cpus: req.db_cpus,
                vars: BTreeMap::new(),
                config: BTreeMap::new(),
                secret_config: BTreeMap::new(),
            },
            generation: 0,
            delete_protection: req.delete_protection.unwrap_or(production),
            fallback_to_draining: false,
            console_allow: Vec::new(),
            nodes: Vec::new(),
            keys,
            created_at: now,
            created_by: who.to_string(),
            deleted: false,
            downgrade_allowance: None,
            instance: req.instance,
            zone: req.zone,
        })
    }

    /// Applies an edit, refusing any change of a permanent choice. All checks run before any
    /// field changes, so a refused edit changes nothing.
    pub fn edit(&mut self, e: &DeploymentEdit) -> Result<(), DomainError> {
        let same = |given: &Option<String>, current: &str| {
            given
                .as_deref()
                .is_none_or(|g| g.eq_ignore_ascii_case(current))
        };
        if !same(&e.kind, self.kind.as_str()) {
            return Err(DomainError::PermanentChoice { field: "type" });
        }
        if !same(&e.zone, self.zone.as_str()) {
            return Err(DomainError::PermanentChoice { field: "zone" });
        }
        if !same(&e.instance, self.instance.as_str()) {
            return Err(DomainError::PermanentChoice { field: "instance" });
        }
        if !same(&e.version, &self.spec.version.to_string()) {
            return Err(DomainError::PermanentChoice { field: "version" });
        }
        if self.deleted {
            return Err(DomainError::Deleted);
        }
        if let Some(p) = e.delete_protection {
            self.delete_protection = p;
        }
        if let Some(f) = e.fallback_to_draining {
            self.fallback_to_draining = f;
        }
        Ok(())
    }

    /// How many nodes `spec` asks for.
    pub fn wanted_nodes(&self, spec: &Spec) -> u32 {
        node_count(self.kind, spec.node_cpus)
    }

    /// The launch description of node `slot` under `spec` at `generation`, with the
    /// deployment's current keys. The incarnation is the node's current one plus one: the
    /// launch is a new start. `grace_cap` is the platform's cap on the shutdown grace
    /// ([`shutdown_grace`]).
    pub fn launch(
        &self,
        slot: u32,
        spec: &Spec,
        generation: u64,
        grace_cap: std::time::Duration,
    ) -> NodeLaunch {
        self.launch_with(slot, spec, &self.keys, generation, grace_cap)
    }

    /// [`Deployment::launch`] with `keys` (a key rotation's new keys). The keys join the
    /// config as Nakama takes them ([`SERVER_KEY_CONFIG`], [`RUNTIME_KEY_CONFIG`]), after
    /// the user's config, whose rules refuse those two names.
    pub fn launch_with(
        &self,
        slot: u32,
        spec: &Spec,
        keys: &Keys,
        generation: u64,
        grace_cap: std::time::Duration,
    ) -> NodeLaunch {
        let mut config = spec.config.clone();
        config.extend(spec.secret_config.clone());
        config.insert(SERVER_KEY_CONFIG.into(), keys.server_key.clone());
        config.insert(RUNTIME_KEY_CONFIG.into(), keys.runtime_key.clone());
        let secret_keys = spec
            .secret_config
            .keys()
            .cloned()
            .chain([SERVER_KEY_CONFIG.into(), RUNTIME_KEY_CONFIG.into()])
            .collect();
        NodeLaunch {
            id: node_id(&self.instance, slot),
            slot,
            generation,
            incarnation: self
                .nodes
                .iter()
                .find(|n| n.slot == slot)
                .map_or(1, |n| n.incarnation + 1),
            version: spec.version,
            image: spec.image.clone(),
            vars: spec.vars.clone(),
            config,
            cpus: super::tier::cpus_per_node(self.kind, spec.node_cpus),
            db_cpus: spec.db_cpus,
            secret_keys,
            shutdown_grace: shutdown_grace(spec, grace_cap),
        }
    }

    /// The node in `slot`, if any.
    pub fn node_mut(&mut self, slot: u32) -> Option<&mut NodeRecord> {
        self.nodes.iter_mut().find(|n| n.slot == slot)
    }
}

/// The id of node `slot` of `instance`.
pub fn node_id(instance: &InstanceName, slot: u32) -> String {
    format!("{instance}-{slot}")
}
