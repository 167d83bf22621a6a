//! Progress lines for `kanmon up`: operations and node states as they change.

use std::{
    collections::BTreeMap,
    fmt::Display,
    io::Write,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::{domain::OpStatus, runtime::Runtime};

/// Prints a line to stdout whenever an operation or a node of any deployment changes, until
/// the task is dropped. Polls the runtime every `every`.
pub async fn print_progress(rt: Runtime, every: Duration) {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    // The first pass skips operations that had finished before we started (a resumed state
    // directory has a history); `kanmon ops` shows those.
    let mut first = true;
    loop {
        for dep in rt.deployments() {
            if dep.deleted {
                continue;
            }
            let name = dep.instance.to_string();
            for n in &dep.nodes {
                let line = format!(
                    "node {} {:?}{}",
                    n.id,
                    n.state,
                    n.addr.map(|a| format!(" at {a}")).unwrap_or_default()
                );
                show(&mut seen, format!("{name}/node/{}", n.id), &name, line);
            }
            let Ok(ops) = rt.store().ops(&name, 5) else {
                continue;
            };
            for op in ops {
                let mut line = format!(
                    "op {} {} by {}: {}",
                    op.id,
                    op.kind.name(),
                    op.requested_by,
                    match op.status {
                        OpStatus::Pending => "pending",
                        OpStatus::InProgress => "in progress",
                        OpStatus::Completed => "completed",
                        OpStatus::Failed => "failed",
                    }
                );
                if let (OpStatus::InProgress, Some(p)) = (op.status, &op.progress) {
                    line.push_str(&format!(
                        " (node {} of {}: {} {})",
                        p.step, p.of, p.node, p.phase
                    ));
                }
                if let Some(e) = &op.error {
                    line.push_str(&format!(": {e}"));
                }
                let key = format!("{name}/op/{}", op.id);
                if first && op.finished_at.is_some() {
                    seen.insert(key, line);
                    continue;
                }
                show(&mut seen, key, &name, line);
            }
        }
        first = false;
        tokio::time::sleep(every).await;
    }
}

fn show(seen: &mut BTreeMap<String, String>, key: String, instance: &str, line: String) {
    if seen.get(&key) != Some(&line) {
        say(format_args!("[{}] {instance}: {line}", clock()));
        seen.insert(key, line);
    }
}

/// `HH:MM:SS` (UTC) of the wall clock.
fn clock() -> String {
    let secs = crate::runtime::now().0 / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Set once a line could not be written.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `text` and a newline to stdout. Never fails or panics (`println!` panics): stdout is
/// often a pipe into `tee` or a terminal that Ctrl-C has already closed, and shutting down —
/// stopping nodes and databases — must go on regardless. The first failure is logged.
pub fn say(text: impl Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if !STDOUT_GONE.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "stdout is not writable; progress lines are dropped");
        }
    }
}
