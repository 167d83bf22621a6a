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
