//! WebSockets through the proxy: echo, draining (new connections only to ready nodes, open
//! ones kept), the connection gauge, and idle connections outliving the request timeout.

mod common;

use std::{collections::HashMap, time::Duration};

use common::*;
use futures_util::StreamExt;
use kanmon_bench::node::spawn_node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_gets_no_new_connections_and_keeps_open_ones() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let n1 = spawn_node("alpha-1").await.unwrap();
    let n2 = spawn_node("alpha-2").await.unwrap();
    let all_ready = deployment(
        "alpha",
        &[
            ("alpha-0", n0.addr(), None, "ready"),
            ("alpha-1", n1.addr(), None, "ready"),
            ("alpha-2", n2.addr(), None, "ready"),
        ],
    );
    let proxy = TestProxy::start(Opts {
        nodes: all_ready,
        ..Opts::default()
    })
    .await;

    // Open connections until each node holds at least one.
    let mut open: Vec<(String, Ws)> = Vec::new();
    for _ in 0..30 {
        let mut ws = proxy.ws(ALPHA).await.unwrap();
        let id = whoami(&mut ws).await;
        open.push((id, ws));
    }
    assert!(
        open.iter().any(|(id, _)| id == "alpha-1"),
        "p2c never picked alpha-1"
    );
    let gauge =
        r#"kanmon_websocket_connections{deployment="alpha",node="alpha-1",zone="us-east1"}"#;
    let on_1 = open.iter().filter(|(id, _)| id == "alpha-1").count() as f64;
    assert_eq!(proxy.metric(gauge).await, on_1);

    // alpha-1 turns draining.
    proxy.write_nodes(&deployment(
        "alpha",
        &[
            ("alpha-0", n0.addr(), None, "ready"),
            ("alpha-1", n1.addr(), None, "draining"),
            ("alpha-2", n2.addr(), None, "ready"),
        ],
    ));
    proxy.wait_generation(2).await;

    // 500 new connections: none on the draining node.
    let mut landed: HashMap<String, usize> = HashMap::new();
    for chunk in 0..10 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            batch.push(proxy.ws(ALPHA));
        }
        for ws in futures_util::future::join_all(batch).await {
            let mut ws = ws.unwrap_or_else(|e| panic!("connect failed in chunk {chunk}: {e}"));
            *landed.entry(whoami(&mut ws).await).or_default() += 1;
            ws.close(None).await.unwrap();
        }
    }
    assert_eq!(landed.values().sum::<usize>(), 500);
    assert_eq!(
        landed.get("alpha-1"),
        None,
        "a new connection went to the draining node: {landed:?}"
    );
    assert!(
        landed["alpha-0"].abs_diff(landed["alpha-2"]) < 100,
        "{landed:?}"
    );

    // The connections already on alpha-1 are still open and echo.
    for (id, ws) in open.iter_mut() {
        echo(ws, &format!("still here on {id}")).await;
    }
    assert_eq!(proxy.metric(gauge).await, on_1);

    // Closing them releases the gauge.
    for (_, mut ws) in open {
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    }
    for _ in 0..100 {
        if proxy.metric(gauge).await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.metric(gauge).await, 0.0);
    let upgrades = proxy
        .metric(r#"kanmon_http_requests_total{deployment="alpha",status="101",zone="us-east1"}"#)
        .await;
    assert_eq!(upgrades, 530.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_outlives_the_request_read_timeout() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", n0.addr(), None, "ready")]),
        read_timeout: "1s",
        ..Opts::default()
    })
    .await;
    let mut ws = proxy.ws(ALPHA).await.unwrap();
    echo(&mut ws, "before").await;
    // Idle for longer than the request read timeout (real time: the timeout is the proxy's).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    echo(&mut ws, "after the read timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_leaves_the_gauge_after_its_last_websocket() {
    let n0 = spawn_node("alpha-0").await.unwrap();
    let n1 = spawn_node("alpha-1").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment(
            "alpha",
            &[
                ("alpha-0", n0.addr(), None, "ready"),
                ("alpha-1", n1.addr(), None, "ready"),
            ],
        ),
        ..Opts::default()
    })
    .await;
    let mut on_1 = None;
    let mut others = Vec::new();
    for _ in 0..40 {
        let mut ws = proxy.ws(ALPHA).await.unwrap();
        if whoami(&mut ws).await == "alpha-1" {
            on_1 = Some(ws);
            break;
        }
        others.push(ws);
    }
    let mut ws = on_1.expect("p2c never picked alpha-1");
    let series =
        r#"kanmon_websocket_connections{deployment="alpha",node="alpha-1",zone="us-east1"}"#;
    let present = |text: &str| text.lines().any(|l| l.starts_with(series));

    // alpha-1 leaves the table (a rollout replaced it) while its WebSocket is open: the
    // gauge still counts that connection.
    proxy.write_nodes(&deployment(
        "alpha",
        &[("alpha-0", n0.addr(), None, "ready")],
    ));
    proxy.wait_generation(2).await;
    let m = proxy.metrics().await;
    assert!(present(&m), "{m}");
    assert_eq!(metric_value(&m, series), 1.0);
    echo(&mut ws, "still open after the node left").await;

    // Its last connection ends: the series leaves.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    let mut gone = false;
    for _ in 0..250 {
        if !present(&proxy.metrics().await) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "{}", proxy.metrics().await);
    // alpha-0's series stays (its node is in the table).
    assert!(
        proxy.metrics().await.contains(
            r#"kanmon_websocket_connections{deployment="alpha",node="alpha-0",zone="us-east1"}"#
        ) || others.is_empty()
    );
}

/// The load harness's `--spread`: connection i goes to deployment `alpha-{i mod N}` by its own
/// hostname (SNI and Host), and the proxy routes each to that deployment's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_websockets_reach_each_deployment_by_its_own_hostname() {
    use kanmon_bench::loads::{idle, Limits};
    let mut nodes = Vec::new();
    let mut file = String::new();
    for k in 0..3 {
        let node = spawn_node(&format!("alpha-{k}-0")).await.unwrap();
        let id = format!("alpha-{k}-0");
        file.push_str(&deployment(
            &format!("alpha-{k}"),
            &[(id.as_str(), node.addr(), None, "ready")],
        ));
        nodes.push(node);
    }
    let proxy = TestProxy::start(Opts {
        nodes: file,
        ..Opts::default()
    })
    .await;
    // One wildcard certificate for the whole zone, as compare.sh's fleet target has.
    let certs = "kanmon_tls_certificates";
    let before = proxy.metric(certs).await;
    proxy
        .ca
        .issue(&proxy.path("certs"), "_.us-east1.kanmon.test")
        .unwrap();
    let mut loaded = before;
    for _ in 0..500 {
        loaded = proxy.metric(certs).await;
        if loaded > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(loaded, before + 1.0, "the wildcard was not loaded");

    let target = kanmon_bench::target::Target::new(
        &format!("wss://{ALPHA}/ws"),
        Some(&proxy.tls_addr.to_string()),
        Some(&proxy.ca.cert_path),
    )
    .await
    .unwrap()
    .with_spread(3)
    .unwrap();
    let params = idle::IdleParams {
        connections: 9,
        concurrency: 3,
        hold: Duration::ZERO,
        pid: None,
        limits: Limits {
            timeout: Duration::from_secs(30),
            op_timeout: Duration::from_secs(10),
        },
    };
    let report = idle::run(std::sync::Arc::new(target), params).await;
    assert_eq!(report.errors.total(), 0, "{:?}", report.errors);
    assert_eq!(report.metric("connections_held"), Some(9.0));
    for (k, node) in nodes.iter().enumerate() {
        assert_eq!(node.stats().ws_connections(), 3, "deployment alpha-{k}");
    }
    // Each upgrade counted under the deployment its hostname names.
    for k in 0..3 {
        let upgrades = format!(
            r#"kanmon_http_requests_total{{deployment="alpha-{k}",status="101",zone="us-east1"}}"#
        );
        assert_eq!(
            proxy.metric_reaches(&upgrades, 3.0).await,
            3.0,
            "{upgrades}"
        );
    }
}
