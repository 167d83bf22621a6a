//! `--log-format json`: every line the binary writes to stderr is one JSON object an
//! indexing pipeline can read (UTC timestamp, level, structured fields).

use std::process::Command;

#[test]
fn kanmon_proxy_with_log_format_json_writes_one_json_object_per_stderr_line() {
    // `ticket-key` exits at once; at debug it logs the open-files limit it raised.
    let out = Command::new(env!("CARGO_BIN_EXE_kanmon-proxy"))
        .args(["--log-format", "json", "ticket-key"])
        .env("RUST_LOG", "debug")
        .env_remove("KANMON_LOG_FORMAT")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("open-files limit")),
        "{stderr}"
    );
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let ts = v["timestamp"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(ts.ends_with('Z'), "not UTC: {line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"].is_object(), "{line}");
    }
}
