//! PostgreSQL per deployment under `kanmon up` wiring: the deployment's nodes get a
//! `DATABASE_URL` to their own server (its own data directory and loopback port), `export`
//! dumps it with `pg_dump` behind an expiring, token-checked download link, and stopping the platform stops
//! the server. Needs Debian's `postgresql` (scripts/setup.sh installs it).

use std::{os::unix::fs::PermissionsExt, time::Duration};

use kanmon_tests::{node_program, Platform, PlatformOpts};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Runs the demo node after writing the `DATABASE_URL` it was given (in its 0600 config file,
/// not its environment) to its log.
fn reporting_wrapper(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("node.sh");
    let script = format!(
        "#!/bin/sh\necho \"database-url=$(sed -n 's/.*\"DATABASE_URL\":\"\\([^\"]*\\)\".*/\\1/p' \"$KANMON_NODE_CONFIG\")\" >&2\nexec {} \"$@\"\n",
        node_program().display()
    );
    std::fs::write(&path, script).expect("write wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

async fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect API");
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_deployment_gets_a_database_that_exports_and_stops() {
    if let Err(e) = kanmon_control::up::postgres::PgTools::find() {
        panic!("{e}");
    }
    let scripts = tempfile::tempdir().expect("temp dir");
    let opts = PlatformOpts {
        node_program: reporting_wrapper(scripts.path()),
        database: true,
        ..PlatformOpts::default()
    };
    let platform = Platform::start(opts).await;
    let api = platform.control.as_ref().expect("control").api_addr;

    // Both nodes were given the same database URL, on loopback.
    let logs = platform.dir.path().join("logs").join("demo");
    let mut urls = Vec::new();
    for node in ["demo-0", "demo-1"] {
        let log = std::fs::read_to_string(logs.join(format!("{node}.log"))).unwrap_or_default();
        // Each stored line is a record whose `line` is what the node printed.
        let url = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|r| {
                r["line"]
                    .as_str()
                    .and_then(|l| l.strip_prefix("database-url="))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        assert!(url.starts_with("postgres://kanmon:"), "{node}: {log}");
        assert!(url.contains("@127.0.0.1:"), "{url}");
        urls.push(url);
    }
    assert_eq!(urls[0], urls[1]);
    let port: u16 = urls[0]
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in the URL");
    let data_root = kanmon_control::up::postgres::data_root(&platform.dir.path().join("postgres"));
    assert!(data_root.join("demo/PG_VERSION").is_file());
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the database listens");

    // export: pg_dump into the state dir (an owner-only file), downloadable with the token.
    let id = platform
        .submit(json!({ "kind": "export" }))
        .await
        .expect("export queued");
    let op = platform.wait_op(id, Duration::from_secs(60)).await;
    assert_eq!(op["status"], "completed", "{op}");
    let link = op["result"]["database"]["download"]
        .as_str()
        .unwrap_or_else(|| panic!("no download link: {op}"))
        .to_string();
    assert!(
        op["result"]["database"]["expires_at"].as_u64().is_some(),
        "{op}"
    );
    let exports: Vec<_> = std::fs::read_dir(platform.dir.path().join("exports"))
        .expect("exports dir")
        .flatten()
        .collect();
    assert_eq!(exports.len(), 1);
    let mode = exports[0]
        .metadata()
        .expect("dump file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the dump is readable by its owner only");
    let token = platform.control.as_ref().expect("control").token.clone();
    let (status, text) = http_get(api, &link, Some(&token)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("PostgreSQL database dump"), "{text}");
    let (status, _) = http_get(api, &link, None).await;
    assert_eq!(status, 401, "the link alone is no credential");
    let audit = platform
        .api
        .get("/v1/deployments/demo/audit")
        .await
        .expect("audit");
    assert!(audit.to_string().contains("operations.export"), "{audit}");
    assert!(audit.to_string().contains("exports.download"), "{audit}");

    // Stopping the platform stops the database.
    platform.stop().await;
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the database still listens on {port} after stop");
}

/// `SHOW name` over a real connection to `url`.
async fn show(url: &str, name: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to the database: {e}"));
    let conn = tokio::spawn(conn);
    let row = client
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {name}: {e}"));
    drop(client);
    let _ = conn.await;
    row.get(0)
}

/// The CPUs a node's cgroup allows (quota over period, cgroup v2 or v1).
fn cgroup_cpus(dir: &std::path::Path) -> f64 {
    if let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) {
        let (quota, period) = max.trim().split_once(' ').expect("cpu.max");
        return quota.parse::<f64>().expect("quota") / period.parse::<f64>().expect("period");
    }
    let read = |f: &str| -> f64 {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()))
            .trim()
            .parse()
            .expect("number")
    };
    read("cpu.cfs_quota_us") / read("cpu.cfs_period_us")
}

/// Scaling acts under `kanmon up`: a development deployment (created through the API) scaled
/// from 1 to 2 node CPUs and 1 to 2 database CPUs with `kanmon scale` gets a database
/// restarted (on the same port) with the larger tier's settings, read back with `SHOW` over a
/// real connection, and a node whose cgroup allows 2 CPUs (where cgroups are writable; else
/// the driver reports `none`). The demo production deployment's two nodes get one CPU each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_resizes_the_database_and_the_node_limits() {
    use kanmon_control::{domain::tier::postgres_tier, driver::CpuLimitMode};
    let platform = Platform::start(PlatformOpts {
        database: true,
        ..PlatformOpts::default()
    })
    .await;
    let control = platform.control.as_ref().expect("control");
    let local = control.local().clone();
    let dbs = control.databases().expect("databases").clone();
    let mode = local.cpu_limit_mode();
    eprintln!("node CPU limits: {}", mode.as_str());
    let node_cpus = |node: &str| local.node_cgroup(node).map(|c| cgroup_cpus(&c));
    if mode != CpuLimitMode::None {
        assert_eq!(node_cpus("demo-0"), Some(1.0));
        assert_eq!(node_cpus("demo-1"), Some(1.0));
    }

    let created = platform
        .api
        .post(
            "/v1/deployments",
            &json!({ "instance": "solo", "zone": "us-east1", "type": "development",
                     "version": platform.deployment().await["spec"]["version"],
                     "node_cpus": 1, "db_cpus": 1 }),
        )
        .await
        .expect("create solo");
    let id = created["operation"]["id"].as_u64().expect("operation id");
    let op = platform.wait_op(id, Duration::from_secs(60)).await;
    assert_eq!(op["status"], "completed", "{op}");
    let before = dbs.url("solo").expect("solo's database runs");
    let want = |cpus: u32, name: &str| {
        postgres_tier(cpus)
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
            .expect(name)
    };
    assert_eq!(
        show(&before, "max_connections").await,
        want(1, "max_connections")
    );
    assert_eq!(
        show(&before, "shared_buffers").await,
        want(1, "shared_buffers")
    );
    if mode != CpuLimitMode::None {
        assert_eq!(node_cpus("solo-0"), Some(1.0));
    }

    // Scaled with the CLI (`kanmon scale … --wait` against the API).
    let kanmon = kanmon_tests::workspace_bin("kanmon");
    let (api, token) = (control.api_addr, control.token.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(kanmon)
            .args([
                "scale",
                "solo",
                "--node-cpus",
                "2",
                "--db-cpus",
                "2",
                "--wait",
            ])
            .env("KANMON_SERVER", format!("http://{api}"))
            .env("KANMON_TOKEN", token)
            .env_remove("KANMON_TOKEN_FILE")
            .output()
            .expect("run kanmon scale")
    })
    .await
    .expect("kanmon scale");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    assert!(progress.contains("completed"), "{progress}");
    let after = dbs.url("solo").expect("solo's database runs");
    assert_eq!(
        after, before,
        "restarted on the same port, same credentials"
    );
    assert_eq!(show(&after, "max_connections").await, "60");
    assert_eq!(
        show(&after, "max_connections").await,
        want(2, "max_connections")
    );
    assert_eq!(
        show(&after, "shared_buffers").await,
        want(2, "shared_buffers")
    );
    assert_eq!(show(&after, "work_mem").await, want(2, "work_mem"));
    if mode != CpuLimitMode::None {
        assert_eq!(
            node_cpus("solo-0"),
            Some(2.0),
            "a development node gets all its CPUs"
        );
    }
    // The demo deployment's database was not touched.
    let demo = dbs.url("demo").expect("demo's database runs");
    assert_eq!(
        show(&demo, "max_connections").await,
        want(1, "max_connections")
    );
    platform.stop().await;
}
