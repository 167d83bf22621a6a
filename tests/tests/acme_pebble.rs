//! Certificates from a real ACME server: Debian's `pebble` (with `pebble-challtestsrv` as its
//! DNS, answering 127.0.0.1 for every name) on loopback, validating TLS-ALPN-01 against the
//! edge itself (`tlsPort` is the edge's TLS port; `PEBBLE_VA_ALWAYS_VALID` is not set).
//!
//! One deployment's life: its certificate is issued and served (verified against pebble's
//! root), renewed at two thirds of a short validity while a WebSocket stays open, kept through
//! a CA outage (with the failure counted and the expiry still shown), and revoked on delete.
//! Skipped, saying so, where pebble is not installed (scripts/setup.sh installs it).

#[path = "acme_pebble/rig.rs"]
mod rig;

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::{SinkExt, StreamExt};
use kanmon_control::{
    certs::{self, acme::Challenge, SourceConfig, Want},
    metrics::certs::CertMetrics,
    store::Store,
};
use kanmon_tests::{client_config, tls_connect};
use rig::{https, Rig};
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "alpha.us-east1.kanmon.test";
/// Pebble's certificate validity (seconds): renewal is due after 60.
const VALIDITY: u64 = 90;

/// One keeper pass the way the control plane makes it: each certificate the keeper finds due
/// is issued as its certificate operation would (the queue itself is tested in
/// `kanmon-control`'s runtime tests).
async fn pass(keeper: &certs::CertKeeper, wants: &[Want], now: SystemTime) {
    for w in keeper.reconcile(wants, now).await {
        if let Err(e) = keeper.issue(&w, now).await {
            eprintln!("issuance failed (the keeper backs off and counts it): {e}");
        }
    }
}

fn leaf_on_disk(cert_dir: &Path) -> CertificateDer<'static> {
    let pem = std::fs::read(cert_dir.join(format!("{HOST}.crt"))).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("PEM");
    der.into_owned()
}

/// The leaf the edge serves for HOST to a client verifying against `root`.
async fn served(edge: SocketAddr, root: &Path) -> CertificateDer<'static> {
    let tls = tls_connect(edge, HOST, client_config(root))
        .await
        .expect("the edge's certificate verifies against pebble's root");
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Waits (bounded) until the edge serves `want` (its watcher reloads within milliseconds;
/// until then the handshake is refused or verifies another certificate).
async fn serves(edge: SocketAddr, root: &Path, want: &CertificateDer<'static>) {
    for _ in 0..100 {
        if let Ok(tls) = tls_connect(edge, HOST, client_config(root)).await {
            if &tls.get_ref().1.peer_certificates().unwrap()[0] == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the edge never served the new certificate");
}

fn serial_hex(der: &CertificateDer<'_>) -> String {
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(der.as_ref())
    );
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = p.parse_x509().unwrap();
    cert.raw_serial_as_string().replace(':', "")
}

fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_renews_survives_an_outage_and_revokes() {
    let Some(rig) = Rig::start(Challenge::TlsAlpn01).await else {
        return;
    };
    // The keeper's warnings (why an issuance failed) in the test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (d, cert_dir, edge) = (rig.dir.path(), rig.cert_dir.clone(), rig.edge);
    let acme_cfg = rig.acme_config(Challenge::TlsAlpn01);
    let metrics = CertMetrics::new().unwrap();
    let db = d.join("control.db");
    let store = Arc::new(Store::open(&db).unwrap());
    let account_key = certs::acme::account_key(&acme_cfg.directory);
    // An account file of an older version is not there: nothing to take over.
    let legacy = d.join("acme-account.json");
    // The CA is not up yet when the control plane starts: that does not stop it.
    let keeper = certs::keeper(
        &SourceConfig::Acme(acme_cfg),
        certs::SinkConfig::Dir,
        &cert_dir,
        "kanmon.test",
        store.clone(),
        &legacy,
        metrics.clone(),
    )
    .await
    .expect("the keeper starts while the CA is down");
    assert_eq!(store.meta(&account_key).unwrap(), None);
    let mut pebble = rig.start_pebble().await;

    let live = [Want {
        instance: "alpha".into(),
        hostname: HOST.into(),
        live: true,
    }];
    // Create → a pebble certificate for exactly HOST, served by the edge.
    let t0 = SystemTime::now();
    pass(&keeper, &live, t0).await;
    assert_eq!(
        metrics.failures("alpha"),
        0,
        "issuance failed: {}",
        rig.pebble_log()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The account key is in the store (its database file 0600), in no file of its own.
    let stored = store
        .meta(&account_key)
        .unwrap()
        .expect("account in the store");
    assert!(stored.contains("key_pkcs8"), "credentials stored");
    assert_eq!(mode(&db), 0o600, "account key at rest");
    assert!(!legacy.exists());
    // Every file written into cert_dir that holds a private key is owner-only.
    for entry in std::fs::read_dir(&cert_dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "key") {
            assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        }
    }
    assert_eq!(mode(&cert_dir.join(format!("{HOST}.key"))), 0o600);
    let root = rig.root().await;
    let first = leaf_on_disk(&cert_dir);
    serves(edge, &root, &first).await;
    // With no challenge pending, a client offering acme-tls/1 is refused, though HOST's real
    // certificate would verify for it.
    let mut validator = (*client_config(&root)).clone();
    validator.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    assert!(tls_connect(edge, HOST, std::sync::Arc::new(validator))
        .await
        .is_err());
    assert!(
        std::fs::read_dir(&cert_dir)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains("tls-alpn-01")),
        "challenge files removed after validation"
    );
    let info = kanmon_proxy::devcerts::CertInfo::from_pem(
        &std::fs::read_to_string(cert_dir.join(format!("{HOST}.crt"))).unwrap(),
    )
    .unwrap();
    assert_eq!(info.dns_names, [HOST]);
    let expiry = metrics.expiry("alpha").expect("expiry series");
    let not_after = info
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    assert_eq!(expiry, not_after.as_secs() as i64);

    // A live WebSocket through the edge...
    let tls = tls_connect(edge, HOST, client_config(&root)).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("wss://{HOST}/ws"), tls)
        .await
        .expect("WebSocket through the edge");
    ws.send(Message::text("before")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    assert!(matches!(echo, Ok(Some(Ok(_)))), "echo before renewal");

    // ...stays up while renewal (due at two thirds of the validity) replaces the certificate.
    let due = t0 + Duration::from_secs(VALIDITY * 2 / 3 + 5);
    pass(&keeper, &live, due).await;
    let second = leaf_on_disk(&cert_dir);
    assert_ne!(second, first, "renewed");
    serves(edge, &root, &second).await;
    ws.send(Message::text("after")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    assert!(
        matches!(echo, Ok(Some(Ok(_)))),
        "the WebSocket survived renewal"
    );

    // The CA goes away during the next renewal: the current certificate stays and is served,
    // the failure is counted, the expiry is still exported.
    drop(pebble);
    let later = due + Duration::from_secs(VALIDITY * 2 / 3 + 5);
    pass(&keeper, &live, later).await;
    assert_eq!(metrics.failures("alpha"), 1);
    assert_eq!(leaf_on_disk(&cert_dir), second);
    assert!(metrics.expiry("alpha").is_some());
    assert_eq!(served(edge, &root).await, second);

    // The CA is back (same account: pebble forgets accounts on restart, so a new keeper
    // registers again) and the deployment is deleted: its certificate is revoked and removed.
    pebble = rig.start_pebble().await;
    let acme_cfg = rig.acme_config(Challenge::TlsAlpn01);
    let fresh = Arc::new(Store::open(&d.join("control-2.db")).unwrap());
    let keeper = certs::keeper(
        &SourceConfig::Acme(acme_cfg.clone()),
        certs::SinkConfig::Dir,
        &cert_dir,
        "kanmon.test",
        fresh.clone(),
        &legacy,
        metrics.clone(),
    )
    .await
    .expect("ACME account registered again");
    pass(&keeper, &live, later).await;
    let third = leaf_on_disk(&cert_dir);
    assert_ne!(third, second, "renewed once the CA is back");
    let third_pem = std::fs::read_to_string(cert_dir.join(format!("{HOST}.crt"))).unwrap();
    let deleted = [Want {
        live: false,
        ..live[0].clone()
    }];
    pass(&keeper, &deleted, later).await;
    assert!(!cert_dir.join(format!("{HOST}.crt")).exists());
    assert!(!cert_dir.join(format!("{HOST}.key")).exists());
    assert_eq!(metrics.expiry("alpha"), None);
    let status = https(&rig.pebble_ca)
        .get(format!(
            "https://{}/cert-status-by-serial/{}",
            rig.mgmt,
            serial_hex(&third)
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("Revoked"), "pebble says: {status}");
    // A retry of a revocation whose answer was lost finds it revoked already: that is done.
    use certs::CertSource;
    let sink: Arc<dyn certs::CertSink> = Arc::new(certs::DirSink::new(cert_dir.clone()));
    let again = certs::acme::AcmeSource::new(acme_cfg, fresh, &legacy, sink);
    again
        .revoke(&third_pem)
        .await
        .expect("alreadyRevoked counts as revoked");
    drop(ws);
    drop(pebble);
}

/// The status line of a plain-HTTP `GET path` with `Host: host` to `addr`, and the body.
async fn plain_get(addr: SocketAddr, host: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("the plain listener answers")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_validates_http_01_on_the_edges_plain_listener() {
    let Some(rig) = Rig::start(Challenge::Http01).await else {
        return;
    };
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let http = rig.http.expect("a plain listener");
    let _pebble = rig.start_pebble().await;
    let metrics = CertMetrics::new().unwrap();
    let store = Arc::new(Store::in_memory().unwrap());
    let keeper = certs::keeper(
        &SourceConfig::Acme(rig.acme_config(Challenge::Http01)),
        certs::SinkConfig::Dir,
        &rig.cert_dir,
        "kanmon.test",
        store,
        &rig.dir.path().join("acme-account.json"),
        metrics.clone(),
    )
    .await
    .expect("keeper");
    // Nothing pending: the plain listener answers nothing but 404, for any path.
    for path in ["/", "/ws", "/.well-known/acme-challenge/abc"] {
        let (status, _) = plain_get(http, HOST, path).await;
        assert!(status.contains(" 404 "), "{path}: {status}");
    }
    let live = [Want {
        instance: "alpha".into(),
        hostname: HOST.into(),
        live: true,
    }];
    pass(&keeper, &live, SystemTime::now()).await;
    assert_eq!(
        metrics.failures("alpha"),
        0,
        "issuance over http-01 failed: {}",
        rig.pebble_log()
    );
    let root = rig.root().await;
    let leaf = leaf_on_disk(&rig.cert_dir);
    serves(rig.edge, &root, &leaf).await;
    let left: Vec<_> = std::fs::read_dir(&rig.cert_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("http-01") || n.contains("tls-alpn-01"))
        .collect();
    assert!(left.is_empty(), "challenge files left: {left:?}");
    // A key authorization put by hand is served only for its own host and token.
    let file = rig.cert_dir.join(format!("{HOST}.http-01"));
    std::fs::write(&file, "tok-1.thumb").unwrap();
    let mut answered = None;
    for _ in 0..100 {
        let (status, body) = plain_get(http, HOST, "/.well-known/acme-challenge/tok-1").await;
        if status.contains(" 200 ") {
            answered = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered.as_deref(), Some("tok-1.thumb"));
    let other = "beta.us-east1.kanmon.test";
    let (status, _) = plain_get(http, other, "/.well-known/acme-challenge/tok-1").await;
    assert!(status.contains(" 404 "), "another host: {status}");
    let (status, _) = plain_get(http, HOST, "/.well-known/acme-challenge/tok-2").await;
    assert!(status.contains(" 404 "), "another token: {status}");
    std::fs::remove_file(&file).unwrap();
}

/// The Kubernetes path with a real ACME server: the keeper answers TLS-ALPN-01 through a
/// challenge Secret in the edge's namespace (the API fixture), pebble validates against the
/// edge, which serves that Secret for `acme-tls/1` only, and the issued certificate lands in
/// a `kubernetes.io/tls` Secret the edge then serves; the challenge Secret is gone after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_validates_through_a_challenge_secret_and_the_edge_serves_the_issued_secret() {
    let api = kanmon_testkit::k8s::ApiFixture::start().await;
    let edge_ns = "kanmon-system";
    api.put(
        kanmon_testkit::k8s::Kind::Namespace,
        "",
        edge_ns,
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": edge_ns}}),
    );
    let kubeconfig = api.kubeconfig();
    let Some(rig) = Rig::start_with(Challenge::TlsAlpn01, true, Some((&kubeconfig, edge_ns))).await
    else {
        return;
    };
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let _pebble = rig.start_pebble().await;
    let metrics = CertMetrics::new().unwrap();
    let client = kanmon_control::k8s::connect(Some(&kubeconfig))
        .await
        .unwrap();
    let keeper = certs::keeper(
        &SourceConfig::Acme(rig.acme_config(Challenge::TlsAlpn01)),
        certs::SinkConfig::Secrets {
            client,
            namespace: edge_ns.into(),
        },
        &rig.cert_dir,
        "kanmon.test",
        Arc::new(Store::in_memory().unwrap()),
        &rig.dir.path().join("acme-account.json"),
        metrics.clone(),
    )
    .await
    .expect("keeper");
    let live = [Want {
        instance: "alpha".into(),
        hostname: HOST.into(),
        live: true,
    }];
    pass(&keeper, &live, SystemTime::now()).await;
    assert_eq!(
        metrics.failures("alpha"),
        0,
        "issuance through Secrets failed: {}",
        rig.pebble_log()
    );
    let secret = api
        .get(
            kanmon_testkit::k8s::Kind::Secret,
            edge_ns,
            &format!("kanmon-cert.{HOST}"),
        )
        .expect("the certificate Secret");
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["tls.crt"].as_str().unwrap())
        .unwrap();
    let leaf = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    let root = rig.root().await;
    serves(rig.edge, &root, &leaf).await;
    // The challenge was applied as its own Secret and is gone; nothing went to the directory.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("APPLY") && r.contains(&format!("kanmon-acme.{HOST}"))),
        "{requests:?}"
    );
    assert!(api
        .get(
            kanmon_testkit::k8s::Kind::Secret,
            edge_ns,
            &format!("kanmon-acme.{HOST}")
        )
        .is_none());
    let left: Vec<_> = std::fs::read_dir(&rig.cert_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".crt") || n.ends_with(".key"))
        .collect();
    assert!(left.is_empty(), "files in cert_dir: {left:?}");
}
