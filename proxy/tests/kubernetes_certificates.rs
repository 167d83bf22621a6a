//! Certificates from `kubernetes.io/tls` Secrets: a real `kanmon-proxy` with
//! `kind = "kubernetes"` against the API fixture, served over real TLS to a rustls client that
//! trusts the test CA. A Secret created, updated and deleted is picked up each time; a
//! challenge Secret is served for `acme-tls/1` only; a 410 relists without dropping anything;
//! a malformed update or a hostname outside the base domain is refused, counted, and keeps the
//! previous certificate; Secrets of other namespaces are never read.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use kanmon_proxy::devcerts::PemPair;
use kanmon_testkit::k8s::*;
use serde_json::{json, Value};

/// The proxy's own namespace: the fixture kubeconfig's context namespace.
const OWN: &str = "default";
const GAMMA: &str = "gamma.us-east1.kanmon.test";
const CERT_ERRORS: &str = "kanmon_tls_certificate_errors_total";

/// Polls `check` (bounded: 400 × 25 ms) until it holds.
macro_rules! wait_until {
    ($proxy:expr, $what:expr, $check:expr) => {{
        let mut ok = false;
        for _ in 0..400 {
            if $check {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            ok,
            "timed out waiting for {}; log:\n{}",
            $what,
            $proxy.log()
        );
    }};
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret_json(ns: &str, purpose: &str, host: &str, crt: &str, key: &str) -> Value {
    let prefix = if purpose == "serving" {
        "kanmon-cert."
    } else {
        "kanmon-acme."
    };
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{prefix}{host}"), "namespace": ns,
            "labels": {"kanmon.dev/certificate": purpose},
            "annotations": {"kanmon.dev/hostname": host}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(crt), "tls.key": b64(key)}})
}

fn put(api: &ApiFixture, ns: &str, purpose: &str, host: &str, pair: &PemPair) -> String {
    let s = secret_json(ns, purpose, host, &pair.cert_pem, &pair.key_pem);
    let name = s["metadata"]["name"].as_str().unwrap().to_string();
    api.put(Kind::Secret, ns, &name, s);
    name
}

fn leaf_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The leaf the proxy serves for `sni` offering `alpn`, or `None` when the handshake fails.
async fn served(proxy: &TestProxy, sni: &str, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    let tls = proxy.tls(sni, alpn).await.ok()?;
    let certs = tls.get_ref().1.peer_certificates()?;
    Some(certs[0].to_vec())
}

async fn start() -> (ApiFixture, TestProxy) {
    let api = ApiFixture::start_with(LOOPBACK).await;
    let proxy = TestProxy::start(Opts {
        discovery: Some(api.discovery_toml("30s")),
        ..Opts::default()
    })
    .await;
    (api, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_created_updated_and_deleted_is_served_each_time() {
    let (api, proxy) = start().await;
    assert_eq!(served(&proxy, GAMMA, &[b"http/1.1"]).await, None);
    let first = proxy.ca.issue_pair(GAMMA).unwrap();
    let name = put(&api, OWN, "serving", GAMMA, &first);
    let want = leaf_der(&first.cert_pem);
    wait_until!(proxy, "the Secret served", {
        served(&proxy, GAMMA, &[b"http/1.1"]).await.as_ref() == Some(&want)
    });

    let renewed = proxy.ca.issue_pair(GAMMA).unwrap();
    put(&api, OWN, "serving", GAMMA, &renewed);
    let want = leaf_der(&renewed.cert_pem);
    wait_until!(proxy, "the update served", {
        served(&proxy, GAMMA, &[b"http/1.1"]).await.as_ref() == Some(&want)
    });
    assert_eq!(proxy.metric(CERT_ERRORS).await, 0.0);

    assert!(api.delete_now(Kind::Secret, OWN, &name));
    wait_until!(proxy, "the deletion seen", {
        served(&proxy, GAMMA, &[b"http/1.1"]).await.is_none()
    });
    // The cert_dir certificates were never touched.
    assert!(served(&proxy, ALPHA, &[b"http/1.1"]).await.is_some());
    // Only the proxy's own namespace, selected by the label.
    let requests = api.requests();
    let secrets: Vec<_> = requests.iter().filter(|r| r.contains("secrets")).collect();
    assert!(!secrets.is_empty(), "{requests:?}");
    assert!(
        secrets.iter().all(
            |r| r.contains(&format!("/api/v1/namespaces/{OWN}/secrets?"))
                && r.contains("labelSelector=kanmon.dev%2Fcertificate")
        ),
        "{secrets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_secret_is_served_for_acme_tls_only() {
    let (api, proxy) = start().await;
    let challenge = proxy.ca.issue_pair(GAMMA).unwrap();
    put(&api, OWN, "acme-challenge", GAMMA, &challenge);
    let want = leaf_der(&challenge.cert_pem);
    wait_until!(proxy, "the challenge served", {
        served(&proxy, GAMMA, &[b"acme-tls/1"]).await.as_ref() == Some(&want)
    });
    // Never to a client that did not ask for it: gamma has no serving certificate.
    assert_eq!(served(&proxy, GAMMA, &[b"http/1.1"]).await, None);
    assert_eq!(served(&proxy, GAMMA, &[]).await, None);
    // And the serving certificate of another host is not replaced by it.
    assert_ne!(served(&proxy, ALPHA, &[b"http/1.1"]).await, Some(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_relists_without_dropping_certificates() {
    let (api, proxy) = start().await;
    let pair = proxy.ca.issue_pair(GAMMA).unwrap();
    put(&api, OWN, "serving", GAMMA, &pair);
    let want = leaf_der(&pair.cert_pem);
    wait_until!(proxy, "the Secret served", {
        served(&proxy, GAMMA, &[b"http/1.1"]).await.as_ref() == Some(&want)
    });
    let secret_lists = |api: &ApiFixture| {
        api.requests()
            .iter()
            .filter(|r| r.starts_with("LIST") && r.contains("/secrets?"))
            .count()
    };
    let before = secret_lists(&api);
    api.expire();
    wait_until!(proxy, "a relist", secret_lists(&api) > before);
    assert_eq!(served(&proxy, GAMMA, &[b"http/1.1"]).await, Some(want));
    // The relisted watch carries on.
    let renewed = proxy.ca.issue_pair(GAMMA).unwrap();
    put(&api, OWN, "serving", GAMMA, &renewed);
    let want = leaf_der(&renewed.cert_pem);
    wait_until!(proxy, "the update after the relist", {
        served(&proxy, GAMMA, &[b"http/1.1"]).await.as_ref() == Some(&want)
    });
    assert_eq!(proxy.admin("/readyz").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secrets_are_refused_counted_and_keep_the_previous_certificate() {
    let (api, proxy) = start().await;
    let pair = proxy.ca.issue_pair(GAMMA).unwrap();
    let name = put(&api, OWN, "serving", GAMMA, &pair);
    let want = leaf_der(&pair.cert_pem);
    wait_until!(proxy, "the Secret served", {
        served(&proxy, GAMMA, &[b"http/1.1"]).await.as_ref() == Some(&want)
    });
    // A malformed update: the previous certificate stays.
    let broken = secret_json(OWN, "serving", GAMMA, "not a certificate", &pair.key_pem);
    api.put(Kind::Secret, OWN, &name, broken);
    wait_until!(
        proxy,
        "the error counted",
        proxy.metric(CERT_ERRORS).await == 1.0
    );
    assert_eq!(
        served(&proxy, GAMMA, &[b"http/1.1"]).await,
        Some(want.clone())
    );

    // A hostname outside the base domain is refused (its CA is another: ours is
    // name-constrained), and nothing is added to what is loaded.
    let loaded = proxy.metric("kanmon_tls_certificates").await;
    let other = tempfile::tempdir().unwrap();
    let other_ca =
        kanmon_proxy::devcerts::LocalCa::open_or_create(other.path(), "example.com").unwrap();
    let foreign = other_ca.issue_pair("gamma.example.com").unwrap();
    put(&api, OWN, "serving", "gamma.example.com", &foreign);
    wait_until!(
        proxy,
        "the refusal counted",
        proxy.metric(CERT_ERRORS).await == 2.0
    );
    assert_eq!(proxy.metric("kanmon_tls_certificates").await, loaded);

    // A valid Secret in a tenant's namespace is never read.
    let beta = "delta.us-east1.kanmon.test";
    let tenant = proxy.ca.issue_pair(beta).unwrap();
    put(&api, "kanmon-delta", "serving", beta, &tenant);
    // A later change in the own namespace shows the watch has moved past it.
    let renewed = proxy.ca.issue_pair(GAMMA).unwrap();
    put(&api, OWN, "serving", GAMMA, &renewed);
    let want = leaf_der(&renewed.cert_pem);
    wait_until!(proxy, "the fix served", {
        served(&proxy, GAMMA, &[b"http/1.1"]).await.as_ref() == Some(&want)
    });
    assert_eq!(served(&proxy, beta, &[b"http/1.1"]).await, None);
    // The log says why, and never carries key material.
    let log = proxy.log();
    assert!(log.contains("outside kanmon.test"), "{log}");
    assert!(!log.contains("PRIVATE KEY"));
    assert_eq!(proxy.admin("/readyz").await.unwrap().0, 200);
}
