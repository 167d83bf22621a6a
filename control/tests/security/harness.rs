#![allow(dead_code, unreachable_pub)]

//! An in-process control plane on loopback for the security tests: the API's own router over a
//! runtime with the loopback driver, so a test can read the refusal counter and swap in a
//! database exporter.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use kanmon_control::{
    api::{self, App},
    bootstrap::bootstrap_admin,
    domain::Timings,
    driver::{LoopbackDriver, NullPublisher, ProcessDriver},
    runtime::{DatabaseExporter, Runtime, Settings},
    store::Store,
};
use serde_json::{json, Value};

/// Log lines of the whole test binary (one global subscriber).
pub static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn capture_logs() {
    // Several tests share the binary: only the first installs the subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(|| LogWriter)
        .try_init();
}

pub struct Plane {
    pub app: App,
    pub url: String,
    pub admin: String,
    pub db: PathBuf,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Plane {
    /// A plane whose export links last ten minutes.
    pub async fn start(dir: &Path, exporter: Option<Arc<dyn DatabaseExporter>>) -> Self {
        Self::start_with_ttl(dir, exporter, Duration::from_secs(600)).await
    }

    /// A plane whose export links last `export_ttl`.
    pub async fn start_with_ttl(
        dir: &Path,
        exporter: Option<Arc<dyn DatabaseExporter>>,
        export_ttl: Duration,
    ) -> Self {
        capture_logs();
        let db = dir.join("kanmon.db");
        let store = Arc::new(Store::open(&db).unwrap());
        let token_file = dir.join("admin-token");
        let admin = bootstrap_admin(&store, &token_file).unwrap().unwrap();
        let settings = Settings {
            timings: Timings {
                grace: Duration::from_secs(2),
                health_timeout: Duration::from_secs(10),
                ..Timings::default()
            },
            health_poll: Duration::from_millis(20),
            monitor_interval: Duration::from_millis(50),
            export_ttl,
            ..Settings::default()
        };
        let rt = Runtime::start(
            store,
            settings,
            Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
            Arc::new(NullPublisher),
        )
        .unwrap();
        if let Some(e) = exporter {
            rt.set_exporter(e);
        }
        let app = App::new(rt);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = api::router_for(app.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            app,
            url,
            admin,
            db,
            http: reqwest::Client::new(),
            server,
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// Polls operation `id` until `pred` holds (bounded); returns it.
    pub async fn wait_op(&self, id: u64, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            let (status, op) = self.get(&format!("/v1/operations/{id}"), &self.admin).await;
            assert_eq!(status, 200, "{op}");
            if pred(&op) {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("operation {id} never reached the expected state");
    }

    pub async fn finished(&self, id: u64) -> Value {
        self.wait_op(id, |o| {
            o["status"] == "completed" || o["status"] == "failed"
        })
        .await
    }

    /// Creates production deployment `alpha` (org acme, title rpg) and waits for its deploy.
    pub async fn create_alpha(&self) {
        let body = json!({
            "instance": "alpha", "zone": "us-east1", "type": "production", "version": "3.35.0",
            "org": "acme", "title": "rpg", "node_cpus": 1,
        });
        let (status, v) = self.post("/v1/deployments", &self.admin, body).await;
        assert_eq!(status, 201, "{v}");
        let op = self.finished(v["operation"]["id"].as_u64().unwrap()).await;
        assert_eq!(op["status"], "completed", "{op}");
    }

    /// A user with `perms` on deployment alpha; returns its token.
    pub async fn user(&self, name: &str, perms: &[&str]) -> String {
        let (status, v) = self
            .post("/v1/users", &self.admin, json!({ "name": name }))
            .await;
        assert_eq!(status, 201, "{v}");
        let grant = json!({
            "user": name, "scope": { "level": "deployment", "instance": "alpha" },
            "permissions": perms,
        });
        let (status, g) = self.post("/v1/grants", &self.admin, grant).await;
        assert_eq!(status, 201, "{g}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn audit(&self) -> Vec<Value> {
        let (_, all) = self.get("/v1/audit?limit=1000", &self.admin).await;
        all["audit"].as_array().cloned().unwrap_or_default()
    }
}
