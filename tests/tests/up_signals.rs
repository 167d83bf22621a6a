//! The deployments' PostgreSQL servers follow `kanmon up`'s lifetime whatever ends it: Ctrl-C
//! with its output piped into a `tee` that Ctrl-C ended too (every print of the shutdown
//! fails), and `kill -9`; each time no server of the state directory is left and the next
//! `kanmon up` resumes the deployment on the same data. And a server a previous run left
//! behind is stopped by the PID in its `postmaster.pid`, only once that PID is checked to be
//! that data directory's server. Needs Debian's `postgresql` (scripts/setup.sh installs it).
//! As root these also run from a private (0700) state directory.

use std::{
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use kanmon_control::{cli::Client, up::postgres::PgTools, up::Databases};
use kanmon_tests::up_process::{
    postgres_gone, postgres_processes_under, signal, wait_exit, Output, StateDir, UpOpts, UpProcess,
};
use tokio::net::TcpStream;

fn with_database(output: Output) -> UpOpts {
    UpOpts {
        database: true,
        output,
        extra_args: Vec::new(),
    }
}

fn require_postgres() {
    if let Err(e) = PgTools::find() {
        panic!("{e}");
    }
}

/// The inode of the demo database's `PG_VERSION`: the same after a restart means the data
/// directory was kept, not made anew.
fn data_identity(state: &StateDir) -> u64 {
    let file = state.data_root().join("demo").join("PG_VERSION");
    std::fs::metadata(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .ino()
}

/// The demo deployment's node addresses once its first deploy has completed (bounded wait).
async fn node_addrs(up: &UpProcess) -> Vec<std::net::SocketAddr> {
    let client = Client::new(&format!("http://{}", up.api), up.token());
    let mut done = false;
    for _ in 0..600 {
        // Operation 1 is the demo's certificate, 2 its first deploy.
        let op = client.get("/v1/operations/2").await;
        if op.is_ok_and(|op| op["status"] == "completed") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        done,
        "the first deploy did not complete; log:\n{}",
        up.log()
    );
    let dep = client
        .get("/v1/deployments/demo")
        .await
        .expect("deployment");
    dep["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|n| n["addr"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn nodes_gone(addrs: &[std::net::SocketAddr]) {
    for addr in addrs {
        let mut gone = false;
        for _ in 0..600 {
            if TcpStream::connect(addr).await.is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "node at {addr} outlived kanmon up");
    }
}

/// A second `kanmon up` in `state` resumes: the same token, the first deploy in the history,
/// the same data directory with a server running on it; `end` (a signal name) then stops it
/// cleanly and leaves no server.
async fn resumes(state: &StateDir, token: &str, identity: u64, end: &str) {
    let mut again = UpProcess::start(state.path(), &with_database(Output::File));
    again.served().await;
    assert_eq!(again.token(), token);
    let client = Client::new(&format!("http://{}", again.api), token.to_string());
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
    assert_eq!(
        data_identity(state),
        identity,
        "the data directory was made anew"
    );
    assert!(
        !postgres_processes_under(&state.data_root()).is_empty(),
        "no database server runs for the resumed deployment; log:\n{}",
        again.log()
    );
    let status = again.end_with(end);
    assert!(
        status.is_some_and(|s| s.success()),
        "SIG{end}: {status:?}: {}",
        again.log()
    );
    let left = postgres_gone(&state.data_root(), Duration::from_secs(30)).await;
    assert!(
        left.is_empty(),
        "database processes left after SIG{end}: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_with_output_a_closed_pipe_stops_the_database_and_up_resumes() {
    require_postgres();
    let state = StateDir::new();
    let mut up = UpProcess::start(state.path(), &with_database(Output::PipeToTee));
    let body = up.served().await;
    assert!(body.contains("demo-"), "{body}");
    let (token, identity) = (up.token(), data_identity(&state));
    assert!(!postgres_processes_under(&state.data_root()).is_empty());
    let addrs = node_addrs(&up).await;
    assert_eq!(addrs.len(), 2);

    // Ctrl-C ends `tee` as well: every line kanmon prints while stopping hits a closed pipe.
    up.close_output();
    let status = up.end_with("INT");
    assert!(
        status.is_some_and(|s| s.success()),
        "kanmon up did not stop cleanly ({status:?}); log:\n{}",
        up.log()
    );
    nodes_gone(&addrs).await;
    let left = postgres_gone(&state.data_root(), Duration::from_secs(30)).await;
    assert!(
        left.is_empty(),
        "database processes outlived kanmon up: {left:?}"
    );

    resumes(&state, &token, identity, "INT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_no_database_and_up_resumes_then_sigterm_stops_it() {
    require_postgres();
    let state = StateDir::new();
    let mut up = UpProcess::start(state.path(), &with_database(Output::File));
    up.served().await;
    let (token, identity) = (up.token(), data_identity(&state));
    assert!(!postgres_processes_under(&state.data_root()).is_empty());
    let addrs = node_addrs(&up).await;
    assert_eq!(addrs.len(), 2);

    assert!(up.end_with("KILL").is_some(), "kanmon up survived SIGKILL");
    nodes_gone(&addrs).await;
    let left = postgres_gone(&state.data_root(), Duration::from_secs(60)).await;
    assert!(
        left.is_empty(),
        "database processes outlived a killed kanmon up: {left:?}"
    );

    resumes(&state, &token, identity, "TERM").await;
}

/// `id -u postgres` / `id -g postgres` as root (the server user), else nothing (ourselves).
fn server_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("postgres user id")
    };
    Some((id("-u"), id("-g")))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the server user in `cwd`.
fn as_server_user(program: &Path, cwd: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    c.current_dir(cwd);
    if let Some((uid, gid)) = server_user() {
        c.uid(uid).gid(gid);
    }
    c
}

fn postmaster_pid(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_left_behind_is_stopped_by_its_pid_and_a_stale_pid_file_harms_nobody() {
    require_postgres();
    let tools = PgTools::find().expect("PostgreSQL");
    let state = StateDir::new();
    let dir = state.path().join("postgres");
    let first = Databases::new(&dir).expect("databases");
    tokio::task::block_in_place(|| first.ensure("demo", 1)).expect("first start");
    let root = first.data_root().to_path_buf();
    let data = root.join("demo");
    tokio::task::block_in_place(|| drop(first));
    assert!(postgres_gone(&root, Duration::from_secs(30))
        .await
        .is_empty());

    // A server started the way older kanmon versions did (pg_ctl: detached, parent PID 1).
    let port = kanmon_tests::free_port().port().to_string();
    let out = as_server_user(&tools.bin.join("pg_ctl"), &root)
        .args(["start", "-w", "-t", "60", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(data.join("leftover.log"))
        .args(["-o", &format!("-p {port}")])
        .stdin(Stdio::null())
        .output()
        .expect("pg_ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leftover = postmaster_pid(&data).expect("leftover server's pid");

    let second = Databases::new(&dir).expect("databases");
    tokio::task::block_in_place(|| second.ensure("demo", 1)).expect("start over a leftover");
    let now = postmaster_pid(&data).expect("new server's pid");
    assert_ne!(now, leftover);
    assert!(
        !postgres_processes_under(&root).contains(&leftover),
        "the leftover server {leftover} still runs"
    );
    tokio::task::block_in_place(|| drop(second));
    assert!(postgres_gone(&root, Duration::from_secs(30))
        .await
        .is_empty());

    // A pid file naming a live process of the server user that is no server of this data
    // directory (a reused PID): that process is left alone and the server starts.
    let mut bystander = as_server_user(Path::new("sleep"), Path::new("/"))
        .arg("120")
        .spawn()
        .expect("sleep");
    std::fs::write(
        data.join("postmaster.pid"),
        format!("{}\n{}\n", bystander.id(), data.display()),
    )
    .expect("pid file");
    let third = Databases::new(&dir).expect("databases");
    tokio::task::block_in_place(|| third.ensure("demo", 1)).expect("start over a stale pid file");
    assert!(
        matches!(bystander.try_wait(), Ok(None)),
        "an unrelated process named by a stale pid file was signalled"
    );
    tokio::task::block_in_place(|| drop(third));
    signal(bystander.id(), "KILL");
    assert!(wait_exit(&mut bystander, Duration::from_secs(10)).is_some());
    assert!(postgres_gone(&root, Duration::from_secs(30))
        .await
        .is_empty());
}
