//! Runtime settings with the platform defaults, optionally read from a file ([`file`]).

mod file;
mod notify;

pub use file::SettingsError;
pub use notify::{NotifySettings, Smtp, SmtpSecurity};

use std::{path::PathBuf, time::Duration};

use kanmon_router::{Catalog, Version, Zone};

use crate::domain::Timings;

/// Platform settings the lifecycle depends on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base domain of deployment hostnames.
    pub base_domain: String,
    /// Console hostnames: `{label}.{zone}.{base_domain}` (file key `console_label`).
    pub console: kanmon_router::ConsoleNames,
    /// Released versions.
    pub catalog: Catalog,
    /// Zone catalog: `(zone, on_request)`.
    pub zones: Vec<(Zone, bool)>,
    /// Lifecycle timings.
    pub timings: Timings,
    /// How often a starting node is health-checked.
    pub health_poll: Duration,
    /// How often a serving node is checked for having exited.
    pub monitor_interval: Duration,
    /// How long a database export stays downloadable before its file is deleted.
    pub export_ttl: Duration,
    /// Where the driver keeps node logs (`<dir>/<instance>/<node>.log`), served by the logs
    /// API; `None` for drivers whose logs live elsewhere (Kubernetes keeps pod logs itself).
    pub node_logs: Option<PathBuf>,
    /// How often each deployment's CPUs are sampled for billing (the day's maximum is charged).
    pub billing_interval: Duration,
    /// Notification delivery: retries, SMTP server, loopback switch.
    pub notify: NotifySettings,
    /// How builds run (command, directory, time limit); `None`: this control plane does not
    /// build, and a `build` operation fails saying so.
    pub builds: Option<crate::driver::build_local::LocalBuildConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_domain: "kanmon.test".into(),
            console: kanmon_router::ConsoleNames::default(),
            catalog: default_catalog(),
            zones: default_zones(),
            timings: Timings::default(),
            health_poll: Duration::from_millis(200),
            monitor_interval: Duration::from_secs(2),
            export_ttl: super::DOWNLOAD_TTL,
            node_logs: None,
            billing_interval: Duration::from_secs(5 * 60),
            notify: NotifySettings::default(),
            builds: None,
        }
    }
}

/// The released versions known without configuration.
pub fn default_catalog() -> Catalog {
    let released = [
        "3.31.0",
        "3.32.0",
        "3.32.1",
        "3.33.0",
        "3.33.1",
        "3.34.0",
        "3.35.0",
        "3.35.1",
        "3.36.0",
        "3.37.0",
        "3.37.1-r1",
    ];
    Catalog::new(
        released
            .iter()
            .filter_map(|s| s.parse::<Version>().ok())
            .collect(),
    )
}

/// The default zone catalog (DESIGN.md): three offered zones, two on request.
pub fn default_zones() -> Vec<(Zone, bool)> {
    [
        ("us-east1", false),
        ("eu-west1", false),
        ("asia-northeast3", false),
        ("us-east-1", true),
        ("eu-west-2", true),
    ]
    .iter()
    .filter_map(|(z, r)| Zone::parse(z).ok().map(|z| (z, *r)))
    .collect()
}
