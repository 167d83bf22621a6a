//! A real Prometheus server (Debian's `prometheus`, installed by `scripts/setup.sh test`) for
//! tests: started on a free loopback port with a data directory of its own, scraping the
//! given targets every second with the given rule files loaded, asked through its HTTP API,
//! and stopped by its PID when dropped. Every wait is bounded.
//!
//! Shared by the proxy's `tests/prometheus.rs` (which includes this file by path, as the
//! proxy cannot depend on this crate) and the platform test here; so it uses only std,
//! tokio, reqwest and serde_json.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a wait for Prometheus to see something may take.
const WAIT: Duration = Duration::from_secs(60);

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
    log: PathBuf,
}

/// A free loopback port (bound and released: Prometheus binds it by number).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address")
}

impl Prometheus {
    /// Starts Prometheus in `dir` scraping each `(job, target)` every second, with `rules`
    /// loaded.
    pub fn start(dir: &Path, targets: &[(&str, SocketAddr)], rules: &[&Path]) -> Self {
        let port = free_port();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n",
        );
        for r in rules {
            config.push_str(&format!("  - \"{}\"\n", r.display()));
        }
        config.push_str("scrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ));
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("prometheus log"))
            .spawn()
            .expect("prometheus is installed by scripts/setup.sh test");
        Self {
            child,
            url: format!("http://{port}"),
            http: reqwest::Client::new(),
            log,
        }
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path?query` of the HTTP API, as JSON (`None`: no answer yet).
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    /// An instant query: `Err` with Prometheus' error text when it fails to evaluate.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self
            .get("/api/v1/query", &[("query", expr)])
            .await
            .ok_or_else(|| format!("no answer for {expr}"))?;
        if v["status"] != "success" {
            return Err(format!("{expr}: {}", v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The single value of `expr` (0 when it returns nothing).
    pub async fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr).await.unwrap();
        result
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits (bounded) until the first value of `expr` satisfies `want`.
    pub async fn wait_for(&self, what: &str, expr: &str, want: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.query(expr).await {
                let v = r
                    .first()
                    .and_then(|r| r["value"][1].as_str())
                    .and_then(|v| v.parse().ok());
                if v.is_some_and(&want) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw {what} ({expr}); its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every label name Prometheus holds.
    pub async fn label_names(&self) -> Vec<String> {
        let labels = self.get("/api/v1/labels", &[]).await.expect("labels");
        labels["data"]
            .as_array()
            .expect("label list")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// Waits (bounded) until every loaded rule has been evaluated at least once; returns
    /// them (each with its `health` and `lastError`).
    pub async fn evaluated_rules(&self) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let rules = self.get("/api/v1/rules", &[]).await.unwrap_or_default();
            let rules: Vec<Value> = rules["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
            if !rules.is_empty() && evaluated {
                return rules;
            }
            assert!(
                Instant::now() < deadline,
                "rules never evaluated: {rules:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Stopped by its own PID, whatever the test did.
        if let Err(e) = self.child.kill() {
            eprintln!("stopping prometheus: {e}");
        }
        if let Err(e) = self.child.wait() {
            eprintln!("reaping prometheus: {e}");
        }
    }
}

/// The shipped dashboards and alert rules (`configs/dashboards`).
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dashboards")
}

/// Every PromQL expression of the Grafana dashboards in `dir`, as `(file / panel title,
/// expression)`, with each template variable `$name` of `vars` replaced by its value.
pub fn dashboard_exprs(dir: &Path, vars: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dashboards directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("dashboard");
        let doc: Value = serde_json::from_str(&text).expect("dashboard JSON");
        for panel in doc["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let mut expr = expr.to_string();
                // Longest names first: `$node` must not eat the start of `$nodes`.
                let mut vars = vars.to_vec();
                vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
                for (name, value) in vars {
                    expr = expr.replace(&format!("${name}"), value);
                }
                let title = format!(
                    "{} / {}",
                    path.file_name().expect("file name").to_string_lossy(),
                    panel["title"].as_str().unwrap_or("?")
                );
                out.push((title, expr));
            }
        }
    }
    out
}
