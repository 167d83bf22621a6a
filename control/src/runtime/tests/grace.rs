//! The deployment's shutdown grace under the real runtime, with real node processes (the
//! local driver) and the edge's table: a node with a held connection stays draining in the
//! table until the connection ends or the deployment's `shutdown_grace_sec` passes (the
//! operation shows until when), then gets SIGTERM, and is killed only after the grace.
//!
//! The node is a small Python HTTP server (python3 is a test dependency already, see
//! `scripts/setup.sh`) that follows the local driver's contract and, on SIGTERM, writes the
//! time into `{dir}/{pid}.term`, then exits or (variable `on_term=ignore`) keeps running as
//! a Nakama still finishing its matches would.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::*;
use crate::driver::{LocalDriver, LocalDriverConfig};

const NODE: &str = r#"
import http.server, os, signal, sys, time
marker = os.path.join(sys.argv[1], "%d.term" % os.getpid())
ignore = os.environ.get("KANMON_VAR_ON_TERM") == "ignore"
def term(_signum, _frame):
    with open(marker + ".tmp", "w") as f:
        f.write(repr(time.time()))
    os.rename(marker + ".tmp", marker)
    if not ignore:
        os._exit(0)
signal.signal(signal.SIGTERM, term)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *_args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Health)
print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever(poll_interval=0.05)
"#;

/// Seconds since the epoch, as the node writes them.
fn secs(t: SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn ms(t: SystemTime) -> u64 {
    (secs(t) * 1000.0) as u64
}

/// When the node with `pid` got SIGTERM, once it did.
fn termed(dir: &Path, pid: u32) -> Option<f64> {
    std::fs::read_to_string(dir.join(format!("{pid}.term")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn pid_of(driver: &LocalDriver) -> u32 {
    let pids = driver.node_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0].2
}

fn node_state(table: &HealthTable) -> Option<(NodeState, u64)> {
    let snap = table.load();
    let dep = snap.find("alpha", "us-east1")?;
    let node = dep.nodes().iter().find(|n| n.id() == "alpha-0")?;
    Some((node.state(), node.stats().active()))
}

/// Waits (bounded) until the edge's table shows alpha-0 ready: the step that completes an
/// operation stores it before it publishes to the edge, so a reader of the store can be first.
async fn published_ready(table: &HealthTable) {
    for _ in 0..500 {
        if node_state(table).is_some_and(|s| s.0 == NodeState::Ready) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("alpha-0 never published ready: {:?}", node_state(table));
}

fn set_config(key: &str, value: &str) -> OpKind {
    OpKind::SetConfig {
        config: BTreeMap::from([(key.to_string(), value.to_string())]),
        secret_config: BTreeMap::new(),
        remove_config: Default::default(),
        remove_secret_config: Default::default(),
    }
}

/// Submits `kind` and waits for it to complete.
async fn run(rt: &Runtime, kind: OpKind) {
    let op = rt.submit("alpha", kind, "ann").unwrap();
    let done = finished(rt, op.id).await;
    assert_eq!(done.status, OpStatus::Completed, "{done:?}");
}

/// Submits a reboot and checks that its drain shows the deployment's grace as `until`.
fn reboot(rt: &Runtime, grace_secs: u64) -> u64 {
    let before = SystemTime::now();
    let op = rt.submit("alpha", OpKind::Reboot, "ann").unwrap();
    let after = SystemTime::now();
    let p = op.progress.clone().expect("the reboot started at once");
    assert_eq!(p.phase, "draining", "{p:?}");
    let until = p.until.expect("the drain shows when it ends").0;
    let grace = grace_secs * 1000;
    assert!(
        (ms(before) + grace..=ms(after) + grace).contains(&until),
        "until {until} is not {grace_secs} s after the reboot started ({}..{})",
        ms(before),
        ms(after)
    );
    op.id
}

struct Setup {
    rt: Runtime,
    table: Arc<HealthTable>,
    driver: Arc<LocalDriver>,
    markers: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let markers = dir.path().join("markers");
    std::fs::create_dir(&markers).unwrap();
    let mut node = LocalDriverConfig::demo_node("python3", dir.path().join("logs"));
    node.args = vec!["-c".into(), NODE.into(), markers.to_str().unwrap().into()];
    // Short, so the test is quick; long enough to cover the node's own delay in noting
    // the SIGTERM (the kill is measured against the time it wrote).
    node.exit_slack = Duration::from_secs(1);
    let driver = Arc::new(LocalDriver::new(node));
    let table = Arc::new(HealthTable::new());
    let mut s = settings();
    // The platform's cap: well above the deployments' own graces here.
    s.timings.grace = Duration::from_secs(120);
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        s,
        Arc::new(ProcessDriver::new(driver.clone())),
        edge(&table),
    )
    .unwrap();
    let (_, first) = rt
        .create(request(DeploymentType::Development, 1), "ann")
        .unwrap();
    assert_eq!(finished(&rt, first.id).await.status, OpStatus::Completed);
    Setup {
        rt,
        table,
        driver,
        markers,
        _dir: dir,
    }
}

/// With a long grace (60 s), the held connection is what the drain waits for: the node
/// stays draining (and gets no SIGTERM) while it is held, and its end ends the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_keeps_its_connection_until_it_ends_within_the_grace() {
    let Setup {
        rt,
        table,
        driver,
        markers,
        _dir,
    } = setup().await;
    run(&rt, set_config("shutdown_grace_sec", "60")).await;
    let pid = pid_of(&driver);
    published_ready(&table).await;
    let conn = table.pick("alpha", "us-east1", 0).unwrap();
    assert_eq!(conn.node().id(), "alpha-0");

    let op = reboot(&rt, 60);
    // Held: the edge keeps it draining, the process runs on untouched.
    for _ in 0..50 {
        assert_eq!(node_state(&table), Some((NodeState::Draining, 1)));
        assert!(termed(&markers, pid).is_none(), "SIGTERM while connected");
        assert!(alive(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conn);
    // The connection's end ends the drain long before the 60 s (`finished` waits 10 s).
    let done = finished(&rt, op).await;
    assert_eq!(done.status, OpStatus::Completed, "{done:?}");
    assert!(termed(&markers, pid).is_some(), "stopped without SIGTERM");
    published_ready(&table).await;
    assert_ne!(pid_of(&driver), pid, "the node was replaced");
}

/// With a short grace (2 s) and a connection that outlives it, the node stays draining for
/// the whole grace, then gets SIGTERM; ignoring it, it is killed only after its grace again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_is_stopped_after_the_grace_and_killed_only_after_it() {
    let Setup {
        rt,
        table,
        driver,
        markers,
        _dir,
    } = setup().await;
    run(&rt, set_config("shutdown_grace_sec", "2")).await;
    run(
        &rt,
        OpKind::SetVars {
            vars: BTreeMap::from([("on_term".to_string(), "ignore".to_string())]),
        },
    )
    .await;
    let pid = pid_of(&driver);
    published_ready(&table).await;
    let conn = table.pick("alpha", "us-east1", 0).unwrap();

    let started = SystemTime::now();
    let op = reboot(&rt, 2);
    // Draining in the edge's table, connection and all, until the SIGTERM.
    let mut term = None;
    for _ in 0..500 {
        term = termed(&markers, pid);
        if term.is_some() {
            break;
        }
        assert_eq!(node_state(&table), Some((NodeState::Draining, 1)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = term.expect("no SIGTERM within 10 s");
    // (Less 10 ms: the domain's clock is in whole milliseconds.)
    assert!(
        term >= secs(started) + 2.0 - 0.01,
        "SIGTERM {:.3} s after the drain began, before its 2 s grace",
        term - secs(started)
    );
    // It ignores SIGTERM: the driver waits its grace, then kills it.
    let mut gone = None;
    for _ in 0..500 {
        if !alive(pid) {
            gone = Some(secs(SystemTime::now()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = gone.expect("the node outlived its grace by 10 s");
    assert!(
        gone >= term + 2.0,
        "killed {:.3} s after SIGTERM, before its 2 s grace",
        gone - term
    );
    let done = finished(&rt, op).await;
    assert_eq!(done.status, OpStatus::Completed, "{done:?}");
    drop(conn);
}
