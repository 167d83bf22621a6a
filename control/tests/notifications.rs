//! Notifications when operations end, through a real `kanmon serve`: a webhook receiver in
//! the test (HMAC verified independently, a 500 answered first to see the retry, the delivery
//! log through the API and the CLI), an SMTP sink (Python's aiosmtpd, installed by
//! `scripts/setup.sh`) started on loopback and stopped by PID, permissions, refused targets,
//! and pending deliveries surviving a restart.

mod common;
#[path = "notifications/receivers.rs"]
mod receivers;

use std::{process::Command, time::Duration};

use common::Server;
use receivers::{next, receiver, verify, SmtpSink};
use serde_json::{json, Value};

fn config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("kanmon.toml");
    std::fs::write(
        &path,
        format!(
            "[notifications]\nretry_base = \"300ms\"\nretry_cap = \"1s\"\nattempts = 3\n{extra}"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn kanmon(s: &Server, token_file: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args(args)
        .env("KANMON_SERVER", &s.url)
        .env("KANMON_TOKEN_FILE", token_file)
        .env_remove("KANMON_TOKEN")
        .output()
        .expect("run kanmon");
    assert!(
        out.status.success(),
        "kanmon {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls the delivery log of `sub` until its newest delivery is in `state` (bounded).
async fn wait_delivery(s: &Server, sub: u64, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, v) = s
            .get(&format!("/v1/subscriptions/{sub}/deliveries"), &s.admin)
            .await;
        assert_eq!(status, 200, "{v}");
        if v["deliveries"][0]["state"] == state {
            return v["deliveries"][0].clone();
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("delivery never became {state}: {last}");
}

#[tokio::test]
async fn webhooks_are_signed_retried_after_a_500_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let db = dir.path().join("k.db");
    let s = Server::start(
        &db,
        &[
            "--config",
            &cfg,
            "--notify-allow-loopback",
            "--grace",
            "100ms",
        ],
    );
    let token_file = format!("{}.admin-token", db.display());
    let (url, mut rx) = receiver(1).await;

    // Tenant input that must never become a request.
    let api_port = s.url.rsplit(':').next().unwrap().to_string();
    let metrics = s.metrics_url.clone();
    for bad in [
        "file:///etc/passwd".to_string(),
        "gopher://127.0.0.1/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://127.0.0.1:{api_port}/v1/users"),
        metrics,
    ] {
        let (status, v) = s
            .post(
                "/v1/orgs/acme/subscriptions",
                &s.admin,
                json!({ "webhook": bad }),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let (status, v) = s
        .post(
            "/v1/orgs/acme/subscriptions",
            &s.admin,
            json!({ "webhook": url, "events": ["operation.bogus"] }),
        )
        .await;
    assert_eq!(status, 400, "{v}");

    let (status, sub) = s
        .post(
            "/v1/orgs/acme/subscriptions",
            &s.admin,
            json!({ "webhook": url }),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let secret = sub["secret"]
        .as_str()
        .expect("secret shown to admin")
        .to_string();
    assert_eq!(secret.len(), 64);
    let id = sub["id"].as_u64().unwrap();

    // The first deploy of a new deployment of acme ends: the receiver hears it twice (500, then 200).
    let dep = s.create("alpha", "development", 1).await;
    assert_eq!(dep["instance"], "alpha");
    let first = next(&mut rx).await;
    let second = next(&mut rx).await;
    for r in [&first, &second] {
        verify(&secret, r);
        assert_eq!(r.event, "operation.completed");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["event"], "operation.completed");
        assert_eq!(body["deployment"]["instance"], "alpha");
        assert_eq!(body["operation"]["kind"], "deploy");
        assert_eq!(body["operation"]["status"], "completed");
    }
    assert_eq!(
        first.delivery, second.delivery,
        "a retry is the same delivery"
    );
    assert_eq!(first.body, second.body);

    let d = wait_delivery(&s, id, "delivered").await;
    let tries = d["tries"].as_array().unwrap();
    assert_eq!(tries.len(), 2, "{d}");
    assert_eq!(tries[0]["status"], 500);
    assert!(tries[0]["error"].as_str().unwrap().contains("500"), "{d}");
    assert_eq!(tries[1]["status"], 200);
    assert!(tries[1]["error"].is_null(), "{d}");
    assert!(tries[1]["at"].as_u64() >= tries[0]["at"].as_u64().map(|t| t + 250));

    let out = kanmon(&s, &token_file, &["notify", "deliveries", &id.to_string()]);
    assert!(out.contains("delivered") && out.contains("500"), "{out}");
    let out = kanmon(&s, &token_file, &["notify", "list", "--org", "acme"]);
    assert!(
        out.contains(&url) && out.contains("operation.completed"),
        "{out}"
    );

    // A deployment's editor manages its own subscriptions, never the organization's, and
    // without `secrets` sees neither the signing secret nor the URL's path.
    let bob = s
        .user(
            "bob",
            &[(
                json!({ "level": "deployment", "instance": "alpha" }),
                &["view", "edit"],
            )],
        )
        .await;
    let (status, v) = s
        .post(
            "/v1/orgs/acme/subscriptions",
            &bob,
            json!({ "webhook": url }),
        )
        .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["missing_permission"], "edit");
    let (status, v) = s.get(&format!("/v1/subscriptions/{id}"), &bob).await;
    assert_eq!(status, 404, "{v}");
    let (status, mine) = s
        .post(
            "/v1/deployments/alpha/subscriptions",
            &bob,
            json!({ "webhook": url, "events": ["operation.failed"] }),
        )
        .await;
    assert_eq!(status, 201, "{mine}");
    assert!(mine["secret"].is_null(), "{mine}");
    assert!(!mine.to_string().contains("/hook"), "{mine}");
    let (status, _) = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/subscriptions/{}", mine["id"]),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(status, 204);

    let (_, audit) = s.get("/v1/audit?limit=200", &s.admin).await;
    let actions: Vec<(&str, &str)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("subscriptions.create", "allowed")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("subscriptions.create", "denied")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("subscriptions.delete", "allowed")),
        "{actions:?}"
    );
    assert!(!audit.to_string().contains(&secret));

    // The routes are in the OpenAPI document.
    let (_, doc) = s
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    for (path, method) in [
        ("/v1/orgs/{org}/subscriptions", "post"),
        ("/v1/deployments/{instance}/subscriptions", "get"),
        ("/v1/subscriptions/{id}", "delete"),
        ("/v1/subscriptions/{id}/deliveries", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
}

#[tokio::test]
async fn a_pending_delivery_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    // Every try fails until the control plane is restarted with more tries to give.
    let (url, mut rx) = receiver(usize::MAX).await;
    let cfg = config(dir.path(), "");
    let s = Server::start(
        &db,
        &[
            "--config",
            &cfg,
            "--notify-allow-loopback",
            "--grace",
            "100ms",
        ],
    );
    let (status, sub) = s
        .post(
            "/v1/orgs/acme/subscriptions",
            &s.admin,
            json!({ "webhook": url }),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let id = sub["id"].as_u64().unwrap();
    s.create("alpha", "development", 1).await;
    next(&mut rx).await;
    s.kill();
    // What the killed process sent is behind us; what comes now is the next process's.
    while rx.try_recv().is_ok() {}
    // The same delivery is tried again by the next process.
    let s = Server::start(
        &db,
        &[
            "--config",
            &cfg,
            "--notify-allow-loopback",
            "--grace",
            "100ms",
        ],
    );
    let again = next(&mut rx).await;
    assert_eq!(again.event, "operation.completed");
    let d = wait_delivery(&s, id, "failed").await;
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(d["tries"].as_array().unwrap().len(), 3, "{d}");
}

#[tokio::test]
async fn e_mail_reaches_an_smtp_sink() {
    let sink = SmtpSink::start(&[]);
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n",
        sink.port
    );
    mail_arrives(&sink, &smtp).await;
}

/// STARTTLS through rustls (ring) against a sink that requires it, trusting the
/// configured CA file (a self-signed certificate for 127.0.0.1).
#[tokio::test]
async fn e_mail_goes_over_starttls_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (crt, key) = (dir.path().join("smtp.crt"), dir.path().join("smtp.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let sink = SmtpSink::start(&[
        "--tlscert",
        crt.to_str().unwrap(),
        "--tlskey",
        key.to_str().unwrap(),
    ]);
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"starttls\"\nca_file = {:?}\n",
        sink.port,
        crt.to_str().unwrap()
    );
    mail_arrives(&sink, &smtp).await;
}

/// A deployment's e-mail subscription (made with the CLI) hears a reboot end through `sink`,
/// reached with the `[smtp]` keys `smtp`.
async fn mail_arrives(sink: &SmtpSink, smtp: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!("[smtp]\n{smtp}from = \"Kanmon <kanmon@kanmon.test>\"\n"),
    );
    let db = dir.path().join("k.db");
    let s = Server::start(&db, &["--config", &cfg, "--grace", "100ms"]);
    let token_file = format!("{}.admin-token", db.display());
    s.create("alpha", "development", 1).await;
    let (status, v) = s
        .post(
            "/v1/deployments/alpha/subscriptions",
            &s.admin,
            json!({ "email": "not an address" }),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let out = kanmon(
        &s,
        &token_file,
        &[
            "notify",
            "add",
            "--deployment",
            "alpha",
            "--email",
            "ops@example.com",
            "--event",
            "operation.completed",
        ],
    );
    assert!(out.contains("email ops@example.com"), "{out}");
    let (_, list) = s.get("/v1/deployments/alpha/subscriptions", &s.admin).await;
    let id = list["subscriptions"][0]["id"].as_u64().unwrap();

    let (status, op) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            json!({ "kind": "reboot" }),
        )
        .await;
    assert_eq!(status, 202, "{op}");
    let op = s.wait_op(op["id"].as_u64().unwrap()).await;
    assert_eq!(op["status"], "completed", "{op}");
    let mail = sink.until("Requested by:");
    let subject = format!(
        "Subject: [kanmon] alpha: operation {} (reboot) completed",
        op["id"]
    );
    assert!(mail.contains(&subject), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    let d = wait_delivery(&s, id, "delivered").await;
    assert_eq!(d["tries"][0]["status"], 250, "{d}");
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_up_no_operation() {
    // Accepts connections and never answers: every try waits for the 10 s timeout.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hang.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while conns.len() < 100 {
            match hang.accept().await {
                Ok((c, _)) => conns.push(c),
                Err(_) => break,
            }
        }
        conns
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let db = dir.path().join("k.db");
    let s = Server::start(
        &db,
        &[
            "--config",
            &cfg,
            "--notify-allow-loopback",
            "--grace",
            "100ms",
        ],
    );
    let (status, sub) = s
        .post(
            "/v1/orgs/acme/subscriptions",
            &s.admin,
            json!({ "webhook": format!("http://{addr}/hook") }),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let started = std::time::Instant::now();
    s.create("alpha", "development", 1).await;
    for _ in 0..2 {
        let (status, op) = s
            .post(
                "/v1/deployments/alpha/operations",
                &s.admin,
                json!({ "kind": "reboot" }),
            )
            .await;
        assert_eq!(status, 202, "{op}");
        let op = s.wait_op(op["id"].as_u64().unwrap()).await;
        assert_eq!(op["status"], "completed", "{op}");
    }
    // Three operations ended while the first delivery's try was still hanging.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(9), "operations took {took:?}");
    let (_, log) = s
        .get(
            &format!("/v1/subscriptions/{}/deliveries", sub["id"]),
            &s.admin,
        )
        .await;
    let deliveries = log["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3, "{log}");
    assert!(deliveries.iter().all(|d| d["state"] == "pending"), "{log}");
    held.abort();
}
