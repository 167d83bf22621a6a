//! The control plane's configuration file (`kanmon serve --config FILE`, `kanmon up --config
//! FILE`): the platform catalogs DESIGN.md says live in configuration (released versions,
//! zones), the base domain, the billing sample interval and notification delivery
//! (`[notifications]`, `[smtp]`, validated in `settings/notify.rs`). Parsed into raw serde
//! types, then validated once into [`Settings`]; a key the file does not know is an error
//! naming the key and its line, so a typo never silently falls back to a default.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use kanmon_router::{Catalog, Version, Zone};
use serde::Deserialize;

use super::Settings;

/// Why the configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (unknown keys included; the message names key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },
    /// A value broke a rule.
    #[error("{path}: {key}: {rule}")]
    Rule {
        /// The file.
        path: PathBuf,
        /// Which key.
        key: String,
        /// The rule it broke.
        rule: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    base_domain: Option<String>,
    console_label: Option<String>,
    versions: Option<Vec<String>>,
    zones: Option<Vec<RawZone>>,
    billing_interval: Option<String>,
    notifications: Option<super::notify::RawNotify>,
    smtp: Option<super::notify::RawSmtp>,
    builds: Option<RawBuilds>,
}

/// `[builds]`: how this control plane runs builds (absent: it does not build).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuilds {
    /// Run by `sh -c` in the checkout.
    command: String,
    /// Work directories and stored artifacts (absolute).
    dir: PathBuf,
    /// How long a build may take (default 10m).
    timeout: Option<String>,
    /// Successful builds whose artifacts are kept per builder (default 5, at least 1).
    keep: Option<usize>,
    /// Kubernetes Job: the build image (`{version}` replaced).
    image: Option<String>,
    /// Kubernetes Job: the image of the git clone init step.
    git_image: Option<String>,
    /// Kubernetes Job: CPU request and limit.
    cpu: Option<String>,
    /// Kubernetes Job: memory request and limit.
    memory: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: String,
    #[serde(default)]
    on_request: bool,
}

impl Settings {
    /// The defaults with what the file at `path` sets.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// [`Settings::load`] of `text` (`path` names the file in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let rule = |key: String, rule: String| SettingsError::Rule {
            path: path.into(),
            key,
            rule,
        };
        let mut settings = Settings::default();
        if let Some(base) = raw.base_domain {
            let base = base.trim().trim_end_matches('.').to_ascii_lowercase();
            if base.is_empty() || base.split('.').any(|l| l.is_empty()) {
                return Err(rule(
                    "base_domain".into(),
                    "must be a DNS name such as kanmon.test".into(),
                ));
            }
            settings.base_domain = base;
        }
        if let Some(label) = raw.console_label {
            settings.console = kanmon_router::ConsoleNames::parse(&label)
                .map_err(|e| rule("console_label".into(), e.to_string()))?;
        }
        if let Some(versions) = raw.versions {
            if versions.is_empty() {
                return Err(rule(
                    "versions".into(),
                    "lists no version (leave it out for the default catalog)".into(),
                ));
            }
            let parsed = versions
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.parse::<Version>()
                        .map_err(|e| rule(format!("versions[{i}]"), format!("{v:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            settings.catalog = Catalog::new(parsed);
        }
        if let Some(zones) = raw.zones {
            if !zones.iter().any(|z| !z.on_request) {
                return Err(rule(
                    "zones".into(),
                    "offers no zone without request (at least one needs on_request = false)".into(),
                ));
            }
            let mut parsed: Vec<(Zone, bool)> = Vec::with_capacity(zones.len());
            for (i, z) in zones.iter().enumerate() {
                let zone = Zone::parse(&z.name)
                    .map_err(|e| rule(format!("zones[{i}].name"), format!("{:?}: {e}", z.name)))?;
                if parsed.iter().any(|(p, _)| *p == zone) {
                    return Err(rule(
                        format!("zones[{i}].name"),
                        format!("{:?} is listed twice", z.name),
                    ));
                }
                parsed.push((zone, z.on_request));
            }
            settings.zones = parsed;
        }
        if let Some(text) = raw.billing_interval {
            let every = humantime::parse_duration(&text)
                .map_err(|e| rule("billing_interval".into(), format!("{text:?}: {e}")))?;
            if every < Duration::from_secs(1) {
                return Err(rule(
                    "billing_interval".into(),
                    "must be at least 1s".into(),
                ));
            }
            settings.billing_interval = every;
        }
        super::notify::apply(raw.notifications, raw.smtp, &mut settings.notify)
            .map_err(|(key, why)| rule(key, why))?;
        if let Some(b) = raw.builds {
            if b.command.trim().is_empty() {
                return Err(rule("builds.command".into(), "must not be empty".into()));
            }
            if !b.dir.is_absolute() {
                return Err(rule("builds.dir".into(), "must be an absolute path".into()));
            }
            let timeout = match b.timeout {
                None => Duration::from_secs(600),
                Some(text) => humantime::parse_duration(&text)
                    .ok()
                    .filter(|t| *t >= Duration::from_secs(1))
                    .ok_or_else(|| {
                        rule(
                            "builds.timeout".into(),
                            format!("{text:?}: a duration of at least 1s, such as \"10m\""),
                        )
                    })?,
            };
            let keep = b.keep.unwrap_or(crate::driver::build_local::DEFAULT_KEEP);
            if keep == 0 {
                return Err(rule("builds.keep".into(), "must be at least 1".into()));
            }
            let mut job = crate::driver::build_local::JobSettings::default();
            for (key, given, field) in [
                ("builds.image", b.image, &mut job.image),
                ("builds.git_image", b.git_image, &mut job.git_image),
                ("builds.cpu", b.cpu, &mut job.cpu),
                ("builds.memory", b.memory, &mut job.memory),
            ] {
                if let Some(v) = given {
                    if v.is_empty() || v.len() > 512 || v.chars().any(char::is_whitespace) {
                        return Err(rule(key.into(), "1–512 characters without spaces".into()));
                    }
                    *field = v;
                }
            }
            settings.builds = Some(crate::driver::build_local::LocalBuildConfig {
                command: b.command,
                dir: b.dir,
                timeout,
                keep,
                job,
            });
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, SettingsError> {
        Settings::parse(text, Path::new("kanmon.toml"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let s = parse("").unwrap();
        assert_eq!(
            s.catalog.versions(),
            super::super::default_catalog().versions()
        );
        assert_eq!(s.zones, super::super::default_zones());
        assert_eq!(s.base_domain, "kanmon.test");
    }

    #[test]
    fn the_file_replaces_the_catalogs() {
        let s = parse(
            r#"
base_domain = "Games.Example."
versions = ["4.0.0", "3.9.1-r2"]
zones = [{ name = "eu-north1" }, { name = "ap-south-1", on_request = true }]
"#,
        )
        .unwrap();
        assert_eq!(s.base_domain, "games.example");
        let versions: Vec<String> = s.catalog.versions().iter().map(|v| v.to_string()).collect();
        assert_eq!(versions, ["3.9.1-r2", "4.0.0"]);
        let zones: Vec<(&str, bool)> = s.zones.iter().map(|(z, r)| (z.as_str(), *r)).collect();
        assert_eq!(zones, [("eu-north1", false), ("ap-south-1", true)]);
    }

    #[test]
    fn the_console_label_is_checked_where_it_is_read() {
        assert_eq!(parse("").unwrap().console.pattern(), "{instance}-console");
        let s = parse("console_label = \"console-{instance}\"\n").unwrap();
        assert_eq!(s.console.pattern(), "console-{instance}");
        let e = parse("console_label = \"{instance}\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("console_label"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("version = [\"3.37.0\"]\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `version`"), "{e}");
        let e = parse("zones = [{ name = \"eu-west1\", on_requst = true }]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `on_requst`"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("versions = [\"3.37.0\", \"latest\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("versions[1]"), "{e}");
        let e = parse("versions = []").unwrap_err().to_string();
        assert!(e.contains("versions:"), "{e}");
        let e = parse("zones = [{ name = \"us-east1\" }, { name = \"us-east1\" }]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zones[1].name") && e.contains("twice"), "{e}");
        let e = parse("zones = [{ name = \"us-east-1\", on_request = true }]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zones:"), "{e}");
        let e = parse("zones = [{ name = \"Bad_Zone\" }]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zones[0].name"), "{e}");
        for (text, key) in [
            ("[builds]\ncommand = \"make\"\ndir = \"rel\"", "builds.dir"),
            ("[builds]\ncommand = \" \"\ndir = \"/b\"", "builds.command"),
            (
                "[builds]\ncommand = \"make\"\ndir = \"/b\"\ntimeout = \"0s\"",
                "builds.timeout",
            ),
            (
                "[builds]\ncommand = \"make\"\ndir = \"/b\"\nkeep = 0",
                "builds.keep",
            ),
            (
                "[builds]\ncommand = \"make\"\ndir = \"/b\"\nimage = \"a b\"",
                "builds.image",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let b = parse("[builds]\ncommand = \"make\"\ndir = \"/b\"")
            .unwrap()
            .builds
            .unwrap();
        assert_eq!(
            (b.command.as_str(), b.timeout, b.keep),
            ("make", Duration::from_secs(600), 5)
        );
        let b = parse(
            "[builds]\ncommand = \"make\"\ndir = \"/b\"\nkeep = 2\nimage = \"reg/b:{version}\"\ncpu = \"500m\"",
        )
        .unwrap()
        .builds
        .unwrap();
        assert_eq!(
            (b.keep, b.job.image.as_str(), b.job.cpu.as_str()),
            (2, "reg/b:{version}", "500m")
        );
        assert_eq!(b.job.memory, "2Gi", "defaults stay where not given");
        let e = parse("billing_interval = \"0s\"").unwrap_err().to_string();
        assert!(e.contains("billing_interval"), "{e}");
        assert_eq!(
            parse("billing_interval = \"90s\"")
                .unwrap()
                .billing_interval,
            Duration::from_secs(90)
        );
    }
}
