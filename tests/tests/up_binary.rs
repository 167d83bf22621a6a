//! The `kanmon up` binary itself: it comes up with the demo production deployment reachable
//! through its proxy, SIGINT stops it and every node it started, and a second `kanmon up` in
//! the same state directory resumes the same deployment (same token, same history). As root,
//! it does so with its databases from a directory only root can enter.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use kanmon_control::cli::Client;
use kanmon_tests::{
    client_config, free_port, http_get, tls_connect,
    up_process::{postgres_gone, postgres_processes_under, Output, StateDir, UpOpts, UpProcess},
    workspace_bin,
};
use tokio::net::TcpStream;

const HOST: &str = "demo.us-east1.kanmon.test";

/// `kanmon up`, stopped (SIGINT, then SIGKILL after a bounded wait) when dropped; its output
/// goes to a log file beside the state directory, shown when a check fails.
struct Up(Child, std::path::PathBuf);

impl Up {
    fn start(dir: &std::path::Path, tls: SocketAddr, admin: SocketAddr, api: SocketAddr) -> Self {
        Self::start_with_metrics(dir, tls, admin, api, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn start_with_metrics(
        dir: &std::path::Path,
        tls: SocketAddr,
        admin: SocketAddr,
        api: SocketAddr,
        metrics: SocketAddr,
    ) -> Self {
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
            .args(["--metrics-listen", &metrics.to_string()])
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
    let (tls, admin, api, metrics) = (free_port(), free_port(), free_port(), free_port());

    let mut up = Up::start_with_metrics(&state, tls, admin, api, metrics);
    let body = served(tls, &state.join("certs").join("ca.crt")).await;
    assert!(body.contains("demo-"), "{body}");
    let token = std::fs::read_to_string(state.join("kanmon.db.admin-token")).expect("token");
    let client = Client::new(&format!("http://{api}"), token.trim().to_string());
    // Served once the first node is ready; both nodes are up once the first deploy completes.
    let mut deployed = false;
    for _ in 0..600 {
        // Operation 1 is the demo's certificate, 2 its first deploy.
        let op = client.get("/v1/operations/2").await;
        if op.is_ok_and(|op| op["status"] == "completed") {
            deployed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        deployed,
        "the first deploy did not complete; log:\n{}",
        up.log()
    );
    let dep = client
        .get("/v1/deployments/demo")
        .await
        .expect("deployment");
    assert_eq!(dep["type"], "production", "{dep}");
    let addrs = node_addrs(&dep);
    assert_eq!(addrs.len(), 2, "{dep}");
    // The control plane's own metrics: the first deploy, and each node process's memory.
    let conn = TcpStream::connect(metrics).await.expect("metrics listener");
    let (status, text) = http_get(conn, "localhost", "/metrics")
        .await
        .expect("scrape");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(r#"kanmon_control_operations_total{kind="deploy",outcome="completed"} 1"#),
        "{text}"
    );
    assert_eq!(
        text.matches(r#"kanmon_node_memory_bytes{deployment="demo""#)
            .count(),
        2,
        "{text}"
    );

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
    // The first operations of the demo: its certificate (queued first), then its deploy.
    let first = |kind: &str| {
        ops["operations"]
            .as_array()
            .and_then(|o| {
                o.iter()
                    .filter(|o| o["kind"] == kind)
                    .min_by_key(|o| o["id"].as_u64())
            })
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(first("deploy")["id"], 2, "{ops}");
    assert_eq!(first("deploy")["status"], "completed", "{ops}");
    let certificate = first("certificate");
    assert_eq!(certificate["id"], 1, "{ops}");
    assert_eq!(certificate["status"], "completed", "{ops}");
    assert_eq!(certificate["result"]["hostname"], HOST, "{ops}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_as_root_from_a_private_directory_runs_its_databases_and_resumes() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        println!(
            "skipped: needs root (`kanmon up` as root from a 0700 directory); CI runs as root"
        );
        return;
    }
    if let Err(e) = kanmon_control::up::postgres::PgTools::find() {
        panic!("{e}");
    }
    // A clone under /root or a `mktemp -d`: the `postgres` user cannot enter it.
    let private = StateDir::new();
    let state = private.path().to_path_buf();
    let opts = UpOpts {
        database: true,
        output: Output::File,
        extra_args: Vec::new(),
    };
    let mut up = UpProcess::start(&state, &opts);
    let body = up.served().await;
    assert!(body.contains("demo-"), "{body}");
    let token = up.token();

    let root = private.data_root();
    assert!(
        !root.starts_with(private.private_dir()),
        "{}",
        root.display()
    );
    let data = root.join("demo");
    let meta = std::fs::metadata(&data).expect("data directory");
    let postgres_uid = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    assert_eq!(
        meta.uid().to_string(),
        String::from_utf8_lossy(&postgres_uid.stdout).trim()
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let password =
        std::fs::metadata(state.join("postgres").join("demo.password")).expect("password");
    assert_eq!(password.permissions().mode() & 0o777, 0o600);
    assert!(!postgres_processes_under(&root).is_empty(), "{}", up.log());
    let identity = std::fs::metadata(data.join("PG_VERSION"))
        .expect("PG_VERSION")
        .ino();

    let status = up.end_with("INT");
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        up.log()
    );
    let left = postgres_gone(&root, Duration::from_secs(30)).await;
    assert!(left.is_empty(), "database processes left: {left:?}");

    // Again from the same private directory: the same deployment on the same data.
    let mut again = UpProcess::start(&state, &opts);
    again.served().await;
    assert_eq!(again.token(), token);
    let client = Client::new(&format!("http://{}", again.api), token.clone());
    let ops = client
        .get("/v1/deployments/demo/operations")
        .await
        .expect("operations");
    assert!(ops.to_string().contains("\"kind\":\"deploy\""), "{ops}");
    let identity_again = std::fs::metadata(data.join("PG_VERSION"))
        .expect("PG_VERSION")
        .ino();
    assert_eq!(identity, identity_again, "the data directory was made anew");
    let status = again.end_with("INT");
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        again.log()
    );
    assert!(postgres_gone(&root, Duration::from_secs(30))
        .await
        .is_empty());
    drop(private);
    assert!(
        !root.exists(),
        "{} outlived its state directory's test",
        root.display()
    );
}

/// `kanmon console …` against a running `kanmon up`: (success, stdout + stderr).
fn console_cli(up: &UpProcess, args: &[&str]) -> (bool, String) {
    let out = Command::new(workspace_bin("kanmon"))
        .arg("console")
        .args(args)
        .env("KANMON_SERVER", format!("http://{}", up.api))
        .env("KANMON_TOKEN", up.token())
        .env_remove("KANMON_TOKEN_FILE")
        .output()
        .expect("kanmon console");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// One GET of the demo deployment's console through the proxy: (status, body).
async fn console_get(up: &UpProcess) -> (u16, String) {
    const CONSOLE: &str = "demo-console.us-east1.kanmon.test";
    let tls = client_config(&up.state.join("certs").join("ca.crt"));
    let s = tls_connect(up.tls, CONSOLE, tls)
        .await
        .expect("TLS to the console name");
    http_get(s, CONSOLE, "/").await.expect("console GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_console_opens_to_its_allow_list_only() {
    let state = StateDir::new();
    let mut up = UpProcess::start(
        state.path(),
        &UpOpts {
            database: false,
            output: Output::File,
            extra_args: Vec::new(),
        },
    );
    up.served().await;

    // A new deployment's console is closed.
    let (status, body) = console_get(&up).await;
    assert_eq!(status, 403, "{body}");
    let (ok, text) = console_cli(&up, &["show", "demo"]);
    assert!(
        ok && text.contains("demo-console.us-east1.kanmon.test"),
        "{text}"
    );
    assert!(text.contains("closed"), "{text}");

    // Opened to loopback: the console of one of the demo's nodes answers.
    let (ok, text) = console_cli(&up, &["allow", "demo", "127.0.0.0/8"]);
    assert!(ok && text.contains("127.0.0.0/8"), "{text}");
    let (status, body) = console_get(&up).await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("console JSON");
    assert_eq!(page["console"], true);
    assert!(
        page["node"]
            .as_str()
            .is_some_and(|n| n.starts_with("demo-")),
        "{page}"
    );

    // A bad network is refused by name; the list stays as it was.
    let (ok, text) = console_cli(&up, &["allow", "demo", "10.0.0.0/8", "not-a-cidr"]);
    assert!(!ok && text.contains("allow[1]"), "{text}");
    assert_eq!(console_get(&up).await.0, 200);

    // Moved to a network the client is not in: 403 again, at once.
    let (ok, text) = console_cli(&up, &["allow", "demo", "192.0.2.0/24"]);
    assert!(ok, "{text}");
    let (status, body) = console_get(&up).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allow-list"), "{body}");

    // Every change is in the deployment's audit log.
    let client = Client::new(&format!("http://{}", up.api), up.token());
    let audit = client
        .get("/v1/deployments/demo/audit")
        .await
        .expect("audit");
    let text = audit.to_string();
    assert!(text.contains("console.allow"), "{text}");
    assert!(text.contains("192.0.2.0/24"), "{text}");
    let doc = client.get("/openapi.json").await.expect("OpenAPI document");
    assert!(doc["paths"]["/v1/deployments/{instance}/console"]["put"].is_object());
}
