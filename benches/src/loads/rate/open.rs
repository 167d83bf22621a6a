//! Opening the connections of `ws-rate`: each joins its room (`room=<run>-<i / room_size>`)
//! when the node broadcasts, so rooms of one run never mix with another's.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::super::{open_ws_with_query, Failure, WsClient};
use super::RateParams;
use crate::report::Errors;
use crate::target::SharedTarget;

/// Opens `p.connections` WebSockets, at most `p.connect_concurrency` at a time, in order of
/// their index (the index is the connection's id in the messages).
pub(super) async fn open_all(
    target: &SharedTarget,
    p: &RateParams,
    deadline: Instant,
) -> (Vec<WsClient>, Errors) {
    let gate = Arc::new(Semaphore::new(p.connect_concurrency.max(1)));
    // Unique per run: the process id and the start time.
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000)
    );
    let mut tasks = Vec::with_capacity(p.connections);
    for i in 0..p.connections {
        let (target, gate) = (target.clone(), gate.clone());
        let query = p
            .room_size
            .map(|size| format!("room=r{run}-{}", i / size.max(1)));
        let op_timeout = p.limits.op_timeout;
        tasks.push(tokio::spawn(async move {
            let _permit = gate
                .acquire_owned()
                .await
                .map_err(|_| Failure::from("closed"))?;
            if Instant::now() >= deadline {
                return Err("timeout".into());
            }
            open_ws_with_query(&target, query.as_deref(), op_timeout).await
        }));
    }
    let mut open = Vec::with_capacity(p.connections);
    let mut errors = Errors::default();
    for t in tasks {
        match t.await {
            Ok(Ok(ws)) => open.push(ws),
            Ok(Err(kind)) => errors.add(kind),
            Err(_) => errors.add("panic"),
        }
    }
    (open, errors)
}
