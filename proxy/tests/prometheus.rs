//! A real Prometheus server (Debian's `prometheus`, installed by `scripts/setup.sh test`)
//! scrapes a real proxy on loopback, with the shipped alert rules loaded, and the test asks
//! its HTTP API what an operator would: the series carry `deployment`, nothing arrived renamed
//! `exported_*`, a draining-only deployment's 503s are under that deployment, and every
//! expression of the dashboards and alert rules evaluates without error (returning data where
//! the traffic says it must).
//!
//! Prometheus is started on a loopback port with its own data directory, stopped by its PID,
//! and every wait is bounded.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use kanmon_bench::node::spawn_node;
use serde_json::Value;

const GAMMA: &str = "gamma.eu-west1.kanmon.test";

struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
    log: std::path::PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second with `rules` loaded.
    fn start(dir: &Path, target: std::net::SocketAddr, rules: &Path) -> Self {
        let port = free_port();
        let config = format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - "{rules}"
scrape_configs:
  - job_name: kanmon-proxy
    static_configs:
      - targets: ["{target}"]
"#,
            rules = rules.display()
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus is installed by scripts/setup.sh test");
        Self {
            child,
            url: format!("http://{port}"),
            http: reqwest::Client::new(),
            log,
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
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
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
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
    async fn value(&self, expr: &str) -> f64 {
        let result = self.query(expr).await.unwrap();
        result
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    async fn wait_for(&self, what: &str, expr: &str, want: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
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
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Stopped by its own PID, whatever the test did.
        let _gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// Every PromQL expression of the shipped Grafana dashboards, with the template variables
/// set to the deployment `beta` (the one with refusals) in `us-east1`.
fn dashboard_exprs(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in doc["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                let expr = expr
                    .replace("$deployment", "beta")
                    .replace("$zone", "us-east1")
                    .replace("$node", ".*");
                let title = format!(
                    "{} / {}",
                    path.file_name().unwrap().to_string_lossy(),
                    panel["title"].as_str().unwrap_or("?")
                );
                out.push((title, expr));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_metrics_as_operators_expect() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let n1 = spawn_node("beta-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")])
            + &deployment("beta", &[("beta-0", n1.addr(), None, "draining")]),
        ..Opts::default()
    })
    .await;
    // 200s for alpha, 503s for beta (its only node drains), a 404 for a name that is no
    // deployment.
    for _ in 0..5 {
        assert_eq!(proxy.get(ALPHA, ALPHA, "/").await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(proxy.get(BETA, BETA, "/").await.0, 503);
    }
    assert_eq!(proxy.get(GAMMA, GAMMA, "/").await.0, 404);

    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dashboards");
    let prom = Prometheus::start(
        proxy.dir.path(),
        proxy.admin_addr,
        &dashboards.join("alerts.yml"),
    );
    prom.wait_for(
        "alpha's 200s",
        r#"kanmon_http_requests_total{deployment="alpha",status="200"}"#,
        |v| v == 5.0,
    )
    .await;
    // Two scrapes at least, so that rate() over the dashboards' windows has data.
    prom.wait_for(
        "a second scrape",
        r#"count_over_time(up{job="kanmon-proxy"}[1m])"#,
        |v| v >= 3.0,
    )
    .await;

    // The target's own labels are Prometheus': `instance` is the scraped address.
    let up = prom.query(r#"up{job="kanmon-proxy"}"#).await.unwrap();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(
        up[0]["metric"]["instance"].as_str(),
        Some(proxy.admin_addr.to_string().as_str())
    );
    // No kanmon label collided with a target label (it would arrive as `exported_*`).
    let labels = prom.get("/api/v1/labels", &[]).await.unwrap();
    let labels: Vec<&str> = labels["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(labels.contains(&"deployment"), "{labels:?}");
    assert!(
        !labels.iter().any(|l| l.starts_with("exported_")),
        "{labels:?}"
    );

    // The refusals of beta are under beta; "unknown" holds only the name that is no deployment.
    assert_eq!(
        prom.value(
            r#"sum(kanmon_http_requests_total{deployment="beta",zone="us-east1",status="503"})"#
        )
        .await,
        3.0
    );
    assert_eq!(
        prom.value(r#"sum(kanmon_http_requests_total{deployment="unknown"})"#)
            .await,
        1.0
    );
    assert_eq!(
        prom.value(r#"sum(kanmon_http_requests_total{deployment="unknown",status="404"})"#)
            .await,
        1.0
    );
    // The per-deployment node gauges group by deployment, as the alerts do.
    let ready = prom
        .query(r#"max by (deployment, zone) (kanmon_nodes{state="ready"})"#)
        .await
        .unwrap();
    assert_eq!(ready.len(), 2, "{ready:?}");

    // Every dashboard expression evaluates; the ones this traffic feeds return data.
    let exprs = dashboard_exprs(&dashboards);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let must_have_data = [
        "Requests by status",
        "5xx ratio by deployment",
        "Nodes by state",
        "Refused requests by reason",
        "Discovery",
    ];
    for (title, expr) in &exprs {
        let result = prom
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        if must_have_data
            .iter()
            .any(|t| title.ends_with(&format!("/ {t}")))
        {
            assert!(!result.is_empty(), "{title}: {expr} returned nothing");
        }
    }

    // The alert rules loaded and evaluate cleanly.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rules = prom.get("/api/v1/rules", &[]).await.unwrap();
        let rules: Vec<Value> = rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        if !rules.is_empty() && evaluated {
            for r in &rules {
                assert_eq!(r["health"], "ok", "{r}");
            }
            assert!(rules.len() >= 6, "{rules:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules never evaluated: {rules:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
