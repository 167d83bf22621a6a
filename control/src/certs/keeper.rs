//! The reconcile loop: certificates in the sink brought in line with the deployments.

mod revoke;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use kanmon_proxy::devcerts::CertInfo;

use super::{sink::CertSink, CertError, CertSource};
use crate::{
    metrics::certs::CertMetrics,
    runtime::{Runtime, SYSTEM_USER},
};

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

/// How long a certificate operation the keeper queued may take before the keeper looks at the
/// deployment again (one interrupted by a restart never reports; a second queueing of one that
/// still waits is refused by the queue, so this only bounds how soon that is noticed).
const QUEUED_RECHECK: Duration = Duration::from_secs(60);

/// What the keeper knows, behind one lock taken only between awaits.
#[derive(Default)]
struct State {
    /// What is in the sink, by hostname (read once, then kept up to date by our own writes).
    known: HashMap<String, CertInfo>,
    failing: HashMap<String, Retry>,
    /// The CA's renewal suggestions, by hostname.
    hints: HashMap<String, Hint>,
    /// Hostnames of deleted deployments whose certificate is gone: not looked at again.
    retired: std::collections::HashSet<String>,
    /// Hostnames with a certificate operation queued, and when.
    queued: HashMap<String, SystemTime>,
    /// The deployment each live hostname belongs to (its own and its console's).
    owners: HashMap<String, String>,
}

impl State {
    /// Whether `w` waits out a failure's backoff. A live deployment's names share one: its
    /// certificate operation obtains both and stops at the first failure, so the other name
    /// has no failure of its own yet must not queue a second operation at once.
    fn backing_off(&self, w: &Want, now: SystemTime) -> bool {
        let failing = |host: &str| self.failing.get(host).is_some_and(|r| now < r.next);
        if !w.live {
            return failing(&w.hostname);
        }
        failing(&w.hostname)
            || self
                .owners
                .iter()
                .any(|(host, owner)| *owner == w.instance && failing(host))
    }

    /// The earliest expiry of `instance`'s certificates: one failing renewal is never hidden
    /// behind the other name's fresh certificate.
    fn earliest(&self, instance: &str) -> Option<SystemTime> {
        self.owners
            .iter()
            .filter(|(_, owner)| owner.as_str() == instance)
            .filter_map(|(host, _)| self.known.get(host).map(|i| i.not_after))
            .min()
    }
}

struct Shared {
    sink: Arc<dyn CertSink>,
    source: Arc<dyn CertSource>,
    metrics: CertMetrics,
    retry: RetryPolicy,
    state: Mutex<State>,
}

/// Keeps the sink in line with the deployments (see the module doc of [`super`]): decides
/// which certificates are due ([`CertKeeper::reconcile`]) and obtains one when its certificate
/// operation runs ([`CertKeeper::issue`]). Cheap to clone (one shared state).
#[derive(Clone)]
pub struct CertKeeper {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CertKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKeeper").finish_non_exhaustive()
    }
}

impl CertKeeper {
    /// A keeper putting certificates from `source` into `sink`.
    pub fn new(
        sink: Arc<dyn CertSink>,
        source: Arc<dyn CertSource>,
        metrics: CertMetrics,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                sink,
                source,
                metrics,
                retry,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass over `wants` at time `now`: revokes and removes the certificates of deleted
    /// deployments, and returns the live ones due for a certificate (none on disk, renewal
    /// time, the CA's suggestion, a wrong name or CA) that are neither backing off after a
    /// failure nor already queued. The caller queues a certificate operation for each through
    /// [`CertKeeper::claim`], and the operation calls [`CertKeeper::issue`] when it runs.
    pub async fn reconcile(&self, wants: &[Want], now: SystemTime) -> Vec<Want> {
        let mut due = Vec::new();
        for w in wants {
            let skip = {
                let mut st = self.state();
                if w.live {
                    st.retired.remove(&w.hostname);
                    st.owners.insert(w.hostname.clone(), w.instance.clone());
                }
                (!w.live && st.retired.contains(&w.hostname))
                    || st.backing_off(w, now)
                    || (w.live
                        && st
                            .queued
                            .get(&w.hostname)
                            .is_some_and(|at| now < *at + QUEUED_RECHECK))
            };
            if skip {
                continue;
            }
            if w.live {
                match self.due(w, now).await {
                    Ok(true) => due.push(w.clone()),
                    Ok(false) => {}
                    // The sink could not be read: nothing is issued blind (a reissue of
                    // everything during an API outage would hit the CA's rate limits).
                    Err(e) => self.failed(w, &e, now),
                }
            } else if let Err(e) = self.retire(w).await {
                self.failed(w, &e, now);
            }
        }
        due
    }

    /// Queues `w`'s certificate operation through `queue` (which says whether it queued one)
    /// unless, by now, `w` is backing off or already queued: the state may have moved since
    /// [`CertKeeper::reconcile`] looked. Under the keeper's lock, which an issuance takes to
    /// record its outcome before its operation finishes: so either that outcome is seen here,
    /// or the operation is still unfinished and the queue refuses a second one.
    pub fn claim<E>(
        &self,
        w: &Want,
        now: SystemTime,
        queue: impl FnOnce() -> Result<bool, E>,
    ) -> Result<bool, E> {
        let mut st = self.state();
        let busy = st.backing_off(w, now)
            || st
                .queued
                .get(&w.hostname)
                .is_some_and(|at| now < *at + QUEUED_RECHECK);
        if busy {
            return Ok(false);
        }
        let queued = queue()?;
        st.queued.insert(w.hostname.clone(), now);
        Ok(queued)
    }

    /// Records a failure of `w`'s issuance or revocation: retried after the backoff.
    fn failed(&self, w: &Want, e: &CertError, now: SystemTime) {
        let mut st = self.state();
        let failures = st.failing.get(&w.hostname).map_or(0, |r| r.failures) + 1;
        let delay = self.shared.retry.delay(failures);
        self.shared.metrics.failed(&w.instance);
        tracing::warn!(
            deployment = %w.instance,
            error = %e,
            failures,
            retry_in = ?delay,
            "certificate not obtained or revoked; the current one (if any) stays"
        );
        st.failing.insert(
            w.hostname.clone(),
            Retry {
                failures,
                next: now + delay,
            },
        );
    }

    /// What the sink holds for `hostname`, read once (a certificate that does not parse is
    /// none: it is replaced).
    async fn current(&self, hostname: &str) -> Result<Option<CertInfo>, CertError> {
        if let Some(info) = self.state().known.get(hostname) {
            return Ok(Some(info.clone()));
        }
        let Some(pem) = self.shared.sink.current(hostname).await? else {
            return Ok(None);
        };
        let Ok(info) = CertInfo::from_pem(&pem) else {
            return Ok(None);
        };
        self.state()
            .known
            .insert(hostname.to_string(), info.clone());
        Ok(Some(info))
    }

    /// Whether `w` needs a certificate now.
    async fn due(&self, w: &Want, now: SystemTime) -> Result<bool, CertError> {
        let due = match self.current(&w.hostname).await? {
            None => true,
            Some(info) => {
                self.show_expiry(&w.instance);
                now >= info.renew_at()
                    || info.dns_names != [w.hostname.as_str()]
                    || !self.shared.source.accepts(&info)
            }
        };
        Ok(due || self.suggested_now(w, now).await)
    }

    /// Obtains a certificate for `w` and puts it into the sink, at time `now`; a failure keeps the current certificate and backs off. What a certificate
    /// operation runs.
    pub async fn issue(&self, w: &Want, now: SystemTime) -> Result<CertInfo, CertError> {
        let result = self.obtain(w).await;
        let mut st = self.state();
        st.queued.remove(&w.hostname);
        match result {
            Ok(info) => {
                st.failing.remove(&w.hostname);
                st.hints.remove(&w.hostname);
                st.known.insert(w.hostname.clone(), info.clone());
                st.owners.insert(w.hostname.clone(), w.instance.clone());
                if let Some(at) = st.earliest(&w.instance) {
                    self.shared.metrics.expires(&w.instance, at);
                }
                Ok(info)
            }
            Err(e) => {
                drop(st);
                self.failed(w, &e, now);
                Err(e)
            }
        }
    }

    async fn obtain(&self, w: &Want) -> Result<CertInfo, CertError> {
        let pair = self.shared.source.obtain(&w.hostname).await?;
        let info = CertInfo::from_pem(&pair.cert_pem)?;
        self.shared.sink.put(&w.hostname, &pair).await?;
        tracing::info!(
            deployment = %w.instance,
            not_after = %humantime::format_rfc3339_seconds(info.not_after),
            "certificate issued"
        );
        Ok(info)
    }

    /// Sets `instance`'s expiry gauge to the earliest of its certificates.
    fn show_expiry(&self, instance: &str) {
        if let Some(at) = self.state().earliest(instance) {
            self.shared.metrics.expires(instance, at);
        }
    }

    /// Whether the CA's renewal suggestion for the current certificate has come, asking it
    /// when the last answer is stale.
    async fn suggested_now(&self, w: &Want, now: SystemTime) -> bool {
        let stale = self
            .state()
            .hints
            .get(&w.hostname)
            .is_none_or(|h| now >= h.ask_again);
        if stale {
            let pem = self.shared.sink.current(&w.hostname).await.ok().flatten();
            let suggestion = match &pem {
                Some(pem) => self.shared.source.suggested_renewal(pem).await,
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
            self.state().hints.insert(w.hostname.clone(), hint);
        }
        self.state()
            .hints
            .get(&w.hostname)
            .and_then(|h| h.renew_at)
            .is_some_and(|at| now >= at)
    }

    async fn retire(&self, w: &Want) -> Result<(), CertError> {
        let Some(pem) = self.shared.sink.current(&w.hostname).await? else {
            self.shared.metrics.forget(&w.instance);
            self.state().retired.insert(w.hostname.clone());
            return Ok(());
        };
        // Revoked before it goes: a failed revocation keeps the PEM to retry with.
        self.shared.source.revoke(&pem).await?;
        self.shared.sink.remove(&w.hostname).await?;
        let mut st = self.state();
        st.known.remove(&w.hostname);
        st.hints.remove(&w.hostname);
        st.failing.remove(&w.hostname);
        st.owners.remove(&w.hostname);
        st.retired.insert(w.hostname.clone());
        self.shared.metrics.forget(&w.instance);
        tracing::info!(deployment = %w.instance, "certificate revoked and removed");
        Ok(())
    }
}

/// What the keeper wants for the deployments `rt` knows: each one's hostname and its
/// console's (a certificate operation obtains both).
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

#[async_trait::async_trait]
impl crate::runtime::Certifier for CertKeeper {
    async fn certify(&self, instance: &str, hostname: &str) -> Result<serde_json::Value, String> {
        let w = Want {
            instance: instance.to_string(),
            hostname: hostname.to_string(),
            live: true,
        };
        let renewal = matches!(self.current(hostname).await, Ok(Some(_)));
        let info = self
            .issue(&w, SystemTime::now())
            .await
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({
            "hostname": hostname,
            "renewal": renewal,
            "not_before": humantime::format_rfc3339_seconds(info.not_before).to_string(),
            "not_after": humantime::format_rfc3339_seconds(info.not_after).to_string(),
        }))
    }

    async fn revoke(&self, instance: &str, hostname: &str) -> crate::runtime::Revocation {
        let w = Want {
            instance: instance.to_string(),
            hostname: hostname.to_string(),
            live: false,
        };
        self.revoke_now(&w, SystemTime::now()).await
    }
}

impl CertKeeper {
    /// Becomes `rt`'s certifier (so creating a deployment queues its certificate) and
    /// reconciles against `rt` every `every` until the task is aborted, queueing a certificate
    /// operation (as [`SYSTEM_USER`]) for each deployment due. A pass reads only memory unless
    /// something is due, so a short period is cheap; it is how soon a renewal is queued.
    pub fn spawn(self, rt: Runtime, every: Duration) -> tokio::task::JoinHandle<()> {
        rt.set_certifier(Arc::new(self.clone()));
        tokio::spawn(async move {
            loop {
                let now = SystemTime::now();
                for w in self.reconcile(&wants(&rt), now).await {
                    let (rt, keeper) = (rt.clone(), self.clone());
                    let queued = tokio::task::spawn_blocking(move || {
                        keeper.claim(&w, now, || {
                            rt.queue_certificate(&w.instance, SYSTEM_USER)
                                .map(|op| op.is_some())
                        })
                    })
                    .await;
                    match queued {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "certificate not queued"),
                        Err(e) => tracing::error!(error = %e, "queueing a certificate panicked"),
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}
