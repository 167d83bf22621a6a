//! The keeper against the local CA: one certificate per deployment for exactly its hostname,
//! renewal at two thirds, a failed renewal keeps the current certificate, delete removes it.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use kanmon_proxy::devcerts::{CertInfo, LocalCa, PemPair, LEAF_LIFETIME};

use super::*;
use crate::metrics::certs::CertMetrics;

const HOST: &str = "alpha.us-east1.kanmon.test";

/// The local CA, made to fail on demand, counting attempts; optionally a CA that suggests
/// renewing ten days after issuance (as ACME Renewal Information would before a revocation).
struct Flaky {
    inner: LocalCaSource,
    down: AtomicBool,
    attempts: AtomicUsize,
    suggests: Option<Duration>,
    asked: AtomicUsize,
}

#[async_trait::async_trait]
impl CertSource for Flaky {
    async fn obtain(&self, hostname: &str) -> Result<PemPair, CertError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(CertError::Io {
                path: "ca-outage".into(),
                source: std::io::Error::other("the CA is down"),
            });
        }
        self.inner.obtain(hostname).await
    }
    async fn revoke(&self, cert_pem: &str) -> Result<(), CertError> {
        self.inner.revoke(cert_pem).await
    }
    fn accepts(&self, info: &CertInfo) -> bool {
        self.inner.accepts(info)
    }
    async fn suggested_renewal(&self, cert_pem: &str) -> Option<Suggestion> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let after = self.suggests?;
        let info = CertInfo::from_pem(cert_pem).ok()?;
        Some(Suggestion {
            renew_at: info.not_before + after,
            ask_in: Duration::from_secs(3600),
        })
    }
}

fn setup() -> (tempfile::TempDir, Arc<Flaky>, CertKeeper, CertMetrics) {
    setup_with(None)
}

fn setup_with(
    suggests: Option<Duration>,
) -> (tempfile::TempDir, Arc<Flaky>, CertKeeper, CertMetrics) {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::open_or_create(dir.path(), "kanmon.test").unwrap();
    let source = Arc::new(Flaky {
        inner: LocalCaSource::new(ca),
        down: AtomicBool::new(false),
        attempts: AtomicUsize::new(0),
        suggests,
        asked: AtomicUsize::new(0),
    });
    let metrics = CertMetrics::new().unwrap();
    let keeper = CertKeeper::new(
        Arc::new(DirSink::new(dir.path().to_path_buf())),
        source.clone(),
        metrics.clone(),
        RetryPolicy {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(600),
        },
    );
    (dir, source, keeper, metrics)
}

/// One pass the way the control plane makes it: the keeper says what is due, and each due
/// certificate's operation (queued and run at once here) issues it.
async fn pass(keeper: &CertKeeper, wants: &[Want], now: SystemTime) {
    for w in keeper.reconcile(wants, now).await {
        // A failure is recorded by the keeper (backoff, metric); the operation would fail.
        let _failed = keeper.issue(&w, now).await;
    }
}

fn want(live: bool) -> Want {
    Want {
        instance: "alpha".into(),
        hostname: HOST.into(),
        live,
    }
}

fn on_disk(dir: &tempfile::TempDir) -> Option<String> {
    std::fs::read_to_string(dir.path().join(format!("{HOST}.crt"))).ok()
}

#[tokio::test]
async fn a_deployment_gets_a_leaf_for_exactly_its_hostname_and_delete_removes_it() {
    let (dir, _source, keeper, metrics) = setup();
    let now = SystemTime::now();
    pass(&keeper, &[want(true)], now).await;
    let info = CertInfo::from_pem(&on_disk(&dir).expect("certificate written")).unwrap();
    assert_eq!(info.dns_names, [HOST]);
    assert!(info.server_auth);
    let key = dir.path().join(format!("{HOST}.key"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let expiry = metrics.expiry("alpha").expect("expiry series");
    let not_after = info
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(expiry, not_after.as_secs() as i64);
    // No zone wildcard, nothing for another deployment.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".crt"))
        .collect();
    assert_eq!(names.len(), 2, "ca.crt and the leaf: {names:?}");

    pass(&keeper, &[want(false)], now).await;
    assert!(on_disk(&dir).is_none());
    assert!(!key.exists());
    assert_eq!(metrics.expiry("alpha"), None);

    // Later passes leave the retired name alone; should it come back, it is kept and
    // retired again like any other.
    pass(&keeper, &[want(false)], now).await;
    pass(&keeper, &[want(true)], now).await;
    assert!(on_disk(&dir).is_some());
    pass(&keeper, &[want(false)], now).await;
    assert!(on_disk(&dir).is_none());
}

#[tokio::test]
async fn renewal_at_two_thirds_survives_a_ca_outage_with_backoff() {
    let (dir, source, keeper, metrics) = setup();
    let start = SystemTime::now();
    pass(&keeper, &[want(true)], start).await;
    let first = on_disk(&dir).unwrap();
    assert_eq!(source.attempts.load(Ordering::SeqCst), 1);

    // Not due before two thirds of the lifetime.
    let early = start + LEAF_LIFETIME / 2;
    pass(&keeper, &[want(true)], early).await;
    assert_eq!(source.attempts.load(Ordering::SeqCst), 1);

    // Due, but the CA is down: the current certificate stays, the failure is counted.
    source.down.store(true, Ordering::SeqCst);
    let due = start + LEAF_LIFETIME * 2 / 3 + Duration::from_secs(60);
    pass(&keeper, &[want(true)], due).await;
    assert_eq!(source.attempts.load(Ordering::SeqCst), 2);
    assert_eq!(on_disk(&dir).unwrap(), first);
    assert_eq!(metrics.failures("alpha"), 1);
    assert!(metrics.expiry("alpha").is_some(), "expiry still shown");

    // Within the backoff nothing is tried; after it, the next attempt; the delay doubles.
    pass(&keeper, &[want(true)], due + Duration::from_secs(30)).await;
    assert_eq!(source.attempts.load(Ordering::SeqCst), 2);
    pass(&keeper, &[want(true)], due + Duration::from_secs(61)).await;
    assert_eq!(source.attempts.load(Ordering::SeqCst), 3);
    pass(&keeper, &[want(true)], due + Duration::from_secs(61 + 90)).await;
    assert_eq!(
        source.attempts.load(Ordering::SeqCst),
        3,
        "second delay is 120 s"
    );

    // The CA is back: renewed.
    source.down.store(false, Ordering::SeqCst);
    pass(&keeper, &[want(true)], due + Duration::from_secs(61 + 121)).await;
    assert_eq!(source.attempts.load(Ordering::SeqCst), 4);
    let renewed = on_disk(&dir).unwrap();
    assert_ne!(renewed, first);
}

#[tokio::test]
async fn a_certificate_of_a_replaced_ca_is_reissued() {
    let (dir, source, keeper, _metrics) = setup();
    let now = SystemTime::now();
    pass(&keeper, &[want(true)], now).await;
    // A restart over a new CA (the old one was replaced): the old CA's leaf is not its own.
    let ca = LocalCa::open_or_create(dir.path(), "kanmon.test").unwrap();
    assert!(!ca.replaced);
    let before = on_disk(&dir).unwrap();
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    let fresh = LocalCa::open_or_create(dir.path(), "kanmon.test").unwrap();
    let restarted = CertKeeper::new(
        Arc::new(DirSink::new(dir.path().to_path_buf())),
        Arc::new(LocalCaSource::new(fresh)),
        CertMetrics::new().unwrap(),
        RetryPolicy::default(),
    );
    pass(&restarted, &[want(true)], now).await;
    assert_ne!(on_disk(&dir).unwrap(), before);
    assert_eq!(source.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_ca_suggestion_renews_before_two_thirds_and_is_asked_rarely() {
    let day = Duration::from_secs(86_400);
    let (dir, source, keeper, _metrics) = setup_with(Some(day * 10));
    let start = SystemTime::now();
    pass(&keeper, &[want(true)], start).await;
    let first = on_disk(&dir).unwrap();
    // Passes before the suggested time ask once an hour at most and renew nothing.
    for minute in 1..=30 {
        pass(
            &keeper,
            &[want(true)],
            start + Duration::from_secs(60 * minute),
        )
        .await;
    }
    assert_eq!(source.asked.load(Ordering::SeqCst), 1);
    assert_eq!(source.attempts.load(Ordering::SeqCst), 1);
    // After the suggested time (day 10 of 90, long before day 60), the next answer renews.
    pass(&keeper, &[want(true)], start + day * 11).await;
    assert_eq!(source.attempts.load(Ordering::SeqCst), 2);
    assert_ne!(on_disk(&dir).unwrap(), first);
}

#[tokio::test]
async fn a_ca_without_suggestions_is_asked_every_few_hours_only() {
    let (_dir, source, keeper, _metrics) = setup();
    let start = SystemTime::now();
    for minute in 0..120 {
        pass(
            &keeper,
            &[want(true)],
            start + Duration::from_secs(60 * minute),
        )
        .await;
    }
    assert_eq!(source.asked.load(Ordering::SeqCst), 1);
    // First asked a minute in (at issuance the certificate was new), so again 6 h after that.
    pass(
        &keeper,
        &[want(true)],
        start + Duration::from_secs(60) + NO_SUGGESTION_RECHECK,
    )
    .await;
    assert_eq!(source.asked.load(Ordering::SeqCst), 2);
    assert_eq!(source.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_due_certificate_is_handed_out_once_while_its_operation_waits() {
    let (dir, source, keeper, _metrics) = setup();
    let now = SystemTime::now();
    let queue = || Ok::<_, ()>(true);
    assert_eq!(keeper.reconcile(&[want(true)], now).await, [want(true)]);
    assert_eq!(keeper.claim(&want(true), now, queue), Ok(true));
    // Its operation waits in the queue (behind a deploy, say): not handed out again…
    let soon = now + Duration::from_secs(5);
    assert!(keeper.reconcile(&[want(true)], soon).await.is_empty());
    assert_eq!(keeper.claim(&want(true), soon, queue), Ok(false));
    // …until it has had a while (an operation interrupted by a restart never reports).
    let later = now + Duration::from_secs(61);
    assert_eq!(keeper.reconcile(&[want(true)], later).await, [want(true)]);
    assert_eq!(keeper.claim(&want(true), later, queue), Ok(true));
    keeper.issue(&want(true), later).await.unwrap();
    assert!(on_disk(&dir).is_some());
    assert!(keeper.reconcile(&[want(true)], later).await.is_empty());
    assert_eq!(source.attempts.load(Ordering::SeqCst), 1);
}

/// A deployment's console hostname gets its own leaf, and the expiry gauge shows the earlier of
/// its two certificates (issued a pass apart; equal when both passes fall in one second).
#[tokio::test]
async fn the_console_name_gets_its_own_leaf_and_the_gauge_the_earliest_expiry() {
    let (dir, _source, keeper, metrics) = setup();
    let console = Want {
        instance: "alpha".into(),
        hostname: "alpha-console.us-east1.kanmon.test".into(),
        live: true,
    };
    let now = SystemTime::now();
    for w in keeper.reconcile(&[want(true)], now).await {
        keeper.issue(&w, now).await.unwrap();
    }
    // Issued later: expires later than the API name's leaf.
    let later = now + Duration::from_secs(5);
    for w in keeper
        .reconcile(&[want(true), console.clone()], later)
        .await
    {
        keeper.issue(&w, later).await.unwrap();
    }
    let read = |host: &str| {
        let pem = std::fs::read_to_string(dir.path().join(format!("{host}.crt"))).unwrap();
        CertInfo::from_pem(&pem).unwrap()
    };
    let api = read(HOST);
    let own = read(&console.hostname);
    assert_eq!(own.dns_names, [console.hostname.as_str()]);
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let earliest = Some(secs(api.not_after.min(own.not_after)));
    assert_eq!(metrics.expiry("alpha"), earliest);
    // Whatever the order of the names.
    keeper.reconcile(&[console, want(true)], later).await;
    assert_eq!(metrics.expiry("alpha"), earliest);
}

/// A certificate operation stops at its first name's failure; the second name, never tried,
/// waits out the same backoff instead of queueing a second operation on the next pass.
#[tokio::test]
async fn a_failure_of_one_name_backs_off_the_whole_deployment() {
    let (_dir, source, keeper, _metrics) = setup();
    let console = Want {
        instance: "alpha".into(),
        hostname: "alpha-console.us-east1.kanmon.test".into(),
        live: true,
    };
    let wants = [want(true), console];
    source.down.store(true, Ordering::SeqCst);
    let now = SystemTime::now();
    keeper.reconcile(&wants, now).await;
    assert!(keeper.issue(&want(true), now).await.is_err());
    let soon = now + Duration::from_secs(1);
    assert!(keeper.reconcile(&wants, soon).await.is_empty());
    let queued = keeper.claim(&wants[1], soon, || Ok::<_, ()>(true));
    assert_eq!(queued, Ok(false), "the console name is backing off too");
    // After the backoff both are due again.
    let later = now + Duration::from_secs(61);
    assert_eq!(keeper.reconcile(&wants, later).await.len(), 2);
}
