//! The reconcile loop: certificates on disk brought in line with the deployments.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use kanmon_proxy::devcerts::{write_pair, CertInfo};

use super::{CertError, CertSource};
use crate::{metrics::certs::CertMetrics, runtime::Runtime};

/// One deployment as the keeper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Instance name (the metric's `deployment` label).
    pub instance: String,
    /// The hostname its certificate is for, exactly.
    pub hostname: String,
    /// Live (wants a certificate) or deleted (its certificate goes).
    pub live: bool,
}

/// How failed issuances and revocations are retried: `base`, doubled per failure, at most
/// `cap`. The current certificate stays in use meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub base: Duration,
    /// Longest delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// A minute, then up to an hour: a CA outage of a day costs 30 or so attempts, well within
    /// public CAs' failed-validation limits, and a 90-day certificate renewed at day 60 has 30
    /// days of them.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        (self.base * factor).min(self.cap)
    }
}

/// How long a CA that made no renewal suggestion (or supports none) is left alone before it is
/// asked again about the same certificate.
pub const NO_SUGGESTION_RECHECK: Duration = Duration::from_secs(6 * 3600);
/// The least time between two questions about one certificate, whatever the CA asks.
const MIN_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Hint {
    renew_at: Option<SystemTime>,
    ask_again: SystemTime,
}

#[derive(Debug)]
struct Retry {
    failures: u32,
    next: SystemTime,
}

/// Keeps `cert_dir` in line with the deployments (see the module doc of [`super`]).
pub struct CertKeeper {
    dir: PathBuf,
    source: Arc<dyn CertSource>,
    metrics: CertMetrics,
    retry: RetryPolicy,
    /// What is on disk, by hostname (read once, then kept up to date by our own writes).
    known: HashMap<String, CertInfo>,
    failing: HashMap<String, Retry>,
    /// The CA's renewal suggestions, by hostname.
    hints: HashMap<String, Hint>,
    /// Hostnames of deleted deployments whose certificate is gone: not looked at again.
    retired: std::collections::HashSet<String>,
}

impl std::fmt::Debug for CertKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKeeper")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn crt_path(dir: &Path, hostname: &str) -> PathBuf {
    dir.join(format!("{hostname}.crt"))
}

impl CertKeeper {
    /// A keeper writing into `dir` (the proxy's `cert_dir`) from `source`.
    pub fn new(
        dir: PathBuf,
        source: Arc<dyn CertSource>,
        metrics: CertMetrics,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            dir,
            source,
            metrics,
            retry,
            known: HashMap::new(),
            failing: HashMap::new(),
            hints: HashMap::new(),
            retired: std::collections::HashSet::new(),
        }
    }

    /// One pass over `wants` at time `now`; then each deployment's expiry gauge shows the
    /// earliest expiry of its certificates (its hostname's and its console's), so one failing
    /// renewal is never hidden behind the other name's fresh certificate.
    pub async fn reconcile(&mut self, wants: &[Want], now: SystemTime) {
        self.reconcile_each(wants, now).await;
        let mut earliest: HashMap<&str, SystemTime> = HashMap::new();
        for w in wants.iter().filter(|w| w.live) {
            if let Some(info) = self.known.get(&w.hostname) {
                let e = earliest
                    .entry(w.instance.as_str())
                    .or_insert(info.not_after);
                *e = (*e).min(info.not_after);
            }
        }
        for (instance, not_after) in earliest {
            self.metrics.expires(instance, not_after);
        }
    }

    async fn reconcile_each(&mut self, wants: &[Want], now: SystemTime) {
        for w in wants {
            if w.live {
                self.retired.remove(&w.hostname);
            } else if self.retired.contains(&w.hostname) {
                continue;
            }
            if let Some(r) = self.failing.get(&w.hostname) {
                if now < r.next {
                    continue;
                }
            }
            let result = if w.live {
                self.keep(w, now).await
            } else {
                self.retire(w).await
            };
            match result {
                Ok(()) => {
                    self.failing.remove(&w.hostname);
                }
                Err(e) => {
                    let failures = self.failing.get(&w.hostname).map_or(0, |r| r.failures) + 1;
                    let delay = self.retry.delay(failures);
                    self.metrics.failed(&w.instance);
                    tracing::warn!(
                        deployment = %w.instance,
                        error = %e,
                        failures,
                        retry_in = ?delay,
                        "certificate not obtained or revoked; the current one (if any) stays"
                    );
                    self.failing.insert(
                        w.hostname.clone(),
                        Retry {
                            failures,
                            next: now + delay,
                        },
                    );
                }
            }
        }
    }

    /// What is on disk for `hostname`, read once.
    fn current(&mut self, hostname: &str) -> Option<&CertInfo> {
        if !self.known.contains_key(hostname) {
            let pem = std::fs::read_to_string(crt_path(&self.dir, hostname)).ok()?;
            let info = CertInfo::from_pem(&pem).ok()?;
            self.known.insert(hostname.to_string(), info);
        }
        self.known.get(hostname)
    }

    async fn keep(&mut self, w: &Want, now: SystemTime) -> Result<(), CertError> {
        let source = self.source.clone();
        let due = match self.current(&w.hostname) {
            None => true,
            Some(info) => {
                now >= info.renew_at()
                    || info.dns_names != [w.hostname.as_str()]
                    || !source.accepts(info)
            }
        };
        if !due && !self.suggested_now(w, now).await {
            return Ok(());
        }
        let pair = source.obtain(&w.hostname).await?;
        let info = CertInfo::from_pem(&pair.cert_pem)?;
        write_pair(&self.dir, &w.hostname, &pair)?;
        tracing::info!(
            deployment = %w.instance,
            not_after = %humantime::format_rfc3339_seconds(info.not_after),
            "certificate issued"
        );
        self.known.insert(w.hostname.clone(), info);
        self.hints.remove(&w.hostname);
        Ok(())
    }

    /// Whether the CA's renewal suggestion for the current certificate has come, asking it
    /// when the last answer is stale.
    async fn suggested_now(&mut self, w: &Want, now: SystemTime) -> bool {
        let stale = self
            .hints
            .get(&w.hostname)
            .is_none_or(|h| now >= h.ask_again);
        if stale {
            let pem = std::fs::read_to_string(crt_path(&self.dir, &w.hostname)).ok();
            let suggestion = match &pem {
                Some(pem) => self.source.suggested_renewal(pem).await,
                None => None,
            };
            let hint = match suggestion {
                Some(s) => Hint {
                    renew_at: Some(s.renew_at),
                    ask_again: now + s.ask_in.max(MIN_RECHECK),
                },
                None => Hint {
                    renew_at: None,
                    ask_again: now + NO_SUGGESTION_RECHECK,
                },
            };
            self.hints.insert(w.hostname.clone(), hint);
        }
        self.hints
            .get(&w.hostname)
            .and_then(|h| h.renew_at)
            .is_some_and(|at| now >= at)
    }

    async fn retire(&mut self, w: &Want) -> Result<(), CertError> {
        let crt = crt_path(&self.dir, &w.hostname);
        let pem = match std::fs::read_to_string(&crt) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.metrics.forget(&w.instance);
                self.retired.insert(w.hostname.clone());
                return Ok(());
            }
            Err(source) => return Err(CertError::Io { path: crt, source }),
        };
        // Revoked before the files go: a failed revocation keeps the PEM to retry with.
        self.source.revoke(&pem).await?;
        for path in [crt, self.dir.join(format!("{}.key", w.hostname))] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CertError::Io { path, source }),
            }
        }
        self.known.remove(&w.hostname);
        self.hints.remove(&w.hostname);
        self.metrics.forget(&w.instance);
        self.retired.insert(w.hostname.clone());
        tracing::info!(deployment = %w.instance, "certificate revoked and removed");
        Ok(())
    }
}

/// What the keeper wants for the deployments `rt` knows: per deployment a certificate for its
/// hostname and one for its console hostname (`kanmon_router::console`). One leaf per name:
/// the edge's certificate store finds a certificate by the exact SNI (`<hostname>.crt`), and
/// each name renews on its own, through the local CA and ACME alike.
pub fn wants(rt: &Runtime) -> Vec<Want> {
    let settings = rt.settings();
    rt.deployments()
        .into_iter()
        .flat_map(|d| {
            let console = settings
                .console
                .hostname(&d.instance, &d.zone, &settings.base_domain);
            [d.hostname.to_ascii_lowercase(), console].map(|hostname| Want {
                instance: d.instance.to_string(),
                hostname,
                live: !d.deleted,
            })
        })
        .collect()
}

impl CertKeeper {
    /// Reconciles against `rt` every `every` until the task is aborted. A pass reads only
    /// memory unless something is due, so a short period is cheap; it is how soon a new
    /// deployment gets its certificate.
    pub fn spawn(mut self, rt: Runtime, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.reconcile(&wants(&rt), SystemTime::now()).await;
                tokio::time::sleep(every).await;
            }
        })
    }
}
