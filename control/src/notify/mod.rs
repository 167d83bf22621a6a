//! The delivery worker: sends the pending notification deliveries the store holds (queued
//! in the same transaction as the operation that finished, see [`crate::store`]), logs each
//! try, and schedules retries with the backoff of [`crate::domain::notify::Retry`].
//!
//! It runs beside the operations queue, never in it: a step only writes delivery rows and
//! wakes this task, so a slow or dead receiver delays nobody's operations. At most
//! [`IN_FLIGHT`] deliveries are sent at once, each bounded by its channel's timeout, so one
//! tenant's dead receiver cannot hold up the others' messages either. Pending deliveries are
//! rows in the database: after a restart the worker finds them and goes on.

mod email;
mod webhook;

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::task::JoinSet;

use crate::{
    domain::notify::{Channel, Reach},
    runtime::{now, NotifySettings, Runtime},
    store::{Attempt, Delivery},
};

/// Deliveries sent at the same time.
pub const IN_FLIGHT: usize = 16;

/// The store is looked at this often even without a wake-up (a retry falls due).
const IDLE: Duration = Duration::from_secs(30);

/// How long finished deliveries stay in the log.
pub const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often old finished deliveries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What one try came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    /// HTTP status or SMTP reply code, when there was one.
    status: Option<u16>,
    /// Why it failed; none: delivered.
    error: Option<String>,
}

impl Sent {
    fn ok(status: Option<u16>) -> Self {
        Self {
            status,
            error: None,
        }
    }

    fn failed(status: Option<u16>, error: String) -> Self {
        Self {
            status,
            error: Some(error),
        }
    }
}

/// What every delivery task needs.
struct Ctx {
    rt: Runtime,
    settings: NotifySettings,
    reach: Reach,
    tls: Option<rustls::ClientConfig>,
}

/// Runs the worker until the process ends. Record the control plane's listeners first
/// ([`Runtime::set_listeners`]): webhooks may never reach them.
pub async fn run(rt: Runtime) {
    let settings = rt.settings().notify.clone();
    let tls = match crate::api::tls::client_config(None) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "no TLS roots for https webhooks; they will fail");
            None
        }
    };
    let ctx = Arc::new(Ctx {
        reach: rt.reach(),
        settings,
        tls,
        rt: rt.clone(),
    });
    let wake = rt.delivery_wake();
    let mut tasks: JoinSet<u64> = JoinSet::new();
    let mut busy: HashSet<u64> = HashSet::new();
    let mut pruned = crate::domain::Timestamp(0);
    loop {
        let t = now();
        if t >= pruned.after(PRUNE_EVERY) {
            pruned = t;
            let before = crate::domain::Timestamp(t.0.saturating_sub(KEEP.as_millis() as u64));
            if let Err(e) = rt.store().prune_deliveries(before) {
                tracing::error!(error = %e, "pruning old notification deliveries");
            }
        }
        if busy.len() < IN_FLIGHT {
            match rt.store().due_deliveries(now(), (IN_FLIGHT * 2) as u32) {
                Ok(due) => {
                    for d in due {
                        if busy.len() >= IN_FLIGHT {
                            break;
                        }
                        if busy.insert(d.id) {
                            tasks.spawn(deliver(ctx.clone(), d));
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "reading due notification deliveries"),
            }
        }
        let t = now();
        let pause = match rt.store().next_delivery_at() {
            Ok(Some(at)) if at > t => at.since(t).min(IDLE),
            _ => IDLE,
        };
        tokio::select! {
            Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                Ok(id) => { busy.remove(&id); }
                Err(e) => tracing::error!(error = %e, "a notification delivery task failed"),
            },
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One try of `d`, logged; returns its id.
async fn deliver(ctx: Arc<Ctx>, d: Delivery) -> u64 {
    let store = ctx.rt.store();
    let sub = match store.subscription(d.subscription) {
        Ok(Some(s)) => s,
        // Deleted meanwhile: its deliveries went with it.
        Ok(None) => return d.id,
        Err(e) => {
            tracing::error!(error = %e, "reading a subscription");
            return d.id;
        }
    };
    let at = now();
    let sent = match &sub.channel {
        Channel::Webhook { url } => {
            let secret = match store.subscription_secret(sub.id) {
                Ok(Some(s)) => s,
                _ => return d.id,
            };
            match &ctx.tls {
                Some(tls) => webhook::send(url, &ctx.reach, tls, &secret, &d, at.0 / 1000).await,
                None => Sent::failed(None, "no TLS roots on the control plane".into()),
            }
        }
        Channel::Email { to } => email::send(ctx.settings.smtp.as_ref(), to, &d).await,
    };
    let made = d.attempts + 1;
    let delivered = sent.error.is_none();
    let retry_at = if delivered {
        None
    } else {
        ctx.settings.retry.next(made, now())
    };
    ctx.rt
        .metrics()
        .notification_sent(sub.channel.kind(), delivered, retry_at.is_some());
    let attempt = Attempt {
        attempt: made,
        at,
        status: sent.status,
        error: sent.error,
    };
    if let Err(e) = store.record_attempt(d.id, &attempt, delivered, retry_at) {
        tracing::error!(error = %e, delivery = d.id, "logging a notification delivery");
    }
    d.id
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_mail_names_deployment_operation_and_error() {
        let p = json!({
            "event": "operation.failed",
            "deployment": { "instance": "alpha", "org": "acme", "title": "rpg", "zone": "us-east1" },
            "operation": { "id": 7, "kind": "deploy", "status": "failed", "requested_by": "ann",
                           "error": "node alpha-0 crashed" },
        });
        let (subject, text) = super::email::compose(&p);
        assert_eq!(subject, "[kanmon] alpha: operation 7 (deploy) failed");
        assert!(
            text.contains("Error:        node alpha-0 crashed"),
            "{text}"
        );
        assert!(text.contains("Requested by: ann"), "{text}");
    }
}
