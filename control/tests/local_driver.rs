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
        cpus: 1,
        db_cpus: 1,
        secret_keys: Default::default(),
        shutdown_grace: Duration::ZERO,
    }
}

fn config(dir: &std::path::Path) -> LocalDriverConfig {
    let mut c = LocalDriverConfig::demo_node(env!("CARGO_BIN_EXE_kanmon"), dir.join("logs"));
    c.args = vec!["demo-node".into(), "--listen".into(), "127.0.0.1:0".into()];
    c.exit_slack = Duration::from_secs(5);
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

/// A stopped node gets SIGTERM and then its own shutdown grace (the deployment's
/// `shutdown_grace_sec`, handed over in its launch) plus the exit slack before it is killed:
/// a node that ignores SIGTERM is still running when the grace ends, and is gone after.
#[tokio::test]
async fn a_stopped_node_is_killed_only_after_its_shutdown_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.exit_slack = Duration::from_millis(200);
    // Says so on SIGTERM and keeps running (as Nakama finishing its matches would).
    c.program = "sh".into();
    c.args = vec![
        "-c".into(),
        "trap 'echo got SIGTERM' TERM; echo listening on 127.0.0.1:9; \
         i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"
            .into(),
    ];
    let driver = LocalDriver::new(c);
    let mut spec = launch("alpha-0", 1);
    spec.shutdown_grace = Duration::from_secs(2);
    driver.start_node("alpha", &spec).await.unwrap();
    let pid = driver.node_pids()[0].2;
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive());
    let asked = std::time::Instant::now();
    driver.stop_node("alpha", "alpha-0").await.unwrap();
    let took = asked.elapsed();
    assert!(
        took >= spec.shutdown_grace,
        "killed {took:?} after SIGTERM, before its grace of {:?}",
        spec.shutdown_grace
    );
    assert!(!alive(), "still running after the stop");
    let path = dir.path().join("logs/alpha/alpha-0.log");
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains("got SIGTERM") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.contains("got SIGTERM"), "SIGTERM came first: {log}");
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

/// The number of CPUs a cgroup's files allow (quota over period), in either cgroup version.
fn cgroup_cpus(dir: &std::path::Path) -> f64 {
    if let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) {
        let (quota, period) = max.trim().split_once(' ').expect("cpu.max: QUOTA PERIOD");
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

/// A node runs under its CPU tier: in a cgroup of its own whose quota is its CPUs, joined
/// before the node's program runs, removed when the node stops; where cgroups are not
/// writable the driver says so and the node runs unlimited (no cgroup at all).
#[tokio::test]
async fn a_node_runs_in_a_cgroup_with_its_cpus() {
    use kanmon_control::driver::CpuLimitMode;
    let dir = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(config(dir.path()));
    let mode = driver.cpu_limit_mode();
    let mut spec = launch("alpha-0", 1);
    spec.cpus = 2;
    driver.start_node("alpha", &spec).await.unwrap();
    assert_eq!(healthy(&driver, "alpha-0").await, NodeHealth::Healthy);
    let pid = driver
        .node_pids()
        .into_iter()
        .find(|(_, n, _)| n == "alpha-0")
        .map(|(_, _, pid)| pid)
        .expect("node pid");
    let cgroup = driver.node_cgroup("alpha-0");
    if mode == CpuLimitMode::None {
        eprintln!("cgroups are not writable here: checking the unlimited fallback");
        assert!(cgroup.is_none());
        driver.stop_node("alpha", "alpha-0").await.unwrap();
        return;
    }
    let cgroup = cgroup.expect("a cgroup in a cgroup mode");
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "{pid} not in {}: {procs}",
        cgroup.display()
    );
    assert_eq!(cgroup_cpus(&cgroup), 2.0, "{mode:?}");
    // Restarted with another tier (a new incarnation): the same cgroup, the new quota.
    driver.stop_node("alpha", "alpha-0").await.unwrap();
    assert!(!cgroup.exists(), "the cgroup outlived its node");
    spec.cpus = 1;
    spec.incarnation = 2;
    driver.start_node("alpha", &spec).await.unwrap();
    assert_eq!(cgroup_cpus(&cgroup), 1.0, "{mode:?}");
    driver.stop_node("alpha", "alpha-0").await.unwrap();
    assert!(!cgroup.exists());
    let parent = cgroup.parent().unwrap().to_path_buf();
    drop(driver);
    assert!(!parent.exists(), "the driver's cgroup outlived it");
}

mod builds {
    use super::*;
    use kanmon_control::{
        domain::build::Builder,
        driver::build_local::{run_build, LocalBuildConfig},
    };
    use kanmon_router::Catalog;

    fn catalog() -> Catalog {
        Catalog::new(vec!["3.35.0".parse().unwrap(), "3.36.0".parse().unwrap()])
    }

    /// A game-server source whose build script writes a node program (a wrapper around the
    /// demo node that reports the version it was built against).
    fn source(dir: &std::path::Path) -> std::path::PathBuf {
        let src = dir.join("game");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("build.sh"),
            format!(
                "echo compiling against $KANMON_BUILD_VERSION\n\
                 printf '#!/bin/sh\\necho built-for=%s >&2\\nexec {} \"$@\"\\n' \"$KANMON_BUILD_VERSION\" > \"$KANMON_BUILD_OUTPUT\"\n",
                env!("CARGO_BIN_EXE_kanmon")
            ),
        )
        .unwrap();
        src
    }

    fn cfg(dir: &std::path::Path, command: &str) -> LocalBuildConfig {
        LocalBuildConfig {
            command: command.into(),
            dir: dir.join("builds"),
            timeout: Duration::from_secs(20),
            keep: 5,
            job: Default::default(),
        }
    }

    /// A build of a local directory yields an artifact stored by digest that the local driver
    /// runs as a node program; the log holds the command's output; the work directory goes.
    #[tokio::test]
    async fn a_directory_build_yields_a_node_program_the_driver_runs() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let b = Builder::new(
            "main",
            src.to_str().unwrap(),
            "3.36.0".parse().unwrap(),
            &catalog(),
        )
        .unwrap();
        let out = run_build(&cfg(dir.path(), "sh build.sh"), &b, 1).await;
        let image = out
            .result
            .clone()
            .unwrap_or_else(|e| panic!("{e}: {}", out.log.text()));
        assert!(
            out.log.text().contains("compiling against 3.36.0"),
            "{}",
            out.log.text()
        );
        let digest = out.digest.expect("digest");
        assert!(
            image.ends_with(&format!("main-{}", &digest[..16])),
            "{image}"
        );
        assert!(!dir.path().join("builds/work/main-1").exists());

        let mut c = config(dir.path());
        c.program = image.into();
        let driver = LocalDriver::new(c);
        driver
            .start_node("alpha", &launch("alpha-0", 1))
            .await
            .unwrap();
        assert_eq!(healthy(&driver, "alpha-0").await, NodeHealth::Healthy);
        let path = dir.path().join("logs/alpha/alpha-0.log");
        let mut log = String::new();
        for _ in 0..100 {
            log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains("built-for=3.36.0") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(log.contains("built-for=3.36.0"), "{log}");
        driver.stop_node("alpha", "alpha-0").await.unwrap();
    }

    /// A git source (`file://`) is cloned; a failing command fails the build with its output
    /// in the log; a build past its time is stopped; a source without an artifact fails.
    #[tokio::test]
    async fn git_sources_failures_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path());
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
                .args(args)
                .current_dir(&src)
                .status()
                .unwrap()
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&["add", "."]);
        git(&["commit", "-qm", "game"]);
        let url = format!("file://{}", src.display());
        let b = Builder::new("git", &url, "3.35.0".parse().unwrap(), &catalog()).unwrap();
        let out = run_build(&cfg(dir.path(), "sh build.sh"), &b, 2).await;
        assert!(out.result.is_ok(), "{:?}: {}", out.result, out.log.text());
        assert!(out.log.text().contains("compiling against 3.35.0"));

        let out = run_build(&cfg(dir.path(), "echo broken >&2; exit 3"), &b, 3).await;
        let why = out.result.unwrap_err();
        assert!(why.contains("failed"), "{why}");
        assert!(out.log.text().contains("broken"), "{}", out.log.text());

        let out = run_build(&cfg(dir.path(), "true"), &b, 4).await;
        assert!(out.result.unwrap_err().contains("no artifact"));

        let mut slow = cfg(dir.path(), "sleep 30");
        slow.timeout = Duration::from_millis(1500);
        let started = std::time::Instant::now();
        let out = run_build(&slow, &b, 5).await;
        assert!(out.result.unwrap_err().contains("longer than"));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!dir.path().join("builds/work/git-5").exists());

        // Unsupported versions are refused before anything runs.
        assert!(Builder::new("old", &url, "3.20.0".parse().unwrap(), &catalog()).is_err());
    }
}
