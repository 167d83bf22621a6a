//! Certificate operations: when one runs, the [`Certifier`] (the certificate keeper, set by
//! `kanmon up` and by `kanmon serve --cert-dir`) obtains the deployment's certificate and puts
//! it where the edge serves it; the outcome is the operation's, and it is audited.
//!
//! Certificates are issued from the queue, so an issuance never overlaps another operation of
//! the same deployment (a delete waits for it) and every issuance and renewal is on record
//! with who asked (the creating user, or `kanmon` for renewals) and how it ended.

use std::sync::Arc;

use super::{effects::send, now, Inner, Msg};
use crate::{
    domain::{controller::Event, OpId, OpKind, OpStatus, Operation},
    store::{AuditEntry, Outcome},
};

/// The name renewals and re-issuances are queued under (no user asked for them).
pub const SYSTEM_USER: &str = "kanmon";

/// Obtains certificates and puts them in place.
#[async_trait::async_trait]
pub trait Certifier: Send + Sync + 'static {
    /// Obtains a certificate for exactly `hostname` (deployment `instance`) and puts it where
    /// the edge serves it; returns its description for the operation's result. An error's
    /// text is stored in the operation: it must not hold credentials.
    async fn certify(&self, instance: &str, hostname: &str) -> Result<serde_json::Value, String>;
}

/// Carries out `Intent::Certificate` for the deployment's `hostname` and its `console`
/// hostname, then reports `Event::CertificateFinished`. The result describes the deployment's
/// certificate, with the console's under `console`; either failing fails the operation.
pub(super) fn run(
    inner: &Arc<Inner>,
    instance: String,
    op: OpId,
    hostname: String,
    console: String,
) {
    let certifier = inner.certifier.get().cloned();
    let inner = inner.clone();
    tokio::spawn(async move {
        let result = match certifier {
            Some(c) => match c.certify(&instance, &hostname).await {
                Ok(mut own) => c.certify(&instance, &console).await.map(|console| {
                    own["console"] = console;
                    own
                }),
                Err(e) => Err(e),
            },
            None => Err("this control plane manages no certificates (no --cert-dir)".into()),
        };
        send(
            &inner,
            &instance,
            Msg::Event(Event::CertificateFinished { op, result }),
        );
    });
}

/// Audits the certificate operations among `ops` that just finished: who queued it, and how it
/// ended (the operation's error as the detail of a failure).
pub(super) fn audit_finished(inner: &Inner, ops: &[Operation]) {
    for op in ops {
        if op.kind != OpKind::Certificate || !op.status.is_final() {
            continue;
        }
        let (outcome, detail) = match op.status {
            OpStatus::Completed => (Outcome::Allowed, format!("operation {} completed", op.id)),
            _ => (
                Outcome::Error,
                format!(
                    "operation {} failed: {}",
                    op.id,
                    op.error.as_deref().unwrap_or("")
                ),
            ),
        };
        let entry = AuditEntry {
            id: 0,
            at: op.finished_at.unwrap_or_else(now),
            who: op.requested_by.clone(),
            action: "operations.certificate".into(),
            instance: Some(op.instance.clone()),
            outcome,
            detail,
        };
        if let Err(e) = inner.store.audit(&entry) {
            tracing::error!(error = %e, instance = op.instance, "auditing a certificate operation failed");
        }
    }
}
