//! Plain-text tables and one-line summaries for the CLI.

use serde_json::Value;

/// Renders rows under headers with columns padded to the widest cell.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_uppercase()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// A JSON field as display text (`-` when absent).
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A millisecond timestamp as UTC RFC 3339 to the second (readable and sortable; `-` if
/// absent). `--json` keeps the raw milliseconds.
pub(super) fn time(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |ms| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_seconds(t).to_string()
    })
}

/// One line per operation, for `kanmon ops` and `--wait` progress.
pub(super) fn op_row(op: &Value) -> Vec<String> {
    let progress = match &op["progress"] {
        Value::Null => cell(&op["error"]),
        p => {
            let until = match &p["until"] {
                Value::Null => String::new(),
                t => format!(" until {}", time(t)),
            };
            format!(
                "node {} of {} ({}): {}{until}",
                p["step"],
                p["of"],
                cell(&p["node"]),
                cell(&p["phase"])
            )
        }
    };
    vec![
        cell(&op["id"]),
        cell(&op["kind"]),
        cell(&op["status"]),
        cell(&op["requested_by"]),
        time(&op["requested_at"]),
        time(&op["finished_at"]),
        progress,
    ]
}

/// Headers matching [`op_row`].
pub(super) const OP_HEADERS: [&str; 7] = [
    "id",
    "kind",
    "status",
    "by",
    "requested",
    "finished",
    "progress / error",
];

/// One row per deployment.
pub(super) fn deployment_row(d: &Value) -> Vec<String> {
    let nodes = d["nodes"].as_array().map_or(0, Vec::len);
    let ready = d["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["state"] == "ready").count());
    vec![
        cell(&d["instance"]),
        cell(&d["zone"]),
        cell(&d["type"]),
        cell(&d["version"]),
        format!("{ready}/{nodes}"),
        cell(&d["hostname"]),
    ]
}

/// Headers matching [`deployment_row`].
pub(super) const DEPLOYMENT_HEADERS: [&str; 6] =
    ["instance", "zone", "type", "version", "ready", "hostname"];

/// One row per grant: its id, level, where it applies (`org/title`, `instance`) and what it
/// allows, for `kanmon grants list`.
pub(super) fn grant_row(g: &Value) -> Vec<String> {
    let scope = &g["scope"];
    let place = match scope["level"].as_str() {
        Some("title") => format!("{}/{}", cell(&scope["org"]), cell(&scope["title"])),
        Some("deployment") => cell(&scope["instance"]),
        _ => cell(&scope["org"]),
    };
    let permissions: Vec<String> = g["permissions"]
        .as_array()
        .map(|a| a.iter().map(cell).collect())
        .unwrap_or_default();
    vec![
        cell(&g["id"]),
        cell(&scope["level"]),
        place,
        permissions.join(","),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y");
    }

    #[test]
    fn grant_rows_name_the_scope() {
        let g = serde_json::json!({
            "id": 7, "user": "bob",
            "scope": { "level": "title", "org": "acme", "title": "rpg" },
            "permissions": ["view", "deploy"],
        });
        assert_eq!(grant_row(&g), ["7", "title", "acme/rpg", "view,deploy"]);
        let g = serde_json::json!({
            "id": 8, "scope": { "level": "organization", "org": "*" }, "permissions": [],
        });
        assert_eq!(grant_row(&g), ["8", "organization", "*", ""]);
    }
}
