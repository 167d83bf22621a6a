//! Certificates as operations: creating a deployment queues its `certificate` operation
//! (before the first deploy, by the creating user), a due renewal is queued by the keeper as
//! `kanmon`, both run in the deployment's queue and end up in its operations and audit logs.

use std::time::{Duration, SystemTime};

use kanmon_proxy::devcerts::{CertInfo, PemPair};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};

use super::*;
use crate::{
    certs::{CertError, CertKeeper, CertSource, RetryPolicy},
    metrics::certs::CertMetrics,
    store::Outcome,
};

/// Issues certificates valid for `LIFETIME` (renewal due after two thirds of it).
struct ShortLived;

const LIFETIME: Duration = Duration::from_secs(3);

#[async_trait::async_trait]
impl CertSource for ShortLived {
    async fn obtain(&self, hostname: &str) -> Result<PemPair, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec![hostname.to_string()]).unwrap();
        let now = SystemTime::now();
        params.not_before = now.into();
        params.not_after = (now + LIFETIME).into();
        let cert = params.self_signed(&key).unwrap();
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
    async fn revoke(&self, _cert_pem: &str) -> Result<(), CertError> {
        Ok(())
    }
    fn accepts(&self, _info: &CertInfo) -> bool {
        true
    }
}

/// Waits (bounded) until `instance` has `n` finished certificate operations; returns them,
/// oldest first.
async fn certificate_ops(rt: &Runtime, instance: &str, n: usize) -> Vec<Operation> {
    for _ in 0..500 {
        let mut ops: Vec<_> = rt
            .store()
            .ops(instance, 100)
            .unwrap()
            .into_iter()
            .filter(|o| o.kind == OpKind::Certificate && o.status.is_final())
            .collect();
        if ops.len() >= n {
            ops.reverse();
            return ops;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{instance} has fewer than {n} finished certificate operations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_renewal_queue_certificate_operations_that_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let table = Arc::new(HealthTable::new());
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        settings(),
        Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        edge(&table),
    )
    .unwrap();
    let keeper = CertKeeper::new(
        Arc::new(crate::certs::DirSink::new(dir.path().to_path_buf())),
        Arc::new(ShortLived),
        CertMetrics::new().unwrap(),
        RetryPolicy::default(),
    );
    let task = keeper.spawn(rt.clone(), Duration::from_millis(50));
    let (dep, deploy) = rt
        .create(request(DeploymentType::Production, 2), "ann")
        .unwrap();
    let first = &certificate_ops(&rt, "alpha", 1).await[0];
    assert_eq!(first.status, OpStatus::Completed, "{:?}", first.error);
    assert_eq!(first.requested_by, "ann");
    assert!(first.id < deploy.id, "queued before the first deploy");
    let result = first.result.clone().unwrap();
    assert_eq!(result["hostname"], dep.hostname.as_str());
    assert_eq!(result["renewal"], false);
    // The console's hostname gets its own leaf in the same operation.
    let s = rt.settings();
    let console = s.console.hostname(&dep.instance, &dep.zone, &s.base_domain);
    assert_eq!(result["console"]["hostname"], console.as_str(), "{result}");
    assert!(dir.path().join(format!("{console}.key")).exists());
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join(format!("{}.key", dep.hostname));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key at rest");
    assert_eq!(finished(&rt, deploy.id).await.status, OpStatus::Completed);

    // Two thirds into its life the certificate is renewed, by an operation of `kanmon`'s.
    let ops = certificate_ops(&rt, "alpha", 2).await;
    let renewal = &ops[1];
    assert_eq!(renewal.status, OpStatus::Completed, "{:?}", renewal.error);
    assert_eq!(renewal.requested_by, SYSTEM_USER);
    assert_eq!(renewal.result.as_ref().unwrap()["renewal"], true);

    let audit = rt.store().audit_log(Some("alpha"), 100).unwrap();
    let audited: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "operations.certificate")
        .collect();
    assert!(audited.len() >= 2, "{audit:?}");
    let by_ann = audited.iter().find(|e| e.who == "ann").expect("creator's");
    assert_eq!(by_ann.outcome, Outcome::Allowed);
    assert!(by_ann.detail.contains(&first.id.to_string()));
    assert!(audited.iter().any(|e| e.who == SYSTEM_USER));
    task.abort();
}

/// Fails every issuance, as a CA that is down would.
struct Down;

#[async_trait::async_trait]
impl CertSource for Down {
    async fn obtain(&self, _hostname: &str) -> Result<PemPair, CertError> {
        Err(CertError::Acme("connection refused".into()))
    }
    async fn revoke(&self, _cert_pem: &str) -> Result<(), CertError> {
        Ok(())
    }
    fn accepts(&self, _info: &CertInfo) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_certificate_operation_is_recorded_and_the_deploy_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let table = Arc::new(HealthTable::new());
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        settings(),
        Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        edge(&table),
    )
    .unwrap();
    let metrics = CertMetrics::new().unwrap();
    let keeper = CertKeeper::new(
        Arc::new(crate::certs::DirSink::new(dir.path().to_path_buf())),
        Arc::new(Down),
        metrics.clone(),
        RetryPolicy::default(),
    );
    let task = keeper.spawn(rt.clone(), Duration::from_millis(50));
    let (_, deploy) = rt
        .create(request(DeploymentType::Production, 2), "ann")
        .unwrap();
    let failed = &certificate_ops(&rt, "alpha", 1).await[0];
    assert_eq!(failed.status, OpStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("connection refused"),
        "{:?}",
        failed.error
    );
    assert_eq!(finished(&rt, deploy.id).await.status, OpStatus::Completed);
    assert_eq!(metrics.failures("alpha"), 1);
    // Backing off (a minute at first): no second operation while the deploy ran, though the
    // keeper passed every 50 ms.
    let all = rt.store().ops("alpha", 100).unwrap();
    let certs = all.iter().filter(|o| o.kind == OpKind::Certificate).count();
    assert_eq!(certs, 1, "{all:?}");
    let audit = rt.store().audit_log(Some("alpha"), 100).unwrap();
    assert!(audit.iter().any(|e| e.action == "operations.certificate"
        && e.outcome == Outcome::Error
        && e.detail.contains("connection refused")));
    task.abort();
}

/// Issues long-lived certificates and records what it revokes; revocations fail while `down`.
#[derive(Default)]
struct Revoking {
    down: std::sync::atomic::AtomicBool,
    revoked: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl CertSource for Revoking {
    async fn obtain(&self, hostname: &str) -> Result<PemPair, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec![hostname.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
    async fn revoke(&self, cert_pem: &str) -> Result<(), CertError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CertError::Acme("connection refused".into()));
        }
        self.revoked.lock().unwrap().push(cert_pem.to_string());
        Ok(())
    }
    fn accepts(&self, _info: &CertInfo) -> bool {
        true
    }
}

/// A runtime with a keeper over `source` (retrying after 200 ms, then 400 ms, ...) and a
/// deployment `alpha` whose certificate and first deploy are done; its two hostnames.
async fn certified(
    dir: &std::path::Path,
    source: Arc<Revoking>,
    metrics: &CertMetrics,
) -> (Runtime, tokio::task::JoinHandle<()>, [String; 2]) {
    let table = Arc::new(HealthTable::new());
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        settings(),
        Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        edge(&table),
    )
    .unwrap();
    let retry = RetryPolicy {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(1),
    };
    let keeper = CertKeeper::new(
        Arc::new(crate::certs::DirSink::new(dir.to_path_buf())),
        source,
        metrics.clone(),
        retry,
    );
    let task = keeper.spawn(rt.clone(), Duration::from_millis(50));
    let (dep, deploy) = rt
        .create(request(DeploymentType::Development, 1), "ann")
        .unwrap();
    let issued = &certificate_ops(&rt, "alpha", 1).await[0];
    assert_eq!(issued.status, OpStatus::Completed, "{:?}", issued.error);
    assert_eq!(finished(&rt, deploy.id).await.status, OpStatus::Completed);
    let s = rt.settings();
    let console = s.console.hostname(&dep.instance, &dep.zone, &s.base_domain);
    (rt, task, [dep.hostname.to_string(), console])
}

fn pems(dir: &std::path::Path, hosts: &[String; 2]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| std::fs::read_to_string(dir.join(format!("{h}.crt"))).unwrap())
        .collect()
}

fn revocation_audits(rt: &Runtime) -> Vec<crate::store::AuditEntry> {
    rt.store()
        .audit_log(Some("alpha"), 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "certificates.revoke")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_revokes_the_certificates_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(Revoking::default());
    let metrics = CertMetrics::new().unwrap();
    let (rt, task, hosts) = certified(dir.path(), source.clone(), &metrics).await;
    let issued = pems(dir.path(), &hosts);

    let delete = rt.submit("alpha", OpKind::Delete, "bob").unwrap();
    let done = finished(&rt, delete.id).await;
    assert_eq!(done.status, OpStatus::Completed, "{:?}", done.error);
    let result = done.result.expect("the revocation's outcome");
    let certs = result["certificates"].as_array().expect("per hostname");
    assert_eq!(certs.len(), 2, "{result}");
    for (entry, host) in certs.iter().zip(&hosts) {
        assert_eq!(entry["hostname"], host.as_str(), "{result}");
        assert_eq!(entry["status"], "revoked", "{result}");
    }
    // Exactly the certificates that were served, each revoked once, and their files gone.
    assert_eq!(*source.revoked.lock().unwrap(), issued);
    for h in &hosts {
        assert!(!dir.path().join(format!("{h}.crt")).exists());
        assert!(!dir.path().join(format!("{h}.key")).exists());
    }
    assert!(rt.deployment("alpha").unwrap().deleted);
    assert_eq!(metrics.failures("alpha"), 0);
    assert_eq!(metrics.expiry("alpha"), None);
    let audits = revocation_audits(&rt);
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits.iter().all(|e| e.outcome == Outcome::Allowed
        && e.detail
            .contains(&format!("delete operation {}", delete.id))));
    // The keeper's later passes see the deployment gone and revoke nothing twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(source.revoked.lock().unwrap().len(), 2);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_outage_at_delete_defers_the_revocation_without_holding_the_delete() {
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(Revoking::default());
    let metrics = CertMetrics::new().unwrap();
    let (rt, task, hosts) = certified(dir.path(), source.clone(), &metrics).await;
    let issued = pems(dir.path(), &hosts);
    source.down.store(true, std::sync::atomic::Ordering::SeqCst);

    let delete = rt.submit("alpha", OpKind::Delete, "bob").unwrap();
    let done = finished(&rt, delete.id).await;
    assert_eq!(done.status, OpStatus::Completed, "{:?}", done.error);
    assert!(rt.deployment("alpha").unwrap().deleted);
    let result = done.result.expect("the revocation's outcome");
    for entry in result["certificates"].as_array().expect("per hostname") {
        assert_eq!(entry["status"], "retrying", "{result}");
        assert_eq!(entry["error"], "ACME: connection refused", "{result}");
        assert_eq!(entry["retry_in"], "200ms", "{result}");
    }
    let audits = revocation_audits(&rt);
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits.iter().all(|e| e.outcome == Outcome::Error
        && e.detail.contains("connection refused")
        && e.detail.contains("retried with backoff")));
    assert!(metrics.failures("alpha") >= 2);
    // The PEMs a revocation sends stay until it succeeds.
    assert_eq!(pems(dir.path(), &hosts), issued);

    // The CA is back: a later pass revokes both (bounded wait) and removes the files.
    source
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let mut revoked = Vec::new();
    for _ in 0..250 {
        revoked = source.revoked.lock().unwrap().clone();
        let gone = hosts
            .iter()
            .all(|h| !dir.path().join(format!("{h}.crt")).exists());
        if revoked.len() == 2 && gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    revoked.sort();
    let mut want = issued;
    want.sort();
    assert_eq!(revoked, want, "both revoked by the keeper's retry");
    for h in &hosts {
        assert!(!dir.path().join(format!("{h}.key")).exists());
    }
    assert_eq!(metrics.expiry("alpha"), None);
    task.abort();
}
