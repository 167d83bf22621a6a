//! The local process driver with real child processes (the hidden `kanmon demo-node`).

use std::time::Duration;

use kanmon_control::{
    domain::NodeLaunch,
    driver::{LocalDriver, LocalDriverConfig, NodeHealth, Processes},
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
        secret_keys: Default::default(),
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
    // The node's output reaches its log through a copying task: wait for it (bounded).
    let path = dir.path().join("logs/alpha/alpha-0.log");
    let mut log = String::new();
    for _ in 0..200 {
        log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains("listening on") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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

/// Secrets reach a node through a 0600 file named in `KANMON_NODE_CONFIG`, not through its
/// environment (readable by every process of the same user in /proc/PID/environ); logs are
/// owner-only too, and the file goes when the node stops.
#[tokio::test]
async fn secrets_reach_nodes_through_a_private_file_not_the_environment() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    // Prints its whole environment to its log, then runs the demo node.
    c.program = "sh".into();
    c.args = vec![
        "-c".into(),
        "env >&2; exec \"$0\" demo-node --listen 127.0.0.1:0".into(),
        env!("CARGO_BIN_EXE_kanmon").into(),
    ];
    let driver = LocalDriver::new(c);
    driver.set_instance_env(
        "alpha",
        vec![(
            "DATABASE_URL".into(),
            "postgres://kanmon:db-pass-77@127.0.0.1:5999/postgres".into(),
        )],
    );
    let mut spec = launch("alpha-0", 1);
    spec.config = [("db_password".to_string(), "hunter2-cfg".to_string())].into();
    driver.start_node("alpha", &spec).await.unwrap();
    assert_eq!(healthy(&driver, "alpha-0").await, NodeHealth::Healthy);

    let node_dir = dir.path().join("logs/alpha");
    let file = node_dir.join("alpha-0.config.json");
    let log_path = node_dir.join("alpha-0.log");
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("KANMON_NODE_CONFIG=") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        log.contains(&format!("KANMON_NODE_CONFIG={}", file.display())),
        "{log}"
    );
    assert!(
        log.contains("KANMON_VAR_MODE=pvp"),
        "plain vars stay in the environment"
    );
    for secret in ["hunter2-cfg", "db-pass-77"] {
        assert!(
            !log.contains(secret),
            "{secret} was in the node's environment: {log}"
        );
    }
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(cfg["KANMON_CONFIG_DB_PASSWORD"], "hunter2-cfg");
    assert!(cfg["DATABASE_URL"].as_str().unwrap().contains("db-pass-77"));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&log_path), 0o600);
    assert_eq!(mode(&node_dir), 0o700);
    driver.stop_node("alpha", "alpha-0").await.unwrap();
    assert!(!file.exists(), "the config file outlived its node");
}
