//! Who may publish what: the tenant boundary of Kubernetes discovery, without I/O.
//!
//! A Service can be created by anyone with write access to some namespace, and an
//! EndpointSlice can name any address. Without a rule, a Service in an earlier-sorting
//! namespace could take over another tenant's instance (and receive its decrypted traffic), and
//! a slice could make the proxy a relay onto the node network or the proxy's own loopback.
//! So an instance is routed only from the namespace that owns it, and only to addresses in the
//! configured networks; everything else is refused and counted under a [`Rejection`].

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;

use crate::config::Discovery;

/// Placeholder for the instance name in [`Discovery::instance_namespace`].
pub const INSTANCE_PLACEHOLDER: &str = "{instance}";

/// Why an object (or part of one) is not routed: the `reason` label of
/// `kanmon_discovery_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    /// A Service claims an instance from a namespace that does not own it.
    ForeignNamespace,
    /// A second Service in the owning namespace claims the same instance.
    Conflict,
    /// An endpoint address outside `allowed_cidrs` (or loopback/link-local not allowed).
    AddressNotAllowed,
    /// An `FQDN` slice, or an address of another family than its slice's `addressType`.
    AddressType,
    /// A slice without the `kanmon.dev/instance` label: not written by the EndpointSlice
    /// controller for a Service with a selector. It is routed, but reported.
    UnlabelledSlice,
}

impl Rejection {
    /// Every reason, for initialising the counters at zero.
    pub const ALL: [Rejection; 5] = [
        Self::ForeignNamespace,
        Self::Conflict,
        Self::AddressNotAllowed,
        Self::AddressType,
        Self::UnlabelledSlice,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForeignNamespace => "foreign_namespace",
            Self::Conflict => "conflict",
            Self::AddressNotAllowed => "address_not_allowed",
            Self::AddressType => "address_type",
            Self::UnlabelledSlice => "unlabelled_slice",
        }
    }
}

/// The ownership and address rules of one source.
#[derive(Debug, Clone)]
pub struct Policy {
    instance_namespace: String,
    owners: BTreeMap<String, String>,
    allowed: Vec<IpNet>,
}

impl Policy {
    /// A policy from its parts (see [`Discovery`] for their meaning).
    pub fn new(
        instance_namespace: impl Into<String>,
        owners: BTreeMap<String, String>,
        allowed: Vec<IpNet>,
    ) -> Self {
        Self {
            instance_namespace: instance_namespace.into(),
            owners: owners
                .into_iter()
                .map(|(i, ns)| (i.to_ascii_lowercase(), ns))
                .collect(),
            allowed,
        }
    }

    /// The policy of a `[discovery]` table.
    pub fn from_config(cfg: &Discovery) -> Self {
        Self::new(
            cfg.instance_namespace.clone(),
            cfg.owners.clone(),
            cfg.allowed_cidrs.clone(),
        )
    }

    /// The namespace that owns `instance` (lower-cased).
    pub fn owner_of(&self, instance: &str) -> String {
        match self.owners.get(instance) {
            Some(ns) => ns.clone(),
            None => self
                .instance_namespace
                .replace(INSTANCE_PLACEHOLDER, instance),
        }
    }

    /// Whether a Service in `namespace` may publish `instance` (lower-cased).
    pub fn owns(&self, namespace: &str, instance: &str) -> bool {
        self.owner_of(instance) == namespace
    }

    /// Whether traffic may be sent to `ip`. Loopback and link-local addresses (the proxy
    /// itself, cloud metadata services) are admitted only by a network lying inside those
    /// ranges, never by a wider one; unspecified, multicast and broadcast addresses never.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if never_routable(ip) {
            return false;
        }
        let special = is_host_local(ip);
        self.allowed
            .iter()
            .any(|net| net.contains(&ip) && (!special || net_is_host_local(net)))
    }
}

fn never_routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

fn is_host_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
    }
}

/// Whether the whole of `net` is loopback or link-local.
fn net_is_host_local(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => {
            let first = n.network();
            (first.is_loopback() && n.prefix_len() >= 8)
                || (first.is_link_local() && n.prefix_len() >= 16)
        }
        IpNet::V6(n) => {
            let first = n.network();
            (first.is_loopback() && n.prefix_len() == 128)
                || (first.is_unicast_link_local() && n.prefix_len() >= 10)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cidrs: &[&str]) -> Policy {
        let owners = BTreeMap::from([("Beta".to_string(), "games".to_string())]);
        Policy::new(
            "kanmon-{instance}",
            owners,
            cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        )
    }

    #[test]
    fn an_instance_belongs_to_its_namespace_or_its_listed_owner() {
        let p = policy(&[]);
        assert!(p.owns("kanmon-alpha", "alpha"));
        assert!(!p.owns("aaa", "alpha"));
        assert!(!p.owns("kanmon-alpha", "beta"));
        assert!(p.owns("games", "beta"));
        assert!(
            !p.owns("kanmon-beta", "beta"),
            "the listed owner replaces the pattern"
        );
        let one = Policy::new("games", BTreeMap::new(), vec![]);
        assert!(one.owns("games", "alpha") && one.owns("games", "gamma"));
        assert!(!one.owns("kanmon-alpha", "alpha"));
    }

    #[test]
    fn addresses_must_lie_in_the_allowed_networks() {
        let p = policy(&["10.0.0.0/8", "fd00::/8"]);
        assert!(p.admits("10.1.2.3".parse().unwrap()));
        assert!(p.admits("fd00::5".parse().unwrap()));
        assert!(!p.admits("192.168.1.1".parse().unwrap()));
        assert!(!p.admits("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn loopback_and_link_local_need_their_own_entry() {
        let wide = policy(&["0.0.0.0/0", "::/0"]);
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(!wide.admits(ip.parse().unwrap()), "{ip}");
        }
        assert!(wide.admits("203.0.113.7".parse().unwrap()));
        let local = policy(&["127.0.0.0/8", "::1/128"]);
        assert!(local.admits("127.0.0.1".parse().unwrap()));
        assert!(local.admits("::1".parse().unwrap()));
        assert!(!local.admits("169.254.169.254".parse().unwrap()));
    }
}
