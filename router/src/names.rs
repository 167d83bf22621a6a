//! Instance names, zones and hostnames.
//!
//! A hostname is the only thing a client tells us about which tenant it wants, so it is parsed
//! strictly and never panics on hostile bytes: every rejection names the rule that failed.

use std::fmt;

/// Why a name was rejected. Each variant is one rule, so operators and API users see exactly
/// which rule their input broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Instance names are DNS labels of 3 to 63 characters.
    #[error("instance name must be 3 to 63 characters long, got {0}")]
    InstanceLength(usize),
    /// Only lower-case letters, digits and `-` are allowed in instance names.
    #[error("instance name may only hold a-z, 0-9 and '-', found {0:?} at position {1}")]
    InstanceChar(char, usize),
    /// Instance names start with a letter so they never look like a number or an address.
    #[error("instance name must start with a letter")]
    InstanceStart,
    /// A trailing dash is not a valid DNS label.
    #[error("instance name must not end with '-'")]
    InstanceTrailingDash,
    /// Zones are DNS labels too (1 to 63 characters).
    #[error("zone must be 1 to 63 characters long, got {0}")]
    ZoneLength(usize),
    /// Zones hold only lower-case letters, digits and `-`, and start with a letter.
    #[error("zone may only hold a-z, 0-9 and '-' and must start with a letter: {0:?}")]
    ZoneChars(String),
    /// The hostname is not under the platform's base domain.
    #[error("hostname is not under the base domain {0:?}")]
    NotUnderBaseDomain(String),
    /// The part before the base domain must be exactly `{instance}.{zone}`.
    #[error("hostname must be {{instance}}.{{zone}}.{{base_domain}}, found {0} label(s) before the base domain")]
    LabelCount(usize),
    /// Hostnames are at most 253 bytes (RFC 1035).
    #[error("hostname is longer than 253 bytes")]
    HostnameTooLong,
    /// The hostname held bytes that are not ASCII.
    #[error("hostname must be ASCII")]
    NotAscii,
}

/// A validated instance name: a DNS label of 3–63 chars of `a-z`, `0-9`, `-`, starting with a
/// letter and not ending with a dash. Stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceName(String);

impl InstanceName {
    /// Validates `s` (case-insensitive; the stored form is lower-case).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let len = s.chars().count();
        if !(3..=63).contains(&len) {
            return Err(NameError::InstanceLength(len));
        }
        for (i, c) in s.chars().enumerate() {
            let c = c.to_ascii_lowercase();
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                return Err(NameError::InstanceChar(c, i));
            }
        }
        if !s.as_bytes()[0].is_ascii_alphabetic() {
            return Err(NameError::InstanceStart);
        }
        if s.ends_with('-') {
            return Err(NameError::InstanceTrailingDash);
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The name, lower-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A syntactically valid zone label (`us-east1`). Whether the zone is offered is the control
/// plane's catalog's business, not the router's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Zone(String);

impl Zone {
    /// Validates `s` as a zone label (case-insensitive; stored lower-case).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let len = s.len();
        if !(1..=63).contains(&len) {
            return Err(NameError::ZoneLength(len));
        }
        let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok_chars || !s.as_bytes()[0].is_ascii_alphabetic() || s.ends_with('-') {
            return Err(NameError::ZoneChars(s.to_string()));
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The zone, lower-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `host` into the `(instance, zone)` labels in front of `base_domain`, without
/// allocating and without validating the labels. This is the request-path lookup: the result
/// is only used as a key into the table, which holds validated names only.
///
/// Case-insensitive; one trailing dot on either side is tolerated. Returns `None` when the host
/// is not exactly two labels under the base domain.
pub fn split_host<'a>(host: &'a str, base_domain: &str) -> Option<(&'a str, &'a str)> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let base = base_domain.strip_suffix('.').unwrap_or(base_domain);
    // No base, no hostname: with an empty base the separator dot would be read as the base.
    if base.is_empty() || host.len() <= base.len() + 1 {
        return None;
    }
    let split = host.len() - base.len();
    if !host.is_char_boundary(split) || !host.is_char_boundary(split - 1) {
        return None;
    }
    let (front, tail) = host.split_at(split);
    if !tail.eq_ignore_ascii_case(base) {
        return None;
    }
    let front = front.strip_suffix('.')?;
    let (instance, zone) = front.split_once('.')?;
    if instance.is_empty() || zone.is_empty() || zone.contains('.') {
        return None;
    }
    Some((instance, zone))
}

/// Parses `{instance}.{zone}.{base_domain}` and validates both labels, naming the failed rule.
pub fn parse_hostname(host: &str, base_domain: &str) -> Result<(InstanceName, Zone), NameError> {
    if !host.is_ascii() {
        return Err(NameError::NotAscii);
    }
    if host.len() > 253 {
        return Err(NameError::HostnameTooLong);
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let base = base_domain.strip_suffix('.').unwrap_or(base_domain);
    // `split_host` drops the one trailing dot itself: handing it `trimmed` would take a second.
    match split_host(host, base) {
        Some((instance, zone)) => Ok((InstanceName::parse(instance)?, Zone::parse(zone)?)),
        None => {
            let lower = trimmed.to_ascii_lowercase();
            let suffix = format!(".{}", base.to_ascii_lowercase());
            match lower.strip_suffix(&suffix) {
                Some(front) => Err(NameError::LabelCount(
                    front.split('.').filter(|l| !l.is_empty()).count(),
                )),
                None => Err(NameError::NotUnderBaseDomain(base.to_string())),
            }
        }
    }
}

/// The canonical hostname of a deployment.
pub fn hostname(instance: &InstanceName, zone: &Zone, base_domain: &str) -> String {
    let base = base_domain.strip_suffix('.').unwrap_or(base_domain);
    format!("{instance}.{zone}.{}", base.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn instance_rules() {
        assert_eq!(InstanceName::parse("alpha").unwrap().as_str(), "alpha");
        assert_eq!(InstanceName::parse("Alpha-9").unwrap().as_str(), "alpha-9");
        assert_eq!(InstanceName::parse("ab"), Err(NameError::InstanceLength(2)));
        assert_eq!(
            InstanceName::parse(&"a".repeat(64)),
            Err(NameError::InstanceLength(64))
        );
        assert!(InstanceName::parse(&"a".repeat(63)).is_ok());
        assert_eq!(InstanceName::parse("9abc"), Err(NameError::InstanceStart));
        assert_eq!(InstanceName::parse("-abc"), Err(NameError::InstanceStart));
        assert_eq!(
            InstanceName::parse("abc-"),
            Err(NameError::InstanceTrailingDash)
        );
        assert_eq!(
            InstanceName::parse("ab_c"),
            Err(NameError::InstanceChar('_', 2))
        );
        assert_eq!(
            InstanceName::parse("ab.c"),
            Err(NameError::InstanceChar('.', 2))
        );
    }

    #[test]
    fn zone_rules() {
        assert_eq!(Zone::parse("US-East1").unwrap().as_str(), "us-east1");
        assert!(Zone::parse("").is_err());
        assert!(Zone::parse("1zone").is_err());
        assert!(Zone::parse("zo ne").is_err());
        assert!(Zone::parse("zone-").is_err());
    }

    #[test]
    fn hostnames() {
        let (i, z) = parse_hostname("alpha.us-east1.kanmon.test", "kanmon.test").unwrap();
        assert_eq!((i.as_str(), z.as_str()), ("alpha", "us-east1"));
        let (i, z) = parse_hostname("ALPHA.US-EAST1.Kanmon.Test.", "kanmon.test").unwrap();
        assert_eq!((i.as_str(), z.as_str()), ("alpha", "us-east1"));
        assert_eq!(
            parse_hostname("alpha.kanmon.test", "kanmon.test"),
            Err(NameError::LabelCount(1))
        );
        assert_eq!(
            parse_hostname("a.b.c.kanmon.test", "kanmon.test"),
            Err(NameError::LabelCount(3))
        );
        assert_eq!(
            parse_hostname("alpha.us-east1.other.test", "kanmon.test"),
            Err(NameError::NotUnderBaseDomain("kanmon.test".into()))
        );
        assert_eq!(
            parse_hostname("xx.us-east1.kanmon.test", "kanmon.test"),
            Err(NameError::InstanceLength(2))
        );
        assert_eq!(
            parse_hostname("alpha.us-east1.kanmon.tést", "kanmon.test"),
            Err(NameError::NotAscii)
        );
        assert_eq!(
            hostname(&i, &z, "Kanmon.Test."),
            "alpha.us-east1.kanmon.test"
        );
    }

    #[test]
    fn split_host_is_lenient_only_about_case_and_dot() {
        assert_eq!(
            split_host("Alpha.Zone.KANMON.test", "kanmon.test"),
            Some(("Alpha", "Zone"))
        );
        assert_eq!(split_host("kanmon.test", "kanmon.test"), None);
        assert_eq!(split_host(".kanmon.test", "kanmon.test"), None);
        assert_eq!(split_host("a..kanmon.test", "kanmon.test"), None);
        assert_eq!(split_host("alphakanmon.test", "kanmon.test"), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in ".*", base in "[a-z.]{0,12}") {
            let _ = parse_hostname(&s, &base);
            let _ = split_host(&s, &base);
            let _ = InstanceName::parse(&s);
            let _ = Zone::parse(&s);
        }

        #[test]
        fn valid_names_round_trip(i in "[a-z][a-z0-9-]{1,60}[a-z0-9]", z in "[a-z][a-z0-9-]{0,10}[a-z0-9]") {
            let inst = InstanceName::parse(&i).unwrap();
            let zone = Zone::parse(&z).unwrap();
            let host = hostname(&inst, &zone, "kanmon.test");
            prop_assert_eq!(parse_hostname(&host.to_ascii_uppercase(), "kanmon.test").unwrap(), (inst, zone));
        }
    }
}

#[cfg(test)]
mod base_domain_tests {
    use super::*;

    /// Found by the `hostname` fuzz target: an empty base domain parsed, and two trailing dots
    /// were taken where one is allowed, so the canonical form did not parse back.
    #[test]
    fn one_trailing_dot_and_no_empty_base() {
        assert!(parse_hostname("E575.P...", "").is_err());
        assert!(split_host("a.b.", "").is_none());
        assert!(parse_hostname("demo.us-east1.kanmon.test..", "kanmon.test").is_err());
        let (i, z) = parse_hostname("demo.us-east1.kanmon.test.", "kanmon.test").unwrap();
        assert_eq!((i.as_str(), z.as_str()), ("demo", "us-east1"));
    }
}
