//! The console hostname of a deployment and who may reach it.
//!
//! Each deployment's Nakama console (node port 7351) is served at its own hostname,
//! `{instance}-console.{zone}.{base_domain}` by default. The first label is built from a
//! pattern holding `{instance}` once, with a literal prefix and/or suffix (`{instance}-console`,
//! `console-{instance}`), so a console name has the same two-label shape as a deployment's
//! and the SNI split stays one rule ([`crate::split_host`]).
//!
//! **No collision with another tenant.** A label the pattern matches is always a console name
//! ([`ConsoleNames::target`] decides before anything else), so the deployment `alpha-console`,
//! if it existed, could never be reached through `alpha`'s console name nor the other way
//! round: the name is simply not a deployment's hostname. The control plane refuses to create
//! such names ([`ConsoleNames::claims`]), so no tenant is left unreachable either. Both checks
//! go through this module, so the rule cannot drift between edge and control plane.
//!
//! **Who may connect.** Each deployment carries its console allow-list (CIDRs). An empty list
//! means the console is closed: an administration interface is opened on purpose, never by
//! default ([`admits`]).

use std::net::IpAddr;

/// The placeholder a console label pattern must hold exactly once.
const PLACEHOLDER: &str = "{instance}";

/// Why a console label pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern must hold `{instance}` exactly once.
    #[error("console label pattern must hold {{instance}} exactly once, got {0:?}")]
    Placeholder(String),
    /// Without a prefix or suffix, every deployment name would be a console name.
    #[error("console label pattern needs a fixed prefix or suffix around {{instance}}, got {0:?}")]
    Bare(String),
    /// The fixed parts are DNS label characters only (no dots: the console name is one label).
    #[error("console label pattern may only hold a-z, 0-9 and '-' around {{instance}}, got {0:?}")]
    Chars(String),
}

/// The console label rule: `prefix{instance}suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleNames {
    prefix: Box<str>,
    suffix: Box<str>,
}

impl Default for ConsoleNames {
    /// `{instance}-console`.
    fn default() -> Self {
        Self {
            prefix: "".into(),
            suffix: "-console".into(),
        }
    }
}

impl ConsoleNames {
    /// The default pattern, as written in configuration.
    pub const DEFAULT_PATTERN: &'static str = "{instance}-console";

    /// Parses a pattern such as `{instance}-console` (case-insensitive; stored lower-case).
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let lower = pattern.to_ascii_lowercase();
        let (prefix, suffix) = lower
            .split_once(PLACEHOLDER)
            .filter(|(_, s)| !s.contains(PLACEHOLDER))
            .ok_or_else(|| PatternError::Placeholder(pattern.into()))?;
        if prefix.is_empty() && suffix.is_empty() {
            return Err(PatternError::Bare(pattern.into()));
        }
        let label_chars = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        // A suffix may not end with '-' and a prefix may not start with one: the label would
        // be no DNS label. The instance name itself starts with a letter and ends without '-'.
        if !label_chars(prefix)
            || !label_chars(suffix)
            || prefix.starts_with('-')
            || suffix.ends_with('-')
        {
            return Err(PatternError::Chars(pattern.into()));
        }
        Ok(Self {
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }

    /// The pattern as written in configuration.
    pub fn pattern(&self) -> String {
        format!("{}{PLACEHOLDER}{}", self.prefix, self.suffix)
    }

    /// The console label of `instance`.
    pub fn label(&self, instance: &crate::InstanceName) -> String {
        format!("{}{instance}{}", self.prefix, self.suffix)
    }

    /// The console hostname of `instance` in `zone`.
    pub fn hostname(
        &self,
        instance: &crate::InstanceName,
        zone: &crate::Zone,
        base: &str,
    ) -> String {
        let base = base.strip_suffix('.').unwrap_or(base);
        format!(
            "{}.{zone}.{}",
            self.label(instance),
            base.to_ascii_lowercase()
        )
    }

    /// The instance label inside a console label, if the pattern matches it (case-insensitive,
    /// not validated: the result is a table key, the table holds validated names only).
    pub fn instance_of<'a>(&self, label: &'a str) -> Option<&'a str> {
        let (p, s) = (self.prefix.len(), self.suffix.len());
        if label.len() <= p + s {
            return None;
        }
        let head = label.get(..p)?;
        let tail = label.get(label.len() - s..)?;
        if !head.eq_ignore_ascii_case(&self.prefix) || !tail.eq_ignore_ascii_case(&self.suffix) {
            return None;
        }
        label.get(p..label.len() - s)
    }

    /// Whether `instance` is reserved: its hostname would read as a console name, so it may not
    /// be a deployment's name (checked when a deployment is created).
    pub fn claims(&self, instance: &str) -> bool {
        self.instance_of(instance).is_some()
    }

    /// What `host` names under `base`: a deployment's API or its console (see the module doc
    /// for why the console reading wins).
    pub fn target<'a>(&self, host: &'a str, base: &str) -> Option<Target<'a>> {
        let (label, zone) = crate::split_host(host, base)?;
        Some(match self.instance_of(label) {
            Some(instance) => Target {
                instance,
                zone,
                console: true,
            },
            None => Target {
                instance: label,
                zone,
                console: false,
            },
        })
    }
}

/// What a hostname names: a deployment, and whether its console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// Instance label (not validated; compare case-insensitively).
    pub instance: &'a str,
    /// Zone label.
    pub zone: &'a str,
    /// The deployment's console rather than its API.
    pub console: bool,
}

impl Target<'_> {
    /// Whether both name the same target (case-insensitive).
    pub fn same(&self, other: &Target<'_>) -> bool {
        self.console == other.console
            && self.instance.eq_ignore_ascii_case(other.instance)
            && self.zone.eq_ignore_ascii_case(other.zone)
    }
}

/// Why a client may not reach a console. Bounded: these are the metric's `reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsoleRefusal {
    /// The deployment's allow-list is empty: its console is closed.
    #[error("the console of this deployment is closed (its allow-list is empty)")]
    Closed,
    /// The client's address is in none of the allowed networks.
    #[error("this client network is not in the console's allow-list")]
    NotAllowed,
    /// The client's address is not known (not an IP connection).
    #[error("the client's address is unknown")]
    NoClientAddress,
}

impl ConsoleRefusal {
    /// The metric label value.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::NotAllowed => "not_allowed",
            Self::NoClientAddress => "no_client_address",
        }
    }

    /// Every refusal, for exporting the counter's series.
    pub const ALL: [ConsoleRefusal; 3] = [Self::Closed, Self::NotAllowed, Self::NoClientAddress];
}

/// Whether `client` may reach a console whose allow-list is `allow`. An IPv4 client reaching
/// the edge over an IPv6 socket (`::ffff:a.b.c.d`) is matched as the IPv4 address it is.
pub fn admits(allow: &[ipnet::IpNet], client: Option<IpAddr>) -> Result<(), ConsoleRefusal> {
    if allow.is_empty() {
        return Err(ConsoleRefusal::Closed);
    }
    let client = client.ok_or(ConsoleRefusal::NoClientAddress)?;
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    if allow.iter().any(|net| net.contains(&client)) {
        Ok(())
    } else {
        Err(ConsoleRefusal::NotAllowed)
    }
}

#[cfg(test)]
mod tests;
