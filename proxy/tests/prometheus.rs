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
// The launcher the platform test (tests/tests/prometheus_platform.rs) uses too.
#[path = "../../tests/src/prometheus.rs"]
#[allow(dead_code, unreachable_pub)]
mod prometheus_server;

use common::*;
use kanmon_bench::node::spawn_node;
use prometheus_server::{dashboard_exprs, dashboards_dir, Prometheus};

const GAMMA: &str = "gamma.eu-west1.kanmon.test";

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

    let dashboards = dashboards_dir();
    let prom = Prometheus::start(
        proxy.dir.path(),
        &[("kanmon-proxy", proxy.admin_addr)],
        &[&dashboards.join("alerts.yml")],
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
    let labels = prom.label_names().await;
    assert!(labels.iter().any(|l| l == "deployment"), "{labels:?}");
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
    let exprs = dashboard_exprs(
        &dashboards,
        &[("deployment", "beta"), ("zone", "us-east1"), ("node", ".*")],
    );
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
    let rules = prom.evaluated_rules().await;
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    assert!(rules.len() >= 6, "{rules:?}");
}
