//! `kanmon --log-format json`: the control plane's own log lines are JSON objects with a UTC
//! timestamp, the level and the structured fields.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

#[test]
fn kanmon_serve_with_log_format_json_writes_json_lines_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(dir.path().join("k.db"))
        .env("RUST_LOG", "info")
        .env_remove("KANMON_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().take(100) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let serving = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("control plane serving") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let serving = serving.unwrap_or_else(|| panic!("no serving line in {seen:?}"));
    for line in seen.iter().chain([&serving]) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let v: serde_json::Value = serde_json::from_str(&serving).unwrap();
    assert_eq!(v["level"], "INFO", "{serving}");
    assert_eq!(v["fields"]["scheme"], "http", "{serving}");
}
