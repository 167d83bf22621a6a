//! Certificates from a real ACME server: Debian's `pebble` (with `pebble-challtestsrv` as its
//! DNS, answering 127.0.0.1 for every name) on loopback, validating TLS-ALPN-01 against the
//! edge itself (`tlsPort` is the edge's TLS port; `PEBBLE_VA_ALWAYS_VALID` is not set).
//!
//! One deployment's life: its certificate is issued and served (verified against pebble's
//! root), renewed at two thirds of a short validity while a WebSocket stays open, kept through
//! a CA outage (with the failure counted and the expiry still shown), and revoked on delete.
//! Skipped, saying so, where pebble is not installed (scripts/setup.sh installs it).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::{SinkExt, StreamExt};
use kanmon_control::{
    certs::{self, acme::AcmeConfig, SourceConfig, Want},
    metrics::certs::CertMetrics,
    store::Store,
};
use kanmon_tests::{client_config, free_port, node_program, tls_connect, workspace_bin};
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "alpha.us-east1.kanmon.test";
/// Pebble's certificate validity (seconds): renewal is due after 60.
const VALIDITY: u64 = 90;

/// Stops a child process by its PID when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

fn spawn(cmd: &mut Command) -> Proc {
    Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("process starts"),
    )
}

/// Waits (bounded) until something accepts TCP connections on `addr`.
async fn listening(addr: SocketAddr, what: &str) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never listened on {addr}");
}

/// A test CA and a certificate for pebble's own HTTPS endpoints on 127.0.0.1.
fn pebble_tls(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("pebble.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("pebble-ca.crt"), ca_cert.pem()).unwrap();
    dir.join("pebble-ca.crt")
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

fn https(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pebble_issues_renews_survives_an_outage_and_revokes() {
    if Command::new("pebble").arg("-version").output().is_err() {
        eprintln!("SKIPPED: pebble is not installed (scripts/setup.sh test installs it)");
        return;
    }
    // The keeper's warnings (why an issuance failed) in the test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cert_dir = d.join("certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let pebble_ca = pebble_tls(d);
    let (acme, mgmt, dns, chall_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let (edge, admin, node, grpc) = (free_port(), free_port(), free_port(), free_port());

    // The game node and the edge (file discovery), routing HOST to the node.
    let _node = spawn(
        Command::new(node_program())
            .args(["node", "--quiet", "--listen", &node.to_string()])
            .args(["--grpc-listen", &grpc.to_string()]),
    );
    let nodes = d.join("nodes.toml");
    std::fs::write(
        &nodes,
        format!(
            "[[deployment]]\ninstance = \"alpha\"\nzone = \"us-east1\"\nnodes = [{{ id = \"alpha-0\", \
             addr = \"{node}\", state = \"ready\" }}]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[listen]\ntls = \"{edge}\"\nadmin = \"{admin}\"\n[tls]\ncert_dir = \"{}\"\n\
             [discovery]\nkind = \"file\"\npath = \"{}\"\n[shutdown]\nupgrade_sock = \"{}\"\n",
            cert_dir.display(),
            nodes.display(),
            d.join("upgrade.sock").display()
        ),
    )
    .unwrap();
    let _proxy = spawn(
        Command::new(workspace_bin("kanmon-proxy"))
            .arg("--config")
            .arg(d.join("proxy.toml")),
    );

    // pebble's DNS: every name is 127.0.0.1, so the validator connects to the edge.
    let _dns = spawn(Command::new("pebble-challtestsrv").args([
        "-dns01",
        &dns.to_string(),
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-management",
        &chall_mgmt.to_string(),
        "-defaultIPv4",
        "127.0.0.1",
        "-defaultIPv6",
        "",
    ]));
    let config = serde_json::json!({ "pebble": {
        "listenAddress": acme.to_string(),
        "managementListenAddress": mgmt.to_string(),
        "certificate": d.join("pebble.crt"),
        "privateKey": d.join("pebble.key"),
        "httpPort": free_port().port(),
        "tlsPort": edge.port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": VALIDITY,
    }});
    std::fs::write(d.join("pebble.json"), config.to_string()).unwrap();
    let log = d.join("pebble.log");
    let start_pebble = || {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        Proc(
            Command::new("pebble")
                .arg("-config")
                .arg(d.join("pebble.json"))
                .args(["-dnsserver", &dns.to_string(), "-strict=false"])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("pebble starts"),
        )
    };
    let pebble_log = || std::fs::read_to_string(&log).unwrap_or_default();
    listening(chall_mgmt, "pebble-challtestsrv").await;
    listening(dns, "pebble-challtestsrv's DNS").await;
    listening(edge, "the edge").await;
    listening(node, "the node").await;

    let mut acme_cfg = AcmeConfig::new(&format!("https://{acme}/dir"));
    acme_cfg.contact = Some("ops@kanmon.test".into());
    acme_cfg.ca_root = Some(pebble_ca.clone());
    acme_cfg.challenge_settle = Duration::from_millis(500);
    acme_cfg.order_timeout = Duration::from_secs(60);
    let metrics = CertMetrics::new().unwrap();
    let db = d.join("control.db");
    let store = Arc::new(Store::open(&db).unwrap());
    let account_key = certs::acme::account_key(&acme_cfg.directory);
    // An account file of an older version is not there: nothing to take over.
    let legacy = d.join("acme-account.json");
    // The CA is not up yet when the control plane starts: that does not stop it.
    let keeper = certs::keeper(
        &SourceConfig::Acme(acme_cfg),
        &cert_dir,
        "kanmon.test",
        store.clone(),
        &legacy,
        metrics.clone(),
    )
    .await
    .expect("the keeper starts while the CA is down");
    assert_eq!(store.meta(&account_key).unwrap(), None);
    let mut pebble = start_pebble();
    listening(acme, "pebble").await;
    listening(mgmt, "pebble's management").await;

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
        pebble_log()
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
    let root = d.join("pebble-root.crt");
    let root_pem = https(&pebble_ca)
        .get(format!("https://{mgmt}/roots/0"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(&root, root_pem).unwrap();
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
    pebble = start_pebble();
    listening(acme, "pebble").await;
    listening(mgmt, "pebble's management").await;
    let mut acme_cfg = AcmeConfig::new(&format!("https://{acme}/dir"));
    acme_cfg.ca_root = Some(pebble_ca.clone());
    acme_cfg.challenge_settle = Duration::from_millis(500);
    let fresh = Arc::new(Store::open(&d.join("control-2.db")).unwrap());
    let keeper = certs::keeper(
        &SourceConfig::Acme(acme_cfg),
        &cert_dir,
        "kanmon.test",
        fresh,
        &legacy,
        metrics.clone(),
    )
    .await
    .expect("ACME account registered again");
    pass(&keeper, &live, later).await;
    let third = leaf_on_disk(&cert_dir);
    assert_ne!(third, second, "renewed once the CA is back");
    let deleted = [Want {
        live: false,
        ..live[0].clone()
    }];
    pass(&keeper, &deleted, later).await;
    assert!(!cert_dir.join(format!("{HOST}.crt")).exists());
    assert!(!cert_dir.join(format!("{HOST}.key")).exists());
    assert_eq!(metrics.expiry("alpha"), None);
    let status = https(&pebble_ca)
        .get(format!(
            "https://{mgmt}/cert-status-by-serial/{}",
            serial_hex(&third)
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("Revoked"), "pebble says: {status}");
    drop(ws);
    drop(pebble);
}
