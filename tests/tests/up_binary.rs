//! The `kanmon up` binary itself: it comes up with the demo production deployment reachable
//! through its proxy, SIGINT stops it and every node it started, and a second `kanmon up` in
//! the same state directory resumes the same deployment (same token, same history).

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use kanmon_control::cli::Client;
use kanmon_tests::{client_config, free_port, http_get, tls_connect, workspace_bin};
use tokio::net::TcpStream;

const HOST: &str = "demo.us-east1.kanmon.test";

/// `kanmon up`, stopped (SIGINT, then SIGKILL after a bounded wait) when dropped; its output
/// goes to a log file beside the state directory, shown when a check fails.
struct Up(Child, std::path::PathBuf);

impl Up {
    fn start(dir: &std::path::Path, tls: SocketAddr, admin: SocketAddr, api: SocketAddr) -> Self {
        let log_path = dir.with_extension(format!("{}.log", tls.port()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(workspace_bin("kanmon"))
            .arg("up")
            .arg("--dir")
            .arg(dir)
            .args(["--no-database", "--grace", "2s"])
            .args(["--listen", &tls.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--api", &api.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kanmon up");
        Self(child, log_path)
    }

    /// What `kanmon up` printed so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    /// SIGINT, then waits (bounded) for the exit; whether it exited.
    async fn interrupt(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..300 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            for _ in 0..200 {
                if matches!(self.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits (bounded) until the demo deployment answers through the proxy; returns the node.
async fn served(tls_addr: SocketAddr, ca: &std::path::Path) -> String {
    for _ in 0..400 {
        // The CA appears once `kanmon up` has created it.
        if !ca.is_file() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let tls = client_config(ca);
        if let Ok(s) = tls_connect(tls_addr, HOST, tls).await {
            if let Ok((200, body)) = http_get(s, HOST, "/healthcheck").await {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the demo deployment was never served through {tls_addr}");
}

fn node_addrs(dep: &serde_json::Value) -> Vec<SocketAddr> {
    dep["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|n| n["addr"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_stops_on_sigint_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let (tls, admin, api) = (free_port(), free_port(), free_port());

    let mut up = Up::start(&state, tls, admin, api);
    let body = served(tls, &state.join("certs").join("ca.crt")).await;
    assert!(body.contains("demo-"), "{body}");
    let token = std::fs::read_to_string(state.join("kanmon.db.admin-token")).expect("token");
    let client = Client::new(&format!("http://{api}"), token.trim().to_string());
    let dep = client
        .get("/v1/deployments/demo")
        .await
        .expect("deployment");
    assert_eq!(dep["type"], "production", "{dep}");
    let addrs = node_addrs(&dep);
    assert_eq!(addrs.len(), 2, "{dep}");

    assert!(
        up.interrupt().await,
        "kanmon up did not exit after SIGINT; its log:\n{}",
        up.log()
    );
    for addr in &addrs {
        let mut gone = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "node at {addr} outlived kanmon up");
    }

    // Again in the same directory: the same deployment, token and history.
    let mut again = Up::start(&state, tls, admin, api);
    served(tls, &state.join("certs").join("ca.crt")).await;
    let token2 = std::fs::read_to_string(state.join("kanmon.db.admin-token")).expect("token");
    assert_eq!(token, token2);
    let ops = client
        .get("/v1/deployments/demo/operations")
        .await
        .expect("operations");
    let first = ops["operations"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["id"] == 1))
        .cloned()
        .unwrap_or_default();
    assert_eq!(first["kind"], "deploy", "{ops}");
    assert_eq!(first["status"], "completed", "{ops}");
    let list = client.get("/v1/deployments").await.expect("list");
    assert_eq!(
        list.to_string().matches("\"instance\":\"demo\"").count(),
        1,
        "{list}"
    );
    assert!(
        again.interrupt().await,
        "kanmon up did not exit after SIGINT; its log:\n{}",
        again.log()
    );
}
