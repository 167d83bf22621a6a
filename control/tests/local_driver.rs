//! The local process driver with real child processes (the hidden `kanmon demo-node`).

use std::time::Duration;

use kanmon_control::{
    domain::NodeLaunch,
    driver::{Driver, LocalDriver, LocalDriverConfig, NodeHealth},
};

fn launch(id: &str, incarnation: u64) -> NodeLaunch {
    NodeLaunch {
        id: id.into(),
        slot: 0,
        generation: 1,
        incarnation,
        version: "3.35.0".parse().unwrap(),
        image: None,
        vars: [("mode".to_string(), "pvp".to_string())].into(),
        config: Default::default(),
    }
}

fn config(dir: &std::path::Path) -> LocalDriverConfig {
    let mut c = LocalDriverConfig::demo_node(env!("CARGO_BIN_EXE_kanmon"), dir.join("logs"));
    c.args = vec!["demo-node".into(), "--listen".into(), "127.0.0.1:0".into()];
    c.stop_grace = Duration::from_secs(5);
    c
}

async fn healthy(driver: &LocalDriver, node: &str) -> NodeHealth {
    let mut last = NodeHealth::NotYet;
    for _ in 0..100 {
        last = driver.health("alpha", node).await;
        if last != NodeHealth::NotYet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test]
async fn starts_checks_logs_and_stops_processes() {
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(config(dir.path()));
    let spec: NodeLaunch = launch("alpha-0", 1);
    let ep = driver.start_node("alpha", &spec).await.unwrap();
    assert!(ep.addr.ip().is_loopback());
    assert_eq!(healthy(&driver, "alpha-0").await, NodeHealth::Healthy);
    // Same incarnation: adopted, not restarted.
    assert_eq!(driver.start_node("alpha", &spec).await.unwrap(), ep);
    let log = std::fs::read_to_string(dir.path().join("logs/alpha/alpha-0.log")).unwrap();
    assert!(log.contains("listening on"), "{log}");
    driver.stop_node("alpha", "alpha-0").await.unwrap();
    assert_eq!(driver.health("alpha", "alpha-0").await, NodeHealth::Exited);
    assert!(tokio::net::TcpStream::connect(ep.addr).await.is_err());
}

#[tokio::test]
async fn a_node_that_exits_on_start_is_a_start_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.program = "sh".into();
    c.args = vec!["-c".into(), "echo booting; exit 3".into()];
    let driver = LocalDriver::new(c);
    assert!(driver
        .start_node("alpha", &launch("alpha-0", 1))
        .await
        .is_err());
    assert_eq!(driver.health("alpha", "alpha-0").await, NodeHealth::Exited);
}
