//! Starts real `kanmon serve` processes on loopback port 0 and talks to them over HTTP.

#![allow(dead_code, unreachable_pub)]

pub mod k8s;
pub mod openapi;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

/// A running `kanmon serve`; killed on drop.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// `http://ADDR/metrics` of the control plane's admin listener.
    pub metrics_url: String,
    pub admin: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts the server on `db` with extra flags and waits for its "listening on" line.
    pub fn start(db: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kanmon"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .arg("--db")
            .arg(db)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kanmon serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut addr, mut metrics_url) = (None, None);
        for _ in 0..10 {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(u) = line.strip_prefix("metrics on ") {
                metrics_url = Some(u.to_string());
            }
            if let Some(a) = line.strip_prefix("listening on ") {
                addr = Some(a.to_string());
                break;
            }
        }
        let addr = addr.expect("server printed its address");
        let token_file = format!("{}.admin-token", db.display());
        let admin = std::fs::read_to_string(token_file)
            .expect("admin token file")
            .trim()
            .to_string();
        Self {
            child,
            url: format!("http://{addr}"),
            metrics_url: metrics_url.expect("server printed its metrics address first"),
            admin,
            http: reqwest::Client::new(),
        }
    }

    /// Kills the process abruptly (SIGKILL): no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// Sends a request as `token`; returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body = resp.json().await.unwrap_or(Value::Null);
        if json {
            openapi::doc().check(method.as_str(), path, status, &body);
        }
        (status, body)
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// Polls operation `id` until it is finished (bounded); returns it.
    pub async fn wait_op(&self, id: u64) -> Value {
        for _ in 0..600 {
            let (status, op) = self.get(&format!("/v1/operations/{id}"), &self.admin).await;
            assert_eq!(status, 200, "{op}");
            if op["status"] == "completed" || op["status"] == "failed" {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("operation {id} did not finish");
    }

    /// Polls until `pred` holds for the deployment (bounded); returns it.
    pub async fn wait_deployment(&self, instance: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..600 {
            let (_, d) = self
                .get(&format!("/v1/deployments/{instance}"), &self.admin)
                .await;
            if pred(&d) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("deployment {instance} never reached the expected state");
    }

    /// Creates a deployment as admin and waits for its first deploy.
    pub async fn create(&self, instance: &str, kind: &str, node_cpus: u32) -> Value {
        let body = serde_json::json!({
            "instance": instance, "zone": "us-east1", "type": kind, "version": "3.35.0",
            "org": "acme", "title": "rpg", "node_cpus": node_cpus, "db_cpus": 2,
        });
        let (status, v) = self.post("/v1/deployments", &self.admin, body).await;
        assert_eq!(status, 201, "{v}");
        let op = self.wait_op(v["operation"]["id"].as_u64().unwrap()).await;
        assert_eq!(op["status"], "completed", "{op}");
        v["deployment"].clone()
    }

    /// Creates a user as admin and returns its token.
    pub async fn user(&self, name: &str, grants: &[(Value, &[&str])]) -> String {
        let (status, v) = self
            .post(
                "/v1/users",
                &self.admin,
                serde_json::json!({ "name": name }),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        for (scope, perms) in grants {
            let body = serde_json::json!({ "user": name, "scope": scope, "permissions": perms });
            let (status, g) = self.post("/v1/grants", &self.admin, body).await;
            assert_eq!(status, 201, "{g}");
        }
        v["token"].as_str().unwrap().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already gone after kill(); otherwise stop it now.
        if self.child.try_wait().ok().flatten().is_none() {
            if let Err(e) = self.child.kill().and_then(|_| self.child.wait()) {
                eprintln!("stopping kanmon serve: {e}");
            }
        }
    }
}
