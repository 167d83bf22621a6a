//! `kanmon serve` over TLS, checked with real TLS clients: the CLI and a rustls client trust
//! the CA they are given, a client without it and a plain-HTTP client get nothing.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
};

use kanmon_control::api::{check_plain_http, tls::client_config};
use kanmon_proxy::devcerts::LocalCa;

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|_| self.0.wait()) {
            eprintln!("stopping kanmon serve: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_tls_that_the_cli_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let ca = LocalCa::open_or_create(&certs, "kanmon.test").unwrap();
    let cert = ca.issue(&certs, "localhost").unwrap();
    let key = certs.join("localhost.key");
    let db = dir.path().join("k.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(&db)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Child(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = (0..10)
        .find_map(|_| {
            let line = lines.next()?.ok()?;
            line.strip_prefix("listening on ")?.parse().ok()
        })
        .expect("server printed its address");
    let token_file = dir.path().join("k.db.admin-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let url = format!("https://localhost:{}/v1/whoami", addr.port());

    // A rustls client trusting the CA: the API answers.
    let trusting = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(Some(&ca.cert_path)).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let resp = trusting.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Without the CA (system roots only) the handshake fails: nothing is sent.
    let system = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(None).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let err = system
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    // The CLI verifies with --ca, and refuses without it.
    let cli = |ca: Option<&std::path::Path>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kanmon"));
        c.arg("--server")
            .arg(format!("https://localhost:{}", addr.port()))
            .arg("--token-file")
            .arg(&token_file)
            .env_remove("KANMON_CA")
            .env_remove("KANMON_TOKEN");
        if let Some(ca) = ca {
            c.arg("--ca").arg(ca);
        }
        c.arg("whoami").output().unwrap()
    };
    let ok = cli(Some(&ca.cert_path));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("admin"));
    let refused = cli(None);
    assert!(
        !refused.status.success(),
        "an unverified server was trusted"
    );
    drop(child);
}

#[test]
fn plain_http_is_refused_off_loopback_unless_allowed() {
    let lan: SocketAddr = "10.1.2.3:7070".parse().unwrap();
    let err = check_plain_http(lan, false).unwrap_err().to_string();
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-http"),
        "{err}"
    );
    assert!(check_plain_http(lan, true).is_ok());
    for local in ["127.0.0.1:7070", "[::1]:7070"] {
        assert!(check_plain_http(local.parse().unwrap(), false).is_ok());
    }
}

/// `kanmon up --api-tls`: the API's certificate comes from the local CA the proxy's
/// certificates come from, so clients trust `certs/ca.crt` for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kanmon_up_serves_its_api_with_the_local_ca() {
    use kanmon_control::{
        driver::NullPublisher,
        up::{ControlPlane, UpConfig},
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = UpConfig::new(dir.path(), std::path::Path::new("unused-node-program"));
    cfg.api_listen = "127.0.0.1:0".parse().unwrap();
    cfg.metrics_listen = "127.0.0.1:0".parse().unwrap();
    cfg.demo = None;
    cfg.api_tls = true;
    let cp = ControlPlane::start(cfg, None, std::sync::Arc::new(NullPublisher))
        .await
        .unwrap();
    let ca = dir.path().join("certs/ca.crt");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(Some(&ca)).unwrap())
        .resolve("localhost", cp.api_addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/whoami", cp.api_addr.port());
    let resp = client
        .get(&url)
        .bearer_auth(&cp.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let key = dir.path().join("certs/api/localhost.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    cp.shutdown().await;
}
