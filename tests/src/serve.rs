//! The real `kanmon serve` and `kanmon-proxy` binaries as children of a test, each ended when
//! the test ends (however it ends), and the API calls the tests make of the control plane.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use kanmon_control::cli::Client;
use serde_json::Value;

use crate::workspace_bin;

/// Stops the process when the test ends, however it ends: SIGTERM (so `kanmon serve` stops
/// its nodes), then SIGKILL if it is still there after a bounded wait.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kanmon serve` on free loopback ports with its store at `dir/kanmon.db` and `args`
/// after the common ones; returns the process and an API client with the admin token.
/// Call from a multi-thread runtime (it blocks while reading the address line).
pub fn start_serve(dir: &Path, args: &[&str]) -> (Proc, Client) {
    let (serve, api, _) = start_serve_with_metrics(dir, args);
    (serve, api)
}

/// As [`start_serve`], also returning the control plane's admin listener (`/metrics`); its
/// log goes to `dir/serve.log` (for a failing test to show).
pub fn start_serve_with_metrics(dir: &Path, args: &[&str]) -> (Proc, Client, SocketAddr) {
    let log = std::fs::File::create(dir.join("serve.log")).expect("serve log");
    let mut serve = Command::new(workspace_bin("kanmon"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.join("kanmon.db"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("kanmon serve");
    let stdout = serve.stdout.take().expect("stdout");
    let serve = Proc(serve);
    // Bounded: at most 20 lines, and EOF if the process exits. The metrics line comes first.
    let (mut metrics_addr, mut api_addr) = (None, None);
    tokio::task::block_in_place(|| {
        for line in BufReader::new(stdout)
            .lines()
            .take(20)
            .map_while(Result::ok)
        {
            if let Some(a) = line.strip_prefix("metrics on http://") {
                metrics_addr = a.trim_end_matches("/metrics").parse().ok();
            }
            if let Some(a) = line.strip_prefix("listening on ") {
                api_addr = a.parse().ok();
                return;
            }
        }
    });
    let api_addr: SocketAddr = api_addr.expect("kanmon serve printed its address");
    let metrics_addr = metrics_addr.expect("kanmon serve printed its metrics address");
    let token = std::fs::read_to_string(dir.join("kanmon.db.admin-token")).expect("token");
    let api = Client::new(&format!("http://{api_addr}"), token.trim().to_string());
    (serve, api, metrics_addr)
}

/// Starts `kanmon-proxy` with `config` written to `dir/proxy.toml`, its output to
/// `dir/proxy.log` (for a failing test to show).
pub fn start_proxy(dir: &Path, config: &str) -> Proc {
    std::fs::write(dir.join("proxy.toml"), config).expect("proxy config");
    let log = std::fs::File::create(dir.join("proxy.log")).expect("proxy log");
    let err = log.try_clone().expect("proxy log");
    Proc(
        Command::new(workspace_bin("kanmon-proxy"))
            .arg("--config")
            .arg(dir.join("proxy.toml"))
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("kanmon-proxy"),
    )
}

/// Polls operation `id` until it is completed or failed (bounded by `limit`; panics after).
pub async fn wait_op(api: &Client, id: u64, limit: Duration) -> Value {
    let rounds = limit.as_millis() / 100 + 1;
    for _ in 0..rounds {
        let op = api.get(&format!("/v1/operations/{id}")).await.expect("op");
        if matches!(op["status"].as_str(), Some("completed" | "failed")) {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("operation {id} did not finish within {limit:?}");
}
