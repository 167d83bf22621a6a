//! Game-server versions (`MAJOR.MINOR.PATCH[-rN]`), their order, the support window and
//! whether a change of version is an upgrade.

use std::{cmp::Ordering, fmt, str::FromStr};

/// How many minor releases are supported: the latest and the four before it.
pub const SUPPORTED_MINORS: usize = 5;

/// Why a version string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not three dot-separated numbers.
    #[error("version must be MAJOR.MINOR.PATCH with an optional -rN suffix, got {0:?}")]
    Shape(String),
    /// A number part is not a decimal number (or has a leading zero / is too large).
    #[error("version part {part} is not a plain decimal number: {value:?}")]
    Number {
        /// Which part (`major`, `minor`, `patch`, `revision`).
        part: &'static str,
        /// The offending text.
        value: String,
    },
}

/// A released game-server version. `-rN` is the platform's own revision of an upstream
/// release; a version without it orders as revision 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major release.
    pub major: u32,
    /// Minor release.
    pub minor: u32,
    /// Patch release.
    pub patch: u32,
    /// Platform revision (`-rN`), if any.
    pub revision: Option<u32>,
}

impl Version {
    /// `(major, minor)`: the unit of the support window.
    pub fn minor_line(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    fn key(&self) -> (u32, u32, u32, u32) {
        (
            self.major,
            self.minor,
            self.patch,
            self.revision.unwrap_or(0),
        )
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key()
            .cmp(&other.key())
            .then(self.revision.is_some().cmp(&other.revision.is_some()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn number(part: &'static str, s: &str) -> Result<u32, VersionError> {
    let bad = || VersionError::Number {
        part,
        value: s.to_string(),
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (core, revision) = match s.split_once('-') {
            Some((core, rev)) => {
                let digits = rev
                    .strip_prefix('r')
                    .ok_or_else(|| VersionError::Shape(s.to_string()))?;
                (core, Some(number("revision", digits)?))
            }
            None => (s, None),
        };
        let mut parts = core.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VersionError::Shape(s.to_string()));
        };
        Ok(Self {
            major: number("major", major)?,
            minor: number("minor", minor)?,
            patch: number("patch", patch)?,
            revision,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(r) = self.revision {
            write!(f, "-r{r}")?;
        }
        Ok(())
    }
}

/// Whether a version may be used for new deployments and deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// In the catalog and within the latest five minor lines.
    Supported,
    /// In the catalog but older than the support window.
    Unsupported,
    /// Not a released version at all.
    Unknown,
}

/// What moving from one version to another is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The target is newer.
    Upgrade,
    /// The same version (a redeploy).
    Same,
    /// The target is older: refused by the platform.
    Downgrade,
}

impl Change {
    /// Classifies moving from `from` to `to`.
    pub fn between(from: &Version, to: &Version) -> Self {
        match to.cmp(from) {
            Ordering::Greater => Self::Upgrade,
            Ordering::Equal => Self::Same,
            Ordering::Less => Self::Downgrade,
        }
    }
}

/// The released versions, with the support window computed once.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    versions: Vec<Version>,
    oldest_supported_line: Option<(u32, u32)>,
}

impl Catalog {
    /// Builds the catalog from released versions (any order, duplicates ignored).
    pub fn new(mut versions: Vec<Version>) -> Self {
        versions.sort();
        versions.dedup();
        let mut lines: Vec<(u32, u32)> = versions.iter().map(Version::minor_line).collect();
        lines.dedup();
        let oldest_supported_line = lines
            .len()
            .checked_sub(1)
            .map(|last| lines[last.saturating_sub(SUPPORTED_MINORS - 1)]);
        Self {
            versions,
            oldest_supported_line,
        }
    }

    /// All released versions, oldest first.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The newest released version.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// The support status of `v`.
    pub fn support(&self, v: &Version) -> Support {
        if self.versions.binary_search(v).is_err() {
            return Support::Unknown;
        }
        match self.oldest_supported_line {
            Some(oldest) if v.minor_line() >= oldest => Support::Supported,
            _ => Support::Unsupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            v("3.21.1-r3"),
            Version {
                major: 3,
                minor: 21,
                patch: 1,
                revision: Some(3)
            }
        );
        assert_eq!(v("3.21.1").to_string(), "3.21.1");
        assert_eq!(v("3.21.1-r3").to_string(), "3.21.1-r3");
        for bad in [
            "",
            "3",
            "3.21",
            "3.21.1.1",
            "3.21.x",
            "3.021.1",
            "3.21.1-3",
            "3.21.1-r",
            "a.b.c",
            "3.21.1-rx",
            "99999999999.1.1",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn orders() {
        assert!(v("3.21.1") < v("3.21.1-r1"));
        assert!(v("3.21.1-r2") < v("3.21.1-r10"));
        assert!(v("3.21.1-r9") < v("3.21.2"));
        assert!(v("3.9.0") < v("3.10.0"));
        assert_eq!(Change::between(&v("3.21.1"), &v("3.22.0")), Change::Upgrade);
        assert_eq!(
            Change::between(&v("3.22.0"), &v("3.21.1")),
            Change::Downgrade
        );
        assert_eq!(Change::between(&v("3.22.0"), &v("3.22.0")), Change::Same);
    }

    #[test]
    fn support_window_is_five_minor_lines() {
        let cat = Catalog::new(
            [
                "3.31.0",
                "3.32.0",
                "3.33.0",
                "3.33.1",
                "3.34.0",
                "3.35.0",
                "3.36.0",
                "3.37.0-r1",
            ]
            .iter()
            .map(|s| v(s))
            .collect(),
        );
        assert_eq!(cat.support(&v("3.37.0-r1")), Support::Supported);
        assert_eq!(cat.support(&v("3.33.0")), Support::Supported);
        assert_eq!(cat.support(&v("3.32.0")), Support::Unsupported);
        assert_eq!(cat.support(&v("3.38.0")), Support::Unknown);
        assert_eq!(cat.latest(), Some(&v("3.37.0-r1")));
        let across_major = Catalog::new(
            ["2.9.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0"]
                .iter()
                .map(|s| v(s))
                .collect(),
        );
        assert_eq!(across_major.support(&v("2.9.0")), Support::Supported);
    }

    proptest! {
        #[test]
        fn display_round_trips(a in 0u32..1000, b in 0u32..1000, c in 0u32..1000, r in proptest::option::of(0u32..100)) {
            let ver = Version { major: a, minor: b, patch: c, revision: r };
            prop_assert_eq!(ver.to_string().parse::<Version>().unwrap(), ver);
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = s.parse::<Version>();
        }
    }
}
