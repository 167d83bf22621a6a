//! Builders and builds, the pure half: a builder names a source (a local directory or a git
//! URL) and the Nakama version to compile against; a build of an unsupported version is
//! refused; a build's output is kept as a bounded log. No I/O here: the local runner is
//! `crate::driver::build_local`.

use std::path::{Component, Path, PathBuf};

use kanmon_router::{Catalog, Version};

use super::{deployment::check_version, DomainError};

/// The most of a build's output kept as its log (the end of it: a failure's cause is last).
pub const BUILD_LOG_LIMIT: usize = 256 * 1024;

/// Why a builder or a build was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The builder's name broke the naming rule.
    #[error("builder name {0:?}: 1–40 characters of a-z, 0-9 and -, starting with a letter")]
    Name(String),
    /// The source is neither an absolute local directory nor an accepted git URL.
    #[error("source {given:?}: {reason}")]
    Source {
        /// What was given.
        given: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// The version is not one builds may target.
    #[error(transparent)]
    Version(#[from] DomainError),
}

/// Where a builder's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSource {
    /// An absolute directory on the control plane's machine (copied for each build).
    Directory(PathBuf),
    /// A git repository, cloned (depth 1) for each build.
    Git(String),
}

/// Schemes a git source may use. Never `ext::` or other `transport::` forms, which make git
/// run a command named in the URL.
const GIT_SCHEMES: [&str; 5] = ["file://", "https://", "http://", "ssh://", "git://"];

impl BuildSource {
    /// Parses a source: an absolute path without `..`, or a URL of [`GIT_SCHEMES`].
    pub fn parse(text: &str) -> Result<Self, BuildError> {
        let bad = |reason| BuildError::Source {
            given: text.chars().take(200).collect(),
            reason,
        };
        if text.is_empty() || text.len() > 1024 {
            return Err(bad("must be 1–1024 characters"));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("must not hold spaces or control characters"));
        }
        if text.starts_with('/') {
            let path = Path::new(text);
            if path.components().any(|c| c == Component::ParentDir) {
                return Err(bad("a local directory must not contain `..`"));
            }
            return Ok(Self::Directory(path.to_path_buf()));
        }
        let Some(scheme) = GIT_SCHEMES.iter().find(|s| text.starts_with(*s)) else {
            return Err(bad(
                "must be an absolute directory or a git URL (file://, https://, http://, ssh://, git://)",
            ));
        };
        if text.len() == scheme.len() {
            return Err(bad("the URL names no repository"));
        }
        // A builder's source is shown to everyone with `view`: a URL must carry no
        // credentials (a password, or an https token as user name). Only ssh's plain user name
        // (`ssh://git@host/…`) is no secret. The refusal does not repeat the URL.
        let rest = &text[scheme.len()..];
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some((user, _)) = authority.rsplit_once('@') {
            if *scheme != "ssh://" || user.contains(':') {
                return Err(BuildError::Source {
                    given: format!("{scheme}…"),
                    reason: "must not carry credentials (give the builder access another way, such as a deploy key)",
                });
            }
        }
        Ok(Self::Git(text.to_string()))
    }

    /// The source as given.
    pub fn as_text(&self) -> String {
        match self {
            Self::Directory(p) => p.display().to_string(),
            Self::Git(url) => url.clone(),
        }
    }
}

/// A builder of one deployment: its source and the version it compiles against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    /// Name, unique within the deployment.
    pub name: String,
    /// Where the code comes from.
    pub source: BuildSource,
    /// The Nakama version to compile against.
    pub version: Version,
}

impl Builder {
    /// A builder, checked: its name, its source, and its version supported by `catalog`
    /// (builds are refused for unsupported or unknown versions, as deploys are).
    pub fn new(
        name: &str,
        source: &str,
        version: Version,
        catalog: &Catalog,
    ) -> Result<Self, BuildError> {
        let name_ok = (1..=40).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(BuildError::Name(name.chars().take(60).collect()));
        }
        check_version(catalog, None, &version)?;
        Ok(Self {
            name: name.to_string(),
            source: BuildSource::parse(source)?,
            version,
        })
    }

    /// Checks a build of this builder may run now: the catalog may have moved on since the
    /// builder was made, leaving its version unsupported.
    pub fn check_build(&self, catalog: &Catalog) -> Result<(), BuildError> {
        check_version(catalog, None, &self.version).map_err(BuildError::from)
    }
}

/// A build's output, kept to its last [`BUILD_LOG_LIMIT`] bytes (at a character boundary),
/// with a first line saying how much was cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildLog {
    kept: Vec<u8>,
    dropped: u64,
    limit: usize,
}

impl BuildLog {
    /// An empty log keeping at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            kept: Vec::new(),
            dropped: 0,
            limit,
        }
    }

    /// Appends output; the oldest bytes go when the limit is passed.
    pub fn push(&mut self, bytes: &[u8]) {
        self.kept.extend_from_slice(bytes);
        if self.kept.len() > self.limit {
            let cut = self.kept.len() - self.limit;
            self.kept.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    /// Bytes cut from the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The log as text (invalid UTF-8 replaced; a character cut in half by the limit dropped).
    pub fn text(&self) -> String {
        let mut start = 0;
        if self.dropped > 0 {
            // Skip continuation bytes of a character whose start was cut.
            while start < self.kept.len() && (self.kept[start] & 0xC0) == 0x80 {
                start += 1;
            }
        }
        let body = String::from_utf8_lossy(&self.kept[start..]);
        if self.dropped > 0 {
            format!(
                "[{} earlier bytes cut]\n{body}",
                self.dropped + start as u64
            )
        } else {
            body.into_owned()
        }
    }
}

/// The artifacts of one builder's successful builds to remove: all but the `keep` newest
/// (highest id), and never one whose image the deployment's current spec uses (`in_use`),
/// however old. `builds` is `(id, image)` in any order; the answer is oldest first.
pub fn artifacts_to_remove(builds: &[(u64, String)], keep: usize, in_use: &[&str]) -> Vec<u64> {
    let mut newest_first: Vec<&(u64, String)> = builds.iter().collect();
    newest_first.sort_by_key(|b| std::cmp::Reverse(b.0));
    let mut out: Vec<u64> = newest_first
        .into_iter()
        .skip(keep)
        .filter(|(_, image)| !in_use.contains(&image.as_str()))
        .map(|(id, _)| *id)
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn catalog() -> Catalog {
        Catalog::new(
            ["3.30.0", "3.33.0", "3.34.0", "3.35.0", "3.36.0", "3.37.0"]
                .iter()
                .map(|v| v.parse().unwrap())
                .collect(),
        )
    }

    #[test]
    fn sources_are_directories_or_git_urls_never_commands() {
        assert_eq!(
            BuildSource::parse("/srv/game").unwrap(),
            BuildSource::Directory("/srv/game".into())
        );
        assert!(matches!(
            BuildSource::parse("file:///tmp/repo.git").unwrap(),
            BuildSource::Git(_)
        ));
        assert!(BuildSource::parse("http://127.0.0.1:9/repo.git").is_ok());
        for bad in [
            "",
            "relative/dir",
            "/srv/../etc",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "--upload-pack=touch /tmp/x",
            "file://",
            "https://host/repo\n",
            "fd::3",
            "https://user:hunter2@host/repo.git",
            "https://ghp_token@host/repo.git",
            "ssh://git:hunter2@host/repo.git",
        ] {
            assert!(BuildSource::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BuildSource::parse("ssh://git@host/repo.git").is_ok());
        let refusal = BuildSource::parse("https://u:hunter2@host/r.git").unwrap_err();
        assert!(!refusal.to_string().contains("hunter2"), "{refusal}");
    }

    #[test]
    fn builders_refuse_unsupported_versions_and_bad_names() {
        let c = catalog();
        let b = Builder::new("main", "/srv/game", "3.37.0".parse().unwrap(), &c).unwrap();
        assert_eq!(b.source.as_text(), "/srv/game");
        let old = Builder::new("old", "/srv/game", "3.30.0".parse().unwrap(), &c).unwrap_err();
        assert!(old.to_string().contains("unsupported"), "{old}");
        let unknown = Builder::new("x", "/srv/game", "3.99.0".parse().unwrap(), &c).unwrap_err();
        assert!(unknown.to_string().contains("unknown"), "{unknown}");
        for name in ["", "Main", "1st", "a b", &"a".repeat(41)] {
            assert!(
                Builder::new(name, "/srv", "3.37.0".parse().unwrap(), &c).is_err(),
                "{name:?}"
            );
        }
        // The catalog moved on: a build of the old builder is refused.
        let moved = Catalog::new(
            ["3.38.0", "3.39.0", "3.40.0", "3.41.0", "3.42.0"]
                .iter()
                .map(|v| v.parse().unwrap())
                .collect(),
        );
        assert!(b.check_build(&moved).is_err());
        assert!(b.check_build(&c).is_ok());
    }

    #[test]
    fn the_log_keeps_its_end() {
        let mut log = BuildLog::with_limit(8);
        log.push(b"hello ");
        log.push(b"world!\n");
        assert_eq!(log.dropped(), 5);
        assert_eq!(log.text(), "[5 earlier bytes cut]\n world!\n");
    }

    /// A build is an operation of the queue: it holds the queue until its runner reports,
    /// touches no node, and ends with the runner's result; an unsupported version is refused.
    #[test]
    fn a_build_holds_the_queue_and_ends_with_its_result() {
        use crate::domain::{
            sim::{v, Sim},
            DeploymentType, OpKind, OpStatus, Timings,
        };
        let mut sim = Sim::new(DeploymentType::Development, 1, Timings::default());
        let first = sim
            .submit(OpKind::Deploy {
                version: v("3.35.0"),
                image: None,
            })
            .unwrap();
        sim.settle();
        assert_eq!(sim.status(first), OpStatus::Completed);
        let nodes = sim.ctl.deployment.nodes.clone();
        let build = sim
            .submit(OpKind::Build {
                builder: "main".into(),
                version: v("3.37.0"),
            })
            .unwrap();
        let after = sim.submit(OpKind::Reboot).unwrap();
        assert_eq!(sim.status(build), OpStatus::InProgress);
        assert_eq!(
            sim.status(after),
            OpStatus::Pending,
            "the build holds the queue"
        );
        assert!(sim.deliver(0), "the build's report is pending");
        assert_eq!(sim.status(build), OpStatus::Completed);
        assert_eq!(
            sim.saved[&build].result.as_ref().unwrap()["image"],
            "sim/main"
        );
        sim.settle();
        assert_eq!(sim.status(after), OpStatus::Completed);
        assert_eq!(sim.ctl.deployment.nodes.len(), nodes.len());
        let old = sim.submit(OpKind::Build {
            builder: "main".into(),
            version: v("3.30.0"),
        });
        assert!(old.is_err(), "{old:?}");
    }

    #[test]
    fn cleanup_keeps_the_newest_and_what_the_spec_runs() {
        let builds: Vec<(u64, String)> = [(3, "c"), (1, "a"), (7, "g"), (5, "e"), (2, "b")]
            .iter()
            .map(|(i, s)| (*i, s.to_string()))
            .collect();
        assert_eq!(artifacts_to_remove(&builds, 2, &[]), [1, 2, 3]);
        assert_eq!(artifacts_to_remove(&builds, 2, &["a", "zz"]), [2, 3]);
        assert_eq!(artifacts_to_remove(&builds, 9, &[]), Vec::<u64>::new());
        assert_eq!(artifacts_to_remove(&[], 1, &[]), Vec::<u64>::new());
    }

    proptest! {
        #[test]
        fn cleanup_never_removes_a_kept_or_used_artifact(
            ids in proptest::collection::btree_set(0u64..200, 0..30),
            keep in 1usize..8,
            used in proptest::collection::vec(0u64..200, 0..4),
        ) {
            let builds: Vec<(u64, String)> = ids.iter().map(|i| (*i, format!("img-{i}"))).collect();
            let used_names: Vec<String> = used.iter().map(|i| format!("img-{i}")).collect();
            let in_use: Vec<&str> = used_names.iter().map(String::as_str).collect();
            let gone = artifacts_to_remove(&builds, keep, &in_use);
            let newest: Vec<u64> = ids.iter().rev().take(keep).copied().collect();
            for id in &gone {
                prop_assert!(!newest.contains(id), "{} is among the {} newest", id, keep);
                prop_assert!(!used.contains(id), "{} is in use", id);
            }
            let expected = ids.len().saturating_sub(keep)
                - ids.iter().rev().skip(keep).filter(|i| used.contains(i)).count();
            prop_assert_eq!(gone.len(), expected);
        }

        #[test]
        fn the_log_never_passes_its_limit(chunks in proptest::collection::vec(".{0,40}", 0..40), limit in 1usize..64) {
            let mut log = BuildLog::with_limit(limit);
            let mut all = String::new();
            for c in &chunks {
                log.push(c.as_bytes());
                all.push_str(c);
            }
            prop_assert!(log.kept.len() <= limit);
            prop_assert_eq!(log.dropped() as usize + log.kept.len(), all.len());
            let text = log.text();
            let body = text.split_once("cut]\n").map_or(text.as_str(), |(_, b)| b);
            prop_assert!(all.ends_with(body), "{:?} does not end {:?}", all, body);
        }
    }
}
