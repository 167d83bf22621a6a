//! The certificate keeper with the Kubernetes sink, against the wire-level API fixture: a
//! deployment's certificate becomes a `kubernetes.io/tls` Secret in the edge's namespace (and
//! nowhere else), a restarted keeper reads it back instead of issuing again, an unreadable API
//! issues nothing, a deleted deployment's Secret goes, and a TLS-ALPN-01 challenge takes the
//! same path under its own label.

use std::{sync::Arc, time::SystemTime};

use base64::Engine;
use kanmon_control::{
    certs::{self, CertSink, SecretSink, SinkConfig, SourceConfig, Want},
    k8s::connect,
    metrics::certs::CertMetrics,
    store::Store,
};
use kanmon_proxy::devcerts::{CertInfo, LocalCa};
use kanmon_testkit::k8s::{ApiFixture, Kind};
use serde_json::{json, Value};

const EDGE: &str = "kanmon-system";
const HOST: &str = "alpha.us-east1.kanmon.test";
const SECRET: &str = "kanmon-cert.alpha.us-east1.kanmon.test";

fn want(live: bool) -> Want {
    Want {
        instance: "alpha".into(),
        hostname: HOST.into(),
        live,
    }
}

async fn fixture() -> ApiFixture {
    let api = ApiFixture::start().await;
    api.put(
        Kind::Namespace,
        "",
        EDGE,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": EDGE}}),
    );
    api
}

async fn keeper(
    api: &ApiFixture,
    dir: &std::path::Path,
    metrics: CertMetrics,
) -> certs::CertKeeper {
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    certs::keeper(
        &SourceConfig::LocalCa,
        SinkConfig::Secrets {
            client,
            namespace: EDGE.into(),
        },
        dir,
        "kanmon.test",
        Arc::new(Store::in_memory().unwrap()),
        &dir.join("acme-account.json"),
        metrics,
    )
    .await
    .unwrap()
}

fn data(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().expect("data key");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// One pass as the control plane makes it: due certificates issued at once.
async fn pass(keeper: &certs::CertKeeper, wants: &[Want], now: SystemTime) -> usize {
    let due = keeper.reconcile(wants, now).await;
    for w in &due {
        keeper.issue(w, now).await.unwrap();
    }
    due.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_a_tls_secret_in_the_edge_namespace_read_back_after_a_restart() {
    let api = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = CertMetrics::new().unwrap();
    let k = keeper(&api, dir.path(), metrics.clone()).await;
    let now = SystemTime::now();
    assert_eq!(pass(&k, &[want(true)], now).await, 1);

    let secret = api.get(Kind::Secret, EDGE, SECRET).expect("Secret written");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(
        secret["metadata"]["labels"]["kanmon.dev/certificate"],
        "serving"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["kanmon.dev/hostname"],
        HOST
    );
    let info = CertInfo::from_pem(&data(&secret, "tls.crt")).unwrap();
    assert_eq!(info.dns_names, [HOST]);
    let ca = LocalCa::open_or_create(dir.path(), "kanmon.test").unwrap();
    assert!(ca.issued(&info), "issued by the local CA in --cert-dir");
    assert!(data(&secret, "tls.key").contains("PRIVATE KEY"));
    // Only the certificate and the CA are on disk: the leaf lives in the Secret.
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".crt") || n.ends_with(".key"))
        .collect();
    assert!(files.iter().all(|f| f.starts_with("ca.")), "{files:?}");
    // Nothing written or read outside the edge's namespace.
    let secrets = api.list(Kind::Secret);
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert!(api
        .requests()
        .iter()
        .filter(|r| r.contains("/secrets"))
        .all(|r| r.contains(&format!("/namespaces/{EDGE}/secrets/"))));

    // A restarted control plane reads it back: nothing is due, the expiry is shown.
    let restarted_metrics = CertMetrics::new().unwrap();
    let restarted = keeper(&api, dir.path(), restarted_metrics.clone()).await;
    assert_eq!(pass(&restarted, &[want(true)], now).await, 0);
    let not_after = info
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(
        restarted_metrics.expiry("alpha"),
        Some(not_after.as_secs() as i64)
    );
    assert_eq!(
        api.get(Kind::Secret, EDGE, SECRET).unwrap()["data"],
        secret["data"],
        "not reissued"
    );

    // Renewal time: a new certificate replaces the Secret's data in one apply.
    let due = info.renew_at() + std::time::Duration::from_secs(1);
    assert_eq!(pass(&restarted, &[want(true)], due).await, 1);
    let renewed = api.get(Kind::Secret, EDGE, SECRET).unwrap();
    assert_ne!(data(&renewed, "tls.crt"), data(&secret, "tls.crt"));

    // The deployment deleted: its Secret goes.
    pass(&restarted, &[want(false)], due).await;
    assert!(api.get(Kind::Secret, EDGE, SECRET).is_none());
    assert_eq!(restarted_metrics.expiry("alpha"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_api_issues_nothing_and_counts_a_failure() {
    let api = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = CertMetrics::new().unwrap();
    let k = keeper(&api, dir.path(), metrics.clone()).await;
    api.set_down(true);
    let now = SystemTime::now();
    assert!(k.reconcile(&[want(true)], now).await.is_empty());
    assert_eq!(metrics.failures("alpha"), 1);
    api.set_down(false);
    // After the backoff it is due and issued.
    let later = now + std::time::Duration::from_secs(61);
    assert_eq!(pass(&k, &[want(true)], later).await, 1);
    assert!(api.get(Kind::Secret, EDGE, SECRET).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_secret_is_labelled_apart_and_removed() {
    let api = fixture().await;
    let client = connect(Some(&api.kubeconfig())).await.unwrap();
    let sink = SecretSink::new(client, EDGE);
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::open_or_create(dir.path(), "kanmon.test").unwrap();
    let pair = ca.issue_pair(HOST).unwrap();
    sink.put_challenge(HOST, &pair).await.unwrap();
    let name = "kanmon-acme.alpha.us-east1.kanmon.test";
    let secret = api.get(Kind::Secret, EDGE, name).expect("challenge Secret");
    assert_eq!(
        secret["metadata"]["labels"]["kanmon.dev/certificate"],
        "acme-challenge"
    );
    assert_eq!(data(&secret, "tls.crt"), pair.cert_pem);
    // Not the serving certificate.
    assert_eq!(sink.current(HOST).await.unwrap(), None);
    sink.remove_challenge(HOST).await;
    assert!(api.get(Kind::Secret, EDGE, name).is_none());
    // Removing what is gone is fine.
    sink.remove(HOST).await.unwrap();
}
