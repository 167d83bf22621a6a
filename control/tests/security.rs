//! The control plane's tenant-safety rules through its HTTP API: refused authentications are
//! counted, not audited; secret config cannot be touched without `secrets`; database exports
//! run in the operations queue, are downloadable only with `export`, audited and deleted when
//! their link expires; failing dumps leak no secret; state files are owner-only.

#[path = "security/harness.rs"]
mod harness;

use std::{
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    time::Duration,
};

use harness::{logs, Plane};
use kanmon_control::runtime::DatabaseExporter;
use reqwest::Method;
use serde_json::{json, Value};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_authentications_are_counted_not_audited() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plane::start(dir.path(), None).await;
    p.create_alpha().await;
    let before = p.audit().await.len();
    let forged = format!("kmn_{}", "ab".repeat(32));
    for token in [
        None,
        Some("kmn_short"),
        Some(forged.as_str()),
        Some("garbage"),
    ] {
        for path in ["/v1/deployments", "/v1/deployments/evil-name/keys"] {
            let (status, _) = p.call(Method::GET, path, token, None).await;
            assert_eq!(status, 401, "{path} with {token:?}");
        }
    }
    // Even a body that would not decode gets 401 first.
    let (status, _) = p
        .call(
            Method::POST,
            "/v1/deployments/alpha/operations",
            Some(&forged),
            Some(json!({ "kind": "nonsense" })),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(p.app.auth_failures.total(), 9);
    let audit = p.audit().await;
    // Only the admin's own audit reads were added, nothing anonymous or about "evil-name".
    assert!(audit.iter().all(|e| e["who"] != "anonymous"), "{audit:?}");
    assert!(!Value::Array(audit.clone())
        .to_string()
        .contains("evil-name"));
    assert_eq!(audit.len(), before + 1, "one audit.read by the admin");
    assert!(logs().contains("refused an unauthenticated API request"));
    assert!(!logs().contains(&forged), "tokens are never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_from_a_known_caller_is_an_audited_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plane::start(dir.path(), None).await;
    p.create_alpha().await;
    let bob = p.user("bob", &["view", "edit"]).await;
    // Wrong type for a secret value: the decoder's message may quote it back to bob, but the
    // audit log (readable with `view`) must not.
    let (status, body) = p
        .post(
            "/v1/deployments/alpha/operations",
            &bob,
            json!({ "kind": "set-config", "secret_config": ["hunter2-secret"] }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let audit = p.audit().await;
    let entry = audit
        .iter()
        .find(|e| e["who"] == "bob" && e["action"] == "operations.submit")
        .unwrap_or_else(|| panic!("no audit record for bob's bad request: {audit:?}"));
    assert_eq!(entry["outcome"], "error");
    assert_eq!(entry["instance"], "alpha");
    assert_eq!(
        entry["detail"],
        "request body does not match the expected fields"
    );
    assert!(!Value::Array(audit).to_string().contains("hunter2-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_user_cannot_change_or_clear_secret_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plane::start(dir.path(), None).await;
    p.create_alpha().await;
    let ops = "/v1/deployments/alpha/operations";
    let cfg = json!({ "kind": "set-config", "config": { "mode": "pvp" },
        "secret_config": { "db_password": "hunter2", "api_key": "k-123" } });
    let (status, op) = p.post(ops, &p.admin, cfg).await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        p.finished(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );

    let eddie = p.user("eddie", &["view", "edit"]).await;
    for attempt in [
        json!({ "kind": "set-config", "secret_config": { "db_password": "mine" } }),
        json!({ "kind": "set-config", "remove_secret_config": ["db_password"] }),
        json!({ "kind": "set-config", "config": { "mode": "x" }, "remove_secret_config": ["api_key"] }),
    ] {
        let (status, body) = p.post(ops, &eddie, attempt.clone()).await;
        assert_eq!(
            (status, body["missing_permission"].as_str()),
            (403, Some("secrets")),
            "{attempt}: {body}"
        );
    }
    // What an edit user may do: change plain config. Secret config survives it (before, an
    // empty secret_config replaced, i.e. wiped, every secret).
    let (status, op) = p
        .post(
            ops,
            &eddie,
            json!({ "kind": "set-config", "config": { "mode": "pve" } }),
        )
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        p.finished(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (_, dep) = p.get("/v1/deployments/alpha", &p.admin).await;
    assert_eq!(dep["spec"]["config"]["mode"], "pve");
    assert_eq!(dep["spec"]["secret_config"]["db_password"], "hunter2");
    assert_eq!(dep["spec"]["secret_config"]["api_key"], "k-123");
    // The admin (secrets) removes one key explicitly; the other stays.
    let (status, op) = p
        .post(
            ops,
            &p.admin,
            json!({ "kind": "set-config", "remove_secret_config": ["api_key"] }),
        )
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        p.finished(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (_, dep) = p.get("/v1/deployments/alpha", &p.admin).await;
    assert_eq!(
        dep["spec"]["secret_config"],
        json!({ "db_password": "hunter2" })
    );
}

/// An exporter that holds each dump until the test releases it, and records how many ran at
/// once.
struct GatedExporter {
    dir: PathBuf,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
    active: AtomicUsize,
    most: AtomicUsize,
}

impl DatabaseExporter for GatedExporter {
    fn export(&self, instance: &str) -> Result<PathBuf, String> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let _ = self.entered.lock().unwrap().send(());
        let released = self
            .release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(60));
        self.active.fetch_sub(1, Ordering::SeqCst);
        released.map_err(|_| "never released".to_string())?;
        let n = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
        let path = self.dir.join(format!("{instance}-{n}.sql"));
        kanmon_control::private::write_file(&path, b"-- PostgreSQL database dump\nSELECT 1;\n")
            .map_err(|e| e.to_string())?;
        Ok(path)
    }
}

fn gated(dir: PathBuf) -> (Arc<GatedExporter>, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    std::fs::create_dir_all(&dir).unwrap();
    let e = Arc::new(GatedExporter {
        dir,
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
        active: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    (e, entered_rx, release_tx)
}

async fn entered(rx: &Arc<Mutex<mpsc::Receiver<()>>>) {
    let rx = rx.clone();
    tokio::task::spawn_blocking(move || rx.lock().unwrap().recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the exporter was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_run_in_the_queue_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (exporter, entered_rx, release) = gated(dir.path().join("exports"));
    let entered_rx = Arc::new(Mutex::new(entered_rx));
    let p = Plane::start(dir.path(), Some(exporter.clone())).await;
    p.create_alpha().await;
    let ops = "/v1/deployments/alpha/operations";
    // Submitting returns at once: the dump is not taken by the HTTP handler.
    let (status, a) = p.post(ops, &p.admin, json!({ "kind": "export" })).await;
    assert_eq!(status, 202, "{a}");
    let a = a["id"].as_u64().unwrap();
    entered(&entered_rx).await;
    let (status, b) = p.post(ops, &p.admin, json!({ "kind": "export" })).await;
    assert_eq!(status, 202, "{b}");
    let b = b["id"].as_u64().unwrap();
    let (_, shown_a) = p.get(&format!("/v1/operations/{a}"), &p.admin).await;
    let (_, shown_b) = p.get(&format!("/v1/operations/{b}"), &p.admin).await;
    assert_eq!(shown_a["status"], "in_progress", "{shown_a}");
    assert_eq!(shown_b["status"], "pending", "{shown_b}");
    release.send(()).unwrap();
    entered(&entered_rx).await;
    release.send(()).unwrap();
    let (a, b) = (p.finished(a).await, p.finished(b).await);
    assert_eq!(
        (&a["status"], &b["status"]),
        (&json!("completed"), &json!("completed"))
    );
    assert_eq!(
        exporter.most.load(Ordering::SeqCst),
        1,
        "never two dumps at once"
    );
    assert!(
        b["started_at"].as_u64() >= a["finished_at"].as_u64(),
        "{a} {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_downloads_need_export_are_audited_streamed_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (exporter, _entered, release) = gated(dir.path().join("exports"));
    release.send(()).unwrap();
    // Long enough for the checks below on a loaded machine, short enough to wait out.
    let ttl = Duration::from_secs(5);
    let p = Plane::start_with_ttl(dir.path(), Some(exporter), ttl).await;
    p.create_alpha().await;
    let viewer = p.user("vera", &["view"]).await;
    let exporter_user = p.user("xena", &["view", "export"]).await;
    let (status, op) = p
        .post(
            "/v1/deployments/alpha/operations",
            &exporter_user,
            json!({ "kind": "export" }),
        )
        .await;
    assert_eq!(status, 202, "{op}");
    let id = op["id"].as_u64().unwrap();
    let done = p.finished(id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let link = done["result"]["database"]["download"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(link, format!("/v1/operations/{id}/download"));

    // `view` sees the export but not its link, in every listing.
    let (_, shown) = p.get(&format!("/v1/operations/{id}"), &viewer).await;
    assert!(
        shown["result"]["database"]["bytes"].as_u64().is_some(),
        "{shown}"
    );
    assert!(
        shown["result"]["database"].get("download").is_none(),
        "{shown}"
    );
    let (_, listed) = p.get("/v1/deployments/alpha/operations", &viewer).await;
    assert!(!listed.to_string().contains("/download"), "{listed}");
    let (_, listed) = p
        .get("/v1/deployments/alpha/operations", &exporter_user)
        .await;
    assert!(listed.to_string().contains(&link), "{listed}");

    // Downloading needs a token with export.
    let (status, _) = p.call(Method::GET, &link, None, None).await;
    assert_eq!(status, 401);
    let (status, body) = p.get(&link, &viewer).await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("export"))
    );
    let resp = p
        .http
        .get(format!("{}{link}", p.url))
        .bearer_auth(&exporter_user)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/sql");
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("PostgreSQL database dump"));
    let audit = p.audit().await;
    let find = |who: &str, outcome: &str| {
        audit.iter().any(|e| {
            e["who"] == who
                && e["action"] == "exports.download"
                && e["outcome"] == outcome
                && e["instance"] == "alpha"
        })
    };
    assert!(
        find("xena", "allowed") && find("vera", "denied"),
        "{audit:?}"
    );

    // When the link expires the file is deleted and the link answers 404.
    let exports = dir.path().join("exports");
    let mut gone = false;
    for _ in 0..1500 {
        if std::fs::read_dir(&exports).unwrap().count() == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the dump file outlived its link");
    let (status, _) = p.get(&link, &exporter_user).await;
    assert_eq!(status, 404);
}

/// An exporter that fails the way a `pg_dump` run formatted with its environment would, and
/// echoes the deployment's secrets back for good measure.
struct LeakyFailure {
    secrets: Mutex<Vec<String>>,
}

impl DatabaseExporter for LeakyFailure {
    fn export(&self, _instance: &str) -> Result<PathBuf, String> {
        let s = self.secrets.lock().unwrap().join(" ");
        Err(format!(
            "\"pg_dump\" PGPASSWORD=\"pg-pass-0451\" failed: connection to postgres://kanmon:pg-pass-0451@127.0.0.1:5999/postgres refused; context {s}"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dump_leaks_no_secret_into_answers_logs_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let leaky = Arc::new(LeakyFailure {
        secrets: Mutex::new(Vec::new()),
    });
    let p = Plane::start(dir.path(), Some(leaky.clone())).await;
    p.create_alpha().await;
    let ops = "/v1/deployments/alpha/operations";
    let cfg = json!({ "kind": "set-config", "secret_config": { "db_password": "hunter2-xyz" } });
    let (_, op) = p.post(ops, &p.admin, cfg).await;
    p.finished(op["id"].as_u64().unwrap()).await;
    let (_, keys) = p.get("/v1/deployments/alpha/keys", &p.admin).await;
    let mut secrets = vec![
        "pg-pass-0451".to_string(),
        "hunter2-xyz".to_string(),
        keys["server_key"].as_str().unwrap().to_string(),
        keys["runtime_key"].as_str().unwrap().to_string(),
    ];
    *leaky.secrets.lock().unwrap() = secrets[1..].to_vec();

    let viewer = p.user("vera", &["view"]).await;
    let (_, op) = p.post(ops, &p.admin, json!({ "kind": "export" })).await;
    let id = op["id"].as_u64().unwrap();
    let failed = p.finished(id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("database dump failed"));

    let mut seen = vec![failed.to_string()];
    for path in [
        format!("/v1/operations/{id}"),
        "/v1/deployments/alpha/operations".to_string(),
        "/v1/deployments/alpha/audit".to_string(),
    ] {
        seen.push(p.get(&path, &viewer).await.1.to_string());
    }
    seen.push(p.get("/v1/audit?limit=1000", &p.admin).await.1.to_string());
    seen.push(logs());
    // The admin token is a secret too; it must not have been logged.
    secrets.push(p.admin.clone());
    drop(p);
    let mut stored = Vec::new();
    for suffix in ["", "-wal"] {
        let mut name = dir.path().join("kanmon.db").into_os_string();
        name.push(suffix);
        if let Ok(bytes) = std::fs::read(PathBuf::from(name)) {
            stored.extend(bytes);
        }
    }
    let stored = String::from_utf8_lossy(&stored).into_owned();
    assert!(
        stored.contains("database dump failed"),
        "the error was stored"
    );
    for secret in &secrets[..1] {
        assert!(
            !stored.contains(secret.as_str()),
            "{secret} in the database file"
        );
    }
    for text in &seen {
        for secret in &secrets {
            // Secrets the admin set are in the API only where the admin reads them, never in
            // what a viewer sees, the audit log or the logs.
            if text.contains(secret.as_str()) {
                panic!("{secret} leaked into: {text}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_are_owner_only_from_creation() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plane::start(dir.path(), None).await;
    p.create_alpha().await;
    assert_eq!(mode(&p.db), 0o600);
    let mut wal = p.db.clone().into_os_string();
    wal.push("-wal");
    assert_eq!(mode(&PathBuf::from(wal)), 0o600, "SQLite copies the mode");
    assert_eq!(mode(&dir.path().join("admin-token")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_disabled_users_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plane::start(dir.path(), None).await;
    let (status, body) = p
        .post(
            "/v1/users",
            &p.admin,
            json!({ "name": "dana", "expires_in": "soon" }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, dana) = p
        .post("/v1/users", &p.admin, json!({ "name": "dana" }))
        .await;
    assert_eq!(status, 201, "{dana}");
    let default_expiry = dana["expires_at"]
        .as_u64()
        .expect("tokens expire by default");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(default_expiry > now_ms + 80 * 24 * 3600 * 1000, "{dana}");
    let dana = dana["token"].as_str().unwrap().to_string();
    assert_eq!(p.get("/v1/whoami", &dana).await.0, 200);

    let (status, _) = p.post("/v1/users/dana/disable", &p.admin, json!({})).await;
    assert_eq!(status, 204);
    let refused = p.app.auth_failures.total();
    assert_eq!(p.get("/v1/whoami", &dana).await.0, 401);
    assert_eq!(p.app.auth_failures.total(), refused + 1);
    let (status, _) = p.post("/v1/users/dana/enable", &p.admin, json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(p.get("/v1/whoami", &dana).await.0, 200);
    let (status, _) = p.post("/v1/users/admin/disable", &p.admin, json!({})).await;
    assert_eq!(status, 400, "an admin cannot lock itself out");
    let (status, body) = p.post("/v1/users/dana/disable", &dana, json!({})).await;
    assert_eq!(
        (status, body["missing_permission"].as_str()),
        (403, Some("admin"))
    );

    // A short-lived token stops working once its time is up (waited for, bounded).
    let (status, rotated) = p
        .post("/v1/users/dana/token?expires_in=1s", &p.admin, json!({}))
        .await;
    assert_eq!(status, 200, "{rotated}");
    let short = rotated["token"].as_str().unwrap().to_string();
    let mut expired = false;
    for _ in 0..500 {
        if p.get("/v1/whoami", &short).await.0 == 401 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(expired, "the token still worked long after its expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_downloads_an_export_into_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let (exporter, _entered, release) = gated(dir.path().join("exports"));
    release.send(()).unwrap();
    let p = Plane::start(dir.path(), Some(exporter)).await;
    p.create_alpha().await;
    let out = dir.path().join("dump.sql");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args(["--server", &p.url, "--token-file"])
        .arg(dir.path().join("admin-token"))
        .args(["export", "alpha", "--output"])
        .arg(&out)
        .env_remove("KANMON_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(printed.contains("saved_to"), "{printed}");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("PostgreSQL database dump"));
    assert_eq!(mode(&out), 0o600);
}
