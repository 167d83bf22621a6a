//! The control plane's admin listener: `kanmon serve --driver local` drives an operation and
//! API calls, and the counters, the state gauges and the node processes' CPU and memory are
//! read back over HTTP; `promtool check metrics` accepts the output.

mod common;

use std::time::Duration;

use common::Server;

/// The value of the series `name{labels}` (labels exactly as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(s: &Server) -> String {
    let resp = s.http.get(&s.metrics_url).send().await.expect("scrape");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics body")
}

fn promtool_check(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/setup.sh");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("promtool stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_api_requests_and_node_processes_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let s = Server::start(
        &dir.path().join("k.db"),
        &[
            "--grace",
            "1s",
            "--driver",
            "local",
            "--node-program",
            env!("CARGO_BIN_EXE_kanmon"),
            "--node-arg",
            "demo-node",
            "--node-arg",
            "--listen",
            "--node-arg",
            "127.0.0.1:0",
            "--log-dir",
            logs.to_str().unwrap(),
        ],
    );
    // Before anything happened: counters with a known label set are already there at 0.
    let fresh = scrape(&s).await;
    let deploys = r#"kanmon_control_operations_total{kind="deploy",outcome="completed"}"#;
    assert_eq!(value(&fresh, deploys), Some(0.0), "{fresh}");
    assert_eq!(
        value(&fresh, "kanmon_control_auth_failures_total"),
        Some(0.0)
    );

    s.create("alpha", "development", 1).await;
    let (status, _) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert_eq!(status, 200);
    let (status, _) = s.get("/v1/deployments/alpha", "kmn_not-a-real-token").await;
    assert_eq!(status, 401);
    let (status, _) = s.get("/no/such/route/alpha", &s.admin).await;
    assert_eq!(status, 404);

    let text = scrape(&s).await;
    promtool_check(&text);
    assert_eq!(value(&text, deploys), Some(1.0), "{text}");
    assert_eq!(
        value(
            &text,
            r#"kanmon_control_operations_total{kind="reboot",outcome="failed"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            r#"kanmon_control_operation_duration_seconds_count{kind="deploy"}"#
        ),
        Some(1.0)
    );
    let route = r#"kanmon_control_api_requests_total{route="/v1/deployments/{instance}",status="#;
    assert_eq!(
        value(&text, &format!(r#"{route}"200"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, &format!(r#"{route}"401"}}"#)), Some(1.0));
    assert_eq!(
        value(
            &text,
            r#"kanmon_control_api_requests_total{route="unmatched",status="404"}"#
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("/no/such") && !text.contains("route=\"/v1/deployments/alpha\""),
        "raw paths never become labels: {text}"
    );
    assert_eq!(
        value(&text, "kanmon_control_auth_failures_total"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"kanmon_control_queue_depth{deployment="alpha"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            r#"kanmon_control_nodes{deployment="alpha",state="ready"}"#
        ),
        Some(1.0)
    );
    let memory = value(
        &text,
        r#"kanmon_node_memory_bytes{deployment="alpha",node="alpha-0"}"#,
    );
    assert!(memory.is_some_and(|b| b > 0.0), "{text}");
    let cpu = value(
        &text,
        r#"kanmon_node_cpu_seconds_total{deployment="alpha",node="alpha-0"}"#,
    );
    assert!(cpu.is_some_and(|c| c >= 0.0), "{text}");
    // Exactly one way of enforcing node CPU limits is in use, and it is named.
    let modes: Vec<f64> = ["cgroup_v2", "cgroup_v1", "none"]
        .iter()
        .map(|m| {
            value(
                &text,
                &format!(r#"kanmon_node_cpu_limit_mode{{mode="{m}"}}"#),
            )
            .unwrap_or_else(|| panic!("no cpu limit mode {m}: {text}"))
        })
        .collect();
    assert_eq!(modes.iter().sum::<f64>(), 1.0, "{modes:?}");
    assert!(!text.contains("instance=") && !text.contains("job="));

    // Deleting the deployment stops its node: its series leave.
    let (status, op) = s
        .call(
            reqwest::Method::DELETE,
            "/v1/deployments/alpha",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 202, "{op}");
    let op = s.wait_op(op["id"].as_u64().unwrap()).await;
    assert_eq!(op["status"], "completed", "{op}");
    let mut after = String::new();
    for _ in 0..100 {
        after = scrape(&s).await;
        if !after.contains("deployment=\"alpha\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!after.contains("deployment=\"alpha\""), "{after}");
    assert_eq!(
        value(
            &after,
            r#"kanmon_control_operations_total{kind="delete",outcome="completed"}"#
        ),
        Some(1.0)
    );
    promtool_check(&after);
}
