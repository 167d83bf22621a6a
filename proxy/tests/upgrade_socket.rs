//! The binary-upgrade socket is trusted only when this user owns it, in a directory nobody
//! else can write: a proxy configured with a shared directory does not start, and a SIGQUIT
//! while another user's socket sits at the path hands nothing over.

mod common;

use std::{os::unix::fs::PermissionsExt, process::Command, time::Duration};

use common::*;
use kanmon_bench::node::spawn_node;

#[test]
fn a_proxy_whose_upgrade_socket_is_in_a_shared_directory_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\ntls = \"{}\"\nadmin = \"{}\"\n[shutdown]\nupgrade_sock = \"shared/upgrade.sock\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kanmon-proxy"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("upgrade_sock") && stderr.contains("writable by group or others"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_sends_nothing_to_another_users_socket() {
    let node = spawn_node("alpha-0").await.unwrap();
    let proxy = TestProxy::start(Opts {
        nodes: deployment("alpha", &[("alpha-0", node.addr(), None, "ready")]),
        ..Opts::default()
    })
    .await;
    // Another user got to the path first (here: a socket given away to `nobody`; only
    // possible when the tests run as root).
    let sock = proxy.path("upgrade.sock");
    let imposter = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    if std::os::unix::fs::chown(&sock, Some(65534), None).is_err() {
        eprintln!("not root: cannot make a socket another user's; skipped");
        return;
    }
    imposter.set_nonblocking(true).unwrap();
    proxy.signal("QUIT");
    let mut refused = false;
    for _ in 0..200 {
        if proxy
            .log()
            .contains("refusing to hand the listening sockets over")
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused, "no refusal logged:\n{}", proxy.log());
    assert!(
        matches!(imposter.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the proxy connected to the imposter's socket"
    );
    // Still serving, on its own listener.
    let (status, ..) = proxy.get(ALPHA, ALPHA, "/").await;
    assert_eq!(status, 200);
}
