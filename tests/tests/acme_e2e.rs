//! Certificates from a real ACME server through the real binaries and the operations queue:
//! pebble (rig.rs: with pebble-challtestsrv as its DNS, validating TLS-ALPN-01 against the
//! edge) behind a relay that can cut it off, `kanmon serve --certs acme` writing the
//! `cert_dir` of a separate `kanmon-proxy` (file discovery on the nodes file it writes).
//!
//! One deployment's life through the API: its `certificate` operation is queued on create and
//! completes with the certificate's description; the edge serves a pebble leaf for exactly
//! its hostname (verified against pebble's root, from its management API); a renewal at two
//! thirds of pebble's short validity replaces it while a WebSocket stays open; a CA outage
//! fails the next renewal, keeps the current certificate served and raises
//! `kanmon_certificate_failures_total` on the control plane's /metrics; deleting the
//! deployment revokes the certificate within the delete operation (pebble says Revoked) and
//! removes its files; `acme-tls/1` with no pending challenge is refused. Skipped, saying so,
//! where pebble is not installed (scripts/setup.sh test installs it).

#[path = "acme_e2e/relay.rs"]
mod relay;
#[path = "acme_pebble/rig.rs"]
#[allow(dead_code)]
mod rig;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use kanmon_control::{certs::acme::Challenge, cli::Client};
use kanmon_tests::{client_config, serve, server_key, tls_connect, workspace_bin, ws_with_key};
use relay::Relay;
use rig::{https, Rig};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "alpha.us-east1.kanmon.test";
/// Pebble's certificate validity (seconds): renewal is due after 20, and a certificate kept
/// through an outage at that point still verifies for 10 more.
const VALIDITY: u64 = 30;

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

/// Waits (bounded) until the edge serves `want` for HOST, verified against `root`.
async fn serves(edge: SocketAddr, root: &Path, want: &CertificateDer<'static>) {
    for _ in 0..100 {
        if let Ok(tls) = tls_connect(edge, HOST, client_config(root)).await {
            if &tls.get_ref().1.peer_certificates().unwrap()[0] == want {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the edge never served the expected certificate");
}

/// The DNS names and the serial (hex, as pebble's management API takes it) of `der`.
fn names_and_serial(der: &CertificateDer<'_>) -> (Vec<String>, String) {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("SAN");
    let names = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    (names, cert.raw_serial_as_string().replace(':', ""))
}

/// alpha's certificate operations, oldest first.
async fn certificate_ops(api: &Client) -> Vec<Value> {
    let list = api
        .get("/v1/deployments/alpha/operations")
        .await
        .expect("operations");
    let mut ops: Vec<Value> = list["operations"]
        .as_array()
        .expect("operations list")
        .iter()
        .filter(|o| o["kind"] == "certificate")
        .cloned()
        .collect();
    ops.reverse();
    ops
}

/// Waits (bounded by `limit`) until alpha has `n` finished certificate operations; returns
/// them, oldest first.
async fn finished_certificate_ops(api: &Client, n: usize, limit: Duration) -> Vec<Value> {
    let rounds = limit.as_millis() / 200 + 1;
    for _ in 0..rounds {
        let ops = certificate_ops(api).await;
        let done: Vec<Value> = ops
            .into_iter()
            .filter(|o| matches!(o["status"].as_str(), Some("completed" | "failed")))
            .collect();
        if done.len() >= n {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("alpha has fewer than {n} finished certificate operations after {limit:?}");
}

/// `kanmon_certificate_failures_total{deployment="alpha"}` on the control plane's /metrics.
async fn failures(metrics: SocketAddr) -> f64 {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .expect("control plane metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("kanmon_certificate_failures_total{deployment=\"alpha\"} ")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Sends a message over `ws` and waits (bounded) for the node's answer.
async fn echo(ws: &mut kanmon_tests::Ws, text: &str) -> bool {
    if ws.send(Message::text(text)).await.is_err() {
        return false;
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    matches!(answer, Ok(Some(Ok(_))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_through_the_binaries_gets_renews_keeps_and_revokes_its_certificate() {
    let Some(rig) = Rig::start_with(Challenge::TlsAlpn01, false, None).await else {
        return;
    };
    let (d, cert_dir, edge) = (rig.dir.path(), rig.cert_dir.clone(), rig.edge);
    let _pebble = rig.start_pebble().await;
    let relay = Relay::start(rig.acme).await;
    let directory = format!("https://{}/dir", relay.addr);
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let (node_program, logs) = (workspace_bin("kanmon-bench"), d.join("logs"));
    let args = [
        "--driver".into(),
        "local".into(),
        "--grace".into(),
        "1s".into(),
        "--node-program".into(),
        path(&node_program),
        "--log-dir".into(),
        path(&logs),
        "--nodes-file".into(),
        path(&d.join("nodes.toml")),
        "--cert-dir".into(),
        path(&cert_dir),
        "--certs".into(),
        "acme".into(),
        "--acme-directory".into(),
        directory,
        "--acme-ca-root".into(),
        path(&rig.pebble_ca),
        "--acme-contact".into(),
        "ops@kanmon.test".into(),
        "--acme-challenge-settle".into(),
        "500ms".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (serve, api, metrics) = serve::start_serve_with_metrics(d, &args);
    let log = || {
        format!(
            "--- kanmon serve:\n{}\n--- pebble:\n{}",
            std::fs::read_to_string(d.join("serve.log")).unwrap_or_default(),
            rig.pebble_log()
        )
    };

    // Create → its certificate operation, queued by the creating user, completes with the
    // certificate's description.
    let created = api
        .post(
            "/v1/deployments",
            &json!({ "instance": "alpha", "zone": "us-east1", "type": "development",
                     "version": "3.37.0", "node_cpus": 1 }),
        )
        .await
        .expect("create");
    let deploy = created["operation"]["id"].as_u64().expect("deploy op");
    let ops = finished_certificate_ops(&api, 1, Duration::from_secs(60)).await;
    let first_op = &ops[0];
    assert_eq!(first_op["status"], "completed", "{first_op}\n{}", log());
    assert_eq!(first_op["requested_by"], "admin", "{first_op}");
    let result = &first_op["result"];
    assert_eq!(result["hostname"], HOST, "{result}");
    assert_eq!(result["renewal"], false, "{result}");
    assert!(result["console"]["hostname"].is_string(), "{result}");
    let op = serve::wait_op(&api, deploy, Duration::from_secs(60)).await;
    assert_eq!(op["status"], "completed", "{op}");

    // The edge serves pebble's leaf for exactly HOST.
    let root = rig.root().await;
    let first = leaf_on_disk(&cert_dir);
    serves(edge, &root, &first).await;
    let (names, _) = names_and_serial(&first);
    assert_eq!(names, [HOST]);
    // With no challenge pending, a client offering acme-tls/1 is refused, though HOST's
    // certificate would verify for it.
    let mut validator = (*client_config(&root)).clone();
    validator.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    assert!(tls_connect(edge, HOST, Arc::new(validator)).await.is_err());

    // A live WebSocket through the edge to the deployment's node...
    let key = server_key(&api, "alpha").await;
    let mut ws = None;
    for _ in 0..100 {
        let tls = tls_connect(edge, HOST, client_config(&root)).await.unwrap();
        if let Ok(w) = ws_with_key(tls, HOST, &key).await {
            ws = Some(w);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = ws.expect("a WebSocket through the edge");
    assert!(echo(&mut ws, "before").await, "echo before renewal");

    // ...stays up while the renewal (queued by `kanmon` at two thirds of the validity)
    // replaces the certificate.
    let ops = finished_certificate_ops(&api, 2, Duration::from_secs(2 * VALIDITY)).await;
    let renewal = &ops[1];
    assert_eq!(renewal["status"], "completed", "{renewal}\n{}", log());
    assert_eq!(renewal["requested_by"], "kanmon", "{renewal}");
    assert_eq!(renewal["result"]["renewal"], true, "{renewal}");
    let second = leaf_on_disk(&cert_dir);
    assert_ne!(second, first, "renewed");
    serves(edge, &root, &second).await;
    assert!(
        echo(&mut ws, "after").await,
        "the WebSocket survived renewal"
    );

    // The CA goes away: the next renewal fails, the current certificate stays served, and
    // the failure shows on the control plane's /metrics.
    relay.cut();
    assert_eq!(failures(metrics).await, 0.0);
    let ops = finished_certificate_ops(&api, 3, Duration::from_secs(2 * VALIDITY)).await;
    let outage = &ops[2];
    assert_eq!(outage["status"], "failed", "{outage}");
    assert!(
        outage["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("ACME: ")),
        "{outage}"
    );
    assert!(failures(metrics).await >= 1.0, "failure counted");
    assert_eq!(leaf_on_disk(&cert_dir), second);
    assert_eq!(
        served(edge, &root).await,
        second,
        "the old one stays served"
    );

    // The CA is back (the same pebble) and the deployment is deleted: the delete operation
    // revokes the certificate, says so in its result, and the files go.
    relay.restore();
    let delete = api
        .call(reqwest::Method::DELETE, "/v1/deployments/alpha", None)
        .await
        .expect("delete");
    let done = serve::wait_op(
        &api,
        delete["id"].as_u64().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    let revoked = done["result"]["certificates"].as_array().expect("outcomes");
    assert_eq!(revoked.len(), 2, "{done}");
    assert!(revoked.iter().all(|c| c["status"] == "revoked"), "{done}");
    assert_eq!(revoked[0]["hostname"], HOST, "{done}");
    assert!(!cert_dir.join(format!("{HOST}.crt")).exists());
    assert!(!cert_dir.join(format!("{HOST}.key")).exists());
    let (_, serial) = names_and_serial(&second);
    let status = https(&rig.pebble_ca)
        .get(format!(
            "https://{}/cert-status-by-serial/{serial}",
            rig.mgmt
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("Revoked"), "pebble says: {status}");
    let audit = api.get("/v1/deployments/alpha/audit").await.expect("audit");
    assert!(
        audit.to_string().contains("certificates.revoke"),
        "revocation audited: {audit}"
    );
    drop(ws);
    drop(serve);
}
