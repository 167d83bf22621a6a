//! Notifications when operations end, as plain data and functions: which event a finished
//! operation is, which subscriptions hear it, what the message says, how its body is signed,
//! when a failed delivery is tried again, and which addresses a webhook may never reach.
//! Sending is the delivery worker's job ([`crate::notify`]); nothing here does I/O.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use utoipa::ToSchema;

use super::{Deployment, OpStatus, Operation, Timestamp};

/// The start of the error of an operation that a newer one superseded (set by the controller).
pub const SUPERSEDED: &str = "superseded by operation";

/// What happened to an operation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
pub enum NotifyEvent {
    /// It completed: the deployment has the new state.
    #[serde(rename = "operation.completed")]
    Completed,
    /// It failed (refused at start, crashed out, timed out, interrupted by a restart).
    #[serde(rename = "operation.failed")]
    Failed,
    /// A newer operation took its place while it was stuck in CrashLoopBackOff.
    #[serde(rename = "operation.superseded")]
    Superseded,
}

impl NotifyEvent {
    /// Every event.
    pub const ALL: [Self; 3] = [Self::Completed, Self::Failed, Self::Superseded];

    /// The name used in the API, the payload and the `Kanmon-Event` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "operation.completed",
            Self::Failed => "operation.failed",
            Self::Superseded => "operation.superseded",
        }
    }

    /// The event for `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The event a finished operation is; `None` while it is still pending or running.
    pub fn of(op: &Operation) -> Option<Self> {
        match op.status {
            OpStatus::Completed => Some(Self::Completed),
            OpStatus::Failed
                if op
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(SUPERSEDED)) =>
            {
                Some(Self::Superseded)
            }
            OpStatus::Failed => Some(Self::Failed),
            OpStatus::Pending | OpStatus::InProgress => None,
        }
    }
}

/// Where a subscription listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "level", rename_all = "lowercase")]
pub enum SubScope {
    /// Every deployment of an organization.
    Organization {
        /// Organization.
        org: String,
    },
    /// One deployment.
    Deployment {
        /// Instance name.
        instance: String,
    },
}

/// How a subscription is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Channel {
    /// A signed JSON POST to `url`.
    Webhook {
        /// The receiver (http or https). Secret in part: in API answers the URL is shown in
        /// full only with `secrets` where the subscription lives, otherwise as
        /// `scheme://host[:port]/…` (chat webhooks carry their token in the path).
        url: String,
    },
    /// An e-mail to `to` through the configured SMTP server.
    Email {
        /// The recipient address.
        to: String,
    },
}

impl Channel {
    /// `webhook` or `email` (a bounded metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Email { .. } => "email",
        }
    }
}

/// One subscription. Its signing secret is stored beside it, never in this record, so that
/// listing subscriptions cannot leak it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    /// Id (assigned by the store).
    pub id: u64,
    /// Where it listens.
    pub scope: SubScope,
    /// The organization it belongs to (for a deployment's: that deployment's).
    pub org: String,
    /// How it is told.
    pub channel: Channel,
    /// Which events it hears.
    pub events: BTreeSet<NotifyEvent>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

impl Subscription {
    /// Whether it hears `event` of a deployment `instance` of organization `org`.
    pub fn hears(&self, org: &str, instance: &str, event: NotifyEvent) -> bool {
        let here = match &self.scope {
            SubScope::Organization { org: o } => o == org,
            SubScope::Deployment { instance: i } => i == instance && self.org == org,
        };
        here && self.events.contains(&event)
    }
}

/// The event of `op` and the subscriptions (of `subs`) that hear it: none for an unfinished
/// operation. Each subscription at most once, in the order given.
pub fn route<'a>(
    subs: &'a [Subscription],
    dep: &Deployment,
    op: &Operation,
) -> Option<(NotifyEvent, Vec<&'a Subscription>)> {
    let event = NotifyEvent::of(op)?;
    let mut seen = BTreeSet::new();
    let hit = subs
        .iter()
        .filter(|s| s.hears(&dep.org, dep.instance.as_str(), event) && seen.insert(s.id))
        .collect();
    Some((event, hit))
}

/// The message of `event` about `op`: what it was, how it ended, who asked. Never the
/// operation's payload (config values may be secret); the error was scrubbed of the
/// deployment's secrets before it was stored.
pub fn payload(dep: &Deployment, op: &Operation, event: NotifyEvent) -> Value {
    json!({
        "event": event.as_str(),
        "deployment": {
            "instance": dep.instance.as_str(),
            "org": dep.org,
            "title": dep.title,
            "zone": dep.zone.as_str(),
        },
        "operation": {
            "id": op.id,
            "kind": op.kind.name(),
            "status": op.status.as_str(),
            "requested_by": op.requested_by,
            "requested_at": op.requested_at,
            "started_at": op.started_at,
            "finished_at": op.finished_at,
            "error": op.error,
        },
    })
}

/// The `Kanmon-Signature` header value for `body` sent at `unix` seconds:
/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>.<body>")>`. The time is inside the signed
/// text, so a receiver that refuses old `t` values cannot be replayed an old message.
pub fn signature(secret: &str, unix: u64, body: &[u8]) -> String {
    format!("t={unix},v1={}", hex(&mac(secret, unix, body)))
}

fn mac(secret: &str, unix: u64, body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    m.update(unix.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a receiver does: true when `header` signs `body` with `secret` and its time is within
/// `tolerance` of `now_unix`. The comparison is constant-time.
pub fn verify(secret: &str, header: &str, body: &[u8], now_unix: u64, tolerance: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now_unix) > tolerance {
        return false;
    }
    let Some(given) = unhex(v1) else { return false };
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.verify_slice(&given).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// When failed deliveries are tried again: after `base`, doubling each time up to `cap`, at
/// most `attempts` tries in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Wait after the first failure.
    pub base: Duration,
    /// Longest wait.
    pub cap: Duration,
    /// Tries in all (the first included).
    pub attempts: u32,
}

impl Default for Retry {
    /// 8 tries over about 21 minutes (10 s, 20 s, 40 s, … capped at 10 min).
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(600),
            attempts: 8,
        }
    }
}

impl Retry {
    /// When to try again after the `made`-th try failed at `now`; `None` when no try is left.
    pub fn next(&self, made: u32, now: Timestamp) -> Option<Timestamp> {
        if made >= self.attempts {
            return None;
        }
        let doubling = 2u32.saturating_pow(made.saturating_sub(1));
        Some(now.after(self.base.saturating_mul(doubling).min(self.cap)))
    }
}

/// Why a webhook target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// Not an http(s) URL of a host.
    #[error("webhook url: {0}")]
    Url(String),
    /// The address is one the control plane must not be made to call.
    #[error("webhook target {addr} is refused: {why}")]
    Address {
        /// The address.
        addr: SocketAddr,
        /// Which rule.
        why: &'static str,
    },
}

/// The addresses webhooks may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Loopback receivers are allowed (tests and development only).
    pub allow_loopback: bool,
    /// The control plane's own listeners (API, metrics): never a webhook target.
    pub own: Vec<SocketAddr>,
}

impl Reach {
    /// Refuses `addr` when it is one of the control plane's listeners, loopback (unless
    /// allowed), link-local (cloud metadata services live at 169.254.169.254), private,
    /// shared, unspecified, broadcast or multicast: a tenant's URL must not make the control
    /// plane call into its own network.
    pub fn check(&self, addr: SocketAddr) -> Result<(), TargetRefused> {
        let ip = canonical(addr.ip());
        let refuse = |why| Err(TargetRefused::Address { addr, why });
        let own = self.own.iter().any(|o| {
            o.port() == addr.port()
                && (canonical(o.ip()) == ip
                    || (o.ip().is_unspecified() && (ip.is_loopback() || private(ip))))
        });
        if own {
            return refuse("it is a listener of the control plane");
        }
        if ip.is_loopback() {
            return if self.allow_loopback {
                Ok(())
            } else {
                refuse("loopback (allowed only with --notify-allow-loopback)")
            };
        }
        if ip.is_unspecified() || ip.is_multicast() || broadcast(ip) {
            return refuse("not a unicast address");
        }
        if link_local(ip) {
            return refuse("link-local (cloud metadata lives there)");
        }
        if private(ip) {
            return refuse("a private or shared network address");
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4 == Ipv4Addr::BROADCAST)
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (64..128).contains(&b)) || a == 0
        }
        IpAddr::V6(v6) => v6.segments()[0] & 0xfe00 == 0xfc00 || v6 == Ipv6Addr::UNSPECIFIED,
    }
}

/// A webhook URL parsed and checked for its shape: http or https, a host, no user name or
/// password (they would show in every listing), at most 2048 characters. An IP-literal host
/// is checked against `reach` now; a name is checked each time it is resolved.
pub fn check_url(text: &str, reach: &Reach) -> Result<url::Url, TargetRefused> {
    let bad = |m: &str| TargetRefused::Url(m.to_string());
    if text.len() > 2048 {
        return Err(bad("longer than 2048 characters"));
    }
    let url = url::Url::parse(text).map_err(|e| TargetRefused::Url(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http and https are allowed"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not hold a user name or password"));
    }
    let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
    match url.host() {
        None => return Err(bad("no host")),
        Some(url::Host::Ipv4(v4)) => reach.check(SocketAddr::new(IpAddr::V4(v4), port))?,
        Some(url::Host::Ipv6(v6)) => reach.check(SocketAddr::new(IpAddr::V6(v6), port))?,
        Some(url::Host::Domain(_)) => {}
    }
    Ok(url)
}

#[cfg(test)]
#[path = "notify_tests.rs"]
mod tests;
