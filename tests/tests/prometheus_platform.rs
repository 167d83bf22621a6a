//! A real Prometheus scrapes the whole platform as `kanmon up` runs it: the proxy's admin
//! listener and the control plane's metrics listener, with the shipped alert rules loaded.
//! Traffic gives 200s to the demo deployment, 503s to `beta` (a one-node deployment whose
//! reboot leaves it with no ready node), a 404 to a name that is no deployment, and queries to
//! the demo deployment's PostgreSQL; both deployments are rebooted. The test then asks
//! Prometheus' HTTP API what an operator would: the series carry `deployment`, no label
//! arrived as `exported_*`, the refusals are under their deployment, every expression of every
//! dashboard and alert rule evaluates, and the node, database and control-plane panels show
//! data — with no literal value of a query in any label.
//!
//! Needs Debian's `prometheus` and `postgresql` (scripts/setup.sh test). Prometheus and
//! `kanmon up` are started and stopped by PID, on loopback ports, with bounded waits.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use kanmon_control::{cli::Client, up::postgres::PgTools};
use kanmon_tests::{
    client_config, http_get,
    prometheus::{dashboard_exprs, dashboards_dir, Prometheus},
    server_key, tls_connect,
    up_process::{Output, StateDir, UpOpts, UpProcess, DEMO_HOST},
    ws_with_key,
};
use serde_json::{json, Value};

const BETA_HOST: &str = "beta.us-east1.kanmon.test";
const NO_SUCH_HOST: &str = "nosuch.us-east1.kanmon.test";
/// The probe statement, as pg_stat_statements normalises it (its literal becomes `$1`).
const PROBE_NORMALISED: &str = "SELECT $1::text AS kanmon_probe";
/// A value that must never reach a label.
const SECRET: &str = "hunter2-literal";

/// Panels that must show data after this traffic (title suffixes, per dashboard file): at
/// least one of a panel's expressions returns something.
const MUST_HAVE_DATA: [&str; 16] = [
    "kanmon-deployment.json / Requests by status",
    "kanmon-deployment.json / Nodes by state",
    "kanmon-deployment.json / CPU per node",
    "kanmon-deployment.json / Memory per node",
    "kanmon-deployment.json / Database CPU",
    "kanmon-deployment.json / Database query load",
    "kanmon-deployment.json / Top queries",
    "kanmon-edge.json / Requests by status",
    "kanmon-edge.json / Nodes by state",
    "kanmon-control.json / Operations by kind and outcome",
    "kanmon-control.json / Queue depth",
    "kanmon-control.json / Nodes by recorded state",
    "kanmon-control.json / API requests by route",
    "kanmon-control.json / API requests by status",
    "kanmon-control.json / Node CPU",
    "kanmon-control.json / Node memory",
];

async fn get_through_proxy(up: &UpProcess, host: &str, path: &str) -> u16 {
    let ca = up.state.join("certs").join("ca.crt");
    match tls_connect(up.tls, host, client_config(&ca)).await {
        Ok(s) => http_get(s, host, path)
            .await
            .map_or(0, |(status, _)| status),
        Err(_) => 0,
    }
}

/// Polls `GET /v1/operations/{id}` until it is final (bounded).
async fn wait_op(client: &Client, id: u64, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let op = client
            .get(&format!("/v1/operations/{id}"))
            .await
            .unwrap_or_else(|e| json!({ "error": e.to_string() }));
        if matches!(op["status"].as_str(), Some("completed" | "failed"))
            || Instant::now() >= deadline
        {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs statements in the demo deployment's database with `psql`, as a node would over TCP.
fn run_queries(state: &StateDir, sql: &[&str]) {
    let data = state.data_root().join("demo");
    let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid");
    let port = pid_file
        .lines()
        .nth(3)
        .expect("port line")
        .trim()
        .to_string();
    let password = std::fs::read_to_string(state.path().join("postgres/demo.password"))
        .expect("database password");
    let bin = PgTools::find().expect("PostgreSQL").bin;
    let psql = if bin.as_os_str().is_empty() {
        "psql".into()
    } else {
        bin.join("psql")
    };
    let mut cmd = Command::new(psql);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "kanmon",
        "-d",
        "postgres",
    ])
    .args(["-v", "ON_ERROR_STOP=1", "-q"])
    .env("PGPASSWORD", password.trim());
    for s in sql {
        cmd.args(["-c", s]);
    }
    let out = cmd.output().expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh test");
    let mut stdin = child.stdin.take().expect("promtool stdin");
    stdin.write_all(text.as_bytes()).expect("feed promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_whole_platform() {
    if let Err(e) = PgTools::find() {
        panic!("{e}");
    }
    let started = Instant::now();
    let state = StateDir::new();
    let mut up = UpProcess::start(
        state.path(),
        &UpOpts {
            database: true,
            output: Output::File,
            extra_args: vec!["--database-stats-interval".into(), "1s".into()],
        },
    );
    up.served().await;
    let dashboards = dashboards_dir();
    let prom = Prometheus::start(
        state.private_dir(),
        &[("kanmon-proxy", up.admin), ("kanmon-control", up.metrics)],
        &[&dashboards.join("alerts.yml")],
    );
    let client = Client::new(&format!("http://{}", up.api), up.token());
    let first = wait_op(&client, 1, Duration::from_secs(120)).await;
    assert_eq!(first["status"], "completed", "demo deploy: {first}");

    // beta: one node, so its reboot leaves it with none ready.
    let demo = client.get("/v1/deployments/demo").await.expect("demo");
    let created = client
        .post(
            "/v1/deployments",
            &json!({ "instance": "beta", "zone": "us-east1", "type": "development",
                     "version": demo["version"] }),
        )
        .await
        .expect("create beta");
    let deadline = Instant::now() + Duration::from_secs(90);
    while get_through_proxy(&up, BETA_HOST, "/healthcheck").await != 200 {
        assert!(
            Instant::now() < deadline,
            "beta never served ({created}); log:\n{}",
            up.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Drains that last: each deployment's own grace (unset, Nakama's 0 s, nothing waits).
    for instance in ["demo", "beta"] {
        let set = client
            .post(
                &format!("/v1/deployments/{instance}/operations"),
                &json!({ "kind": "set-config", "config": { "shutdown_grace_sec": "2" } }),
            )
            .await
            .expect("set-config");
        let id = set["id"].as_u64().expect("operation id");
        let done = wait_op(&client, id, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "completed", "{instance} set-config: {done}");
    }

    // 200s, a 404, and database load (a literal in a statement, and one in a utility statement).
    for _ in 0..5 {
        assert_eq!(get_through_proxy(&up, DEMO_HOST, "/healthcheck").await, 200);
    }
    // Every deployment has its own certificate and no other name has one, so a name that is
    // no deployment is refused at the handshake; the 404 needs a certificate for it, as an
    // operator might have left one in cert_dir.
    assert_eq!(get_through_proxy(&up, NO_SUCH_HOST, "/").await, 0);
    kanmon_proxy::devcerts::LocalCa::open_or_create(&up.state.join("certs"), "kanmon.test")
        .expect("the local CA")
        .issue(&up.state.join("certs"), NO_SUCH_HOST)
        .expect("a certificate for the name");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = 0;
    while status == 0 && Instant::now() < deadline {
        status = get_through_proxy(&up, NO_SUCH_HOST, "/").await;
        if status == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(status, 404);
    let probe = format!("SELECT '{SECRET}'::text AS kanmon_probe");
    let utility = format!("SET application_name = '{SECRET}'");
    run_queries(&state, &[&utility, &probe, &probe, &probe, &probe, &probe]);

    // Both deployments rebooted; beta's drain is held by a WebSocket for its grace (2 s), and
    // requests meanwhile get 503.
    let ca = up.state.join("certs").join("ca.crt");
    let tls = tls_connect(up.tls, BETA_HOST, client_config(&ca))
        .await
        .expect("TLS to beta");
    let _ws = ws_with_key(tls, BETA_HOST, &server_key(&client, "beta").await)
        .await
        .expect("WebSocket to beta");
    // And one on demo, so that one of its nodes drains for a while too (what an operator
    // watching the dashboards sees).
    let tls = tls_connect(up.tls, DEMO_HOST, client_config(&ca))
        .await
        .expect("TLS to demo");
    let _demo_ws = ws_with_key(tls, DEMO_HOST, &server_key(&client, "demo").await)
        .await
        .expect("WebSocket to demo");
    let reboot = json!({ "kind": "reboot" });
    let demo_op = client
        .post("/v1/deployments/demo/operations", &reboot)
        .await
        .expect("reboot demo");
    let beta_op = client
        .post("/v1/deployments/beta/operations", &reboot)
        .await
        .expect("reboot beta");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    while refused == 0 {
        if get_through_proxy(&up, BETA_HOST, "/healthcheck").await == 503 {
            refused += 1;
        }
        assert!(
            Instant::now() < deadline,
            "beta never refused during its reboot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for op in [&demo_op, &beta_op] {
        let id = op["id"].as_u64().expect("operation id");
        let done = wait_op(&client, id, Duration::from_secs(120)).await;
        assert_eq!(done["status"], "completed", "reboot: {done}");
    }

    // Both targets are up, with Prometheus' own target labels.
    for job in ["kanmon-proxy", "kanmon-control"] {
        prom.wait_for(job, &format!(r#"up{{job="{job}"}}"#), |v| v == 1.0)
            .await;
    }
    let labels = prom.label_names().await;
    assert!(labels.iter().any(|l| l == "deployment"), "{labels:?}");
    assert!(
        !labels.iter().any(|l| l.starts_with("exported_")),
        "{labels:?}"
    );
    prom.wait_for(
        "beta's 503s under beta",
        r#"sum(kanmon_http_requests_total{deployment="beta",status="503"})"#,
        |v| v >= 1.0,
    )
    .await;
    // Under `unknown` only 404s: ours, and those of the polls before each deployment was
    // routed.
    prom.wait_for(
        "the 404 under unknown",
        r#"sum(kanmon_http_requests_total{deployment="unknown",status="404"})"#,
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(
        prom.value(r#"sum(kanmon_http_requests_total{deployment="unknown",status!="404"})"#)
            .await,
        0.0
    );
    prom.wait_for(
        "the reboots",
        r#"sum(kanmon_control_operations_total{kind="reboot",outcome="completed"})"#,
        |v| v == 2.0,
    )
    .await;
    prom.wait_for(
        "demo's database CPU",
        r#"kanmon_database_cpu_seconds_total{deployment="demo"}"#,
        |v| v > 0.0,
    )
    .await;
    let probe_series = format!(
        r#"kanmon_database_top_query_calls_total{{deployment="demo",query="{PROBE_NORMALISED}"}}"#
    );
    prom.wait_for(
        "the probe among the top queries",
        &format!("sum({probe_series})"),
        |v| v == 5.0,
    )
    .await;
    prom.wait_for(
        "demo's query load",
        r#"kanmon_database_calls_total{deployment="demo"}"#,
        |v| v >= 5.0,
    )
    .await;
    // Two scrapes of the probe's series at least, so rate() over it has data.
    prom.wait_for(
        "a second scrape of the top queries",
        &format!("count_over_time({probe_series}[1m])"),
        |v| v >= 2.0,
    )
    .await;

    // No literal reached a label: not the statement's, not the utility statement's.
    let db_series = prom
        .query(r#"{__name__=~"kanmon_database_.+"}"#)
        .await
        .expect("database series");
    let text = serde_json::to_string(&db_series).expect("JSON");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains("application_name"), "{text}");
    let top = prom
        .query(r#"kanmon_database_top_query_seconds_total{deployment="demo"}"#)
        .await
        .expect("top queries");
    assert!(
        !top.is_empty() && top.len() <= 10,
        "top queries are bounded: {top:?}"
    );
    for q in &top {
        let query = q["metric"]["query"].as_str().unwrap_or_default();
        assert!(query.chars().count() <= 100, "{query}");
    }

    // Several successful scrapes of each target inside the panels' 1m windows, so that rate()
    // has two samples of every series even when a loaded machine made some scrapes time out.
    for job in ["kanmon-proxy", "kanmon-control"] {
        prom.wait_for(
            "three good scrapes",
            &format!(r#"sum_over_time(up{{job="{job}"}}[1m])"#),
            |v| v >= 3.0,
        )
        .await;
    }

    // Every dashboard expression evaluates; the panels this platform feeds show data.
    let exprs = dashboard_exprs(
        &dashboards,
        &[("deployment", "demo"), ("zone", "us-east1"), ("node", ".*")],
    );
    let mut with_data: Vec<String> = Vec::new();
    for (title, expr) in &exprs {
        let result = prom
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}"));
        eprintln!("{title}: {expr} → {} series", result.len());
        if !result.is_empty() {
            with_data.push(title.clone());
        }
    }
    for panel in MUST_HAVE_DATA {
        assert!(
            with_data.iter().any(|t| t == panel),
            "{panel} shows no data; panels with data: {with_data:?}"
        );
    }

    // beta's 503s are in the edge's 5xx ratio of beta (a series born at its first 503 has no
    // increase Prometheus can see, so the ratio may be 0: it has data all the same).
    let beta = dashboard_exprs(
        &dashboards,
        &[("deployment", "beta"), ("zone", "us-east1"), ("node", ".*")],
    );
    let (_, ratio) = beta
        .iter()
        .find(|(t, _)| t == "kanmon-edge.json / 5xx ratio by deployment")
        .expect("the edge's 5xx panel");
    assert!(!prom.query(ratio).await.expect(ratio).is_empty(), "{ratio}");

    // What the reboots left in the series (the dashboards' view of them).
    for expr in [
        r#"max_over_time(kanmon_nodes{deployment="demo",state="draining"}[5m])"#,
        r#"min_over_time(kanmon_nodes{deployment="demo",state="ready"}[5m])"#,
        r#"min_over_time(kanmon_nodes{deployment="beta",state="ready"}[5m])"#,
        r#"count(count_over_time(kanmon_node_cpu_seconds_total{deployment="demo"}[5m]))"#,
        r#"sum(resets(kanmon_node_cpu_seconds_total{deployment="demo"}[5m]))"#,
        r#"max_over_time(kanmon_nodes{deployment="beta",state="draining"}[5m])"#,
        r#"max_over_time(kanmon_websocket_connections{deployment="beta"}[5m])"#,
        r#"max_over_time(kanmon_websocket_connections{deployment="demo"}[5m])"#,
        r#"count(kanmon_websocket_connections{deployment="demo"})"#,
        r#"max_over_time(kanmon_control_nodes{deployment="demo",state="starting"}[5m])"#,
        r#"sum(max_over_time(kanmon_control_queue_depth[5m]))"#,
        r#"sum(resets(kanmon_database_cpu_seconds_total[5m]))"#,
        r#"sum(kanmon_control_operation_duration_seconds_sum{kind="reboot"})"#,
    ] {
        eprintln!("{expr} = {}", prom.value(expr).await);
    }

    // The control plane's output, database series included, is valid exposition format.
    let text = reqwest::get(format!("http://{}/metrics", up.metrics))
        .await
        .expect("scrape the control plane")
        .text()
        .await
        .expect("metrics body");
    assert!(
        text.contains("kanmon_database_top_query_seconds_total{"),
        "{text}"
    );
    promtool_check(&text);

    // The alert rules loaded and evaluate cleanly.
    let rules = prom.evaluated_rules().await;
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    eprintln!("platform Prometheus test took {:?}", started.elapsed());
    assert_eq!(up.end_with("INT").map(|s| s.success()), Some(true));
}
