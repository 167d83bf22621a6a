//! `kanmon-bench --log-format json`: the node's diagnostics on stderr are JSON lines whose
//! `level` the local driver reads as their severity.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn node_with_log_format_json_writes_json_lines_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.json");
    std::fs::write(&config, r#"{"KANMON_CONFIG_A":"1"}"#).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kanmon-bench"))
        .args([
            "--log-format",
            "json",
            "node",
            "--listen",
            "127.0.0.1:0",
            "--config-file",
        ])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("KANMON_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Some(Ok(line)) = BufReader::new(stderr).lines().next() {
            if let Err(e) = tx.send(line) {
                eprintln!("the test stopped waiting: {e}");
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    let line = line.expect("a stderr line");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert_eq!(v["fields"]["message"], "node config read", "{line}");
    assert_eq!(v["fields"]["entries"], 1, "{line}");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
}
