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

    /// Revokes and removes the certificate of `hostname` (deployment `instance`, being
    /// deleted); returns the outcome for the delete operation's result. Never blocks the
    /// delete: a CA that cannot be reached is retried later with backoff, and the outcome says
    /// so (`"status": "retrying"`). Its `error` text is stored: it must not hold credentials.
    async fn revoke(&self, instance: &str, hostname: &str) -> Revocation;
}

/// How a revocation on delete went, for one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked at the CA, and the files removed.
    Revoked,
    /// There was no certificate to revoke.
    None,
    /// The CA refused or could not be reached: the certificate stays on disk and is revoked
    /// by a later pass of the keeper, after `retry_in`.
    Retrying {
        /// Why it failed (free of credentials).
        error: String,
        /// When the next attempt is due.
        retry_in: std::time::Duration,
    },
}

impl Revocation {
    /// The outcome's description in an operation result.
    fn to_json(&self, hostname: &str) -> serde_json::Value {
        match self {
            Self::Revoked => serde_json::json!({ "hostname": hostname, "status": "revoked" }),
            Self::None => serde_json::json!({ "hostname": hostname, "status": "none" }),
            Self::Retrying { error, retry_in } => serde_json::json!({
                "hostname": hostname,
                "status": "retrying",
                "error": error,
                "retry_in": humantime::format_duration(*retry_in).to_string(),
            }),
        }
    }
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

/// Carries out `Intent::Revoke` for `hostnames` (the deployment's and its console's), then
/// reports `Event::RevocationFinished` with the outcome as `{"certificates": [...]}` (`Null`
/// when this control plane manages no certificates). Each revocation is audited, a deferred
/// one as an error that names the retry.
pub(super) fn revoke(inner: &Arc<Inner>, instance: String, op: OpId, hostnames: [String; 2]) {
    let certifier = inner.certifier.get().cloned();
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        if let Some(c) = &certifier {
            for hostname in &hostnames {
                let outcome = c.revoke(&instance, hostname).await;
                audit_revocation(&inner, &instance, op, hostname, &outcome);
                outcomes.push(outcome.to_json(hostname));
            }
        }
        let result = match certifier {
            Some(_) => serde_json::json!({ "certificates": outcomes }),
            None => serde_json::Value::Null,
        };
        send(
            &inner,
            &instance,
            Msg::Event(Event::RevocationFinished { op, result }),
        );
    });
}

fn audit_revocation(inner: &Inner, instance: &str, op: OpId, hostname: &str, outcome: &Revocation) {
    let (result, detail) = match outcome {
        Revocation::Revoked => (
            Outcome::Allowed,
            format!("certificate of {hostname} revoked (delete operation {op})"),
        ),
        Revocation::None => return,
        Revocation::Retrying { error, retry_in } => (
            Outcome::Error,
            format!(
                "certificate of {hostname} not revoked (delete operation {op}): {error}; \
                 retried with backoff, next in {}",
                humantime::format_duration(*retry_in)
            ),
        ),
    };
    let entry = AuditEntry {
        id: 0,
        at: now(),
        who: SYSTEM_USER.into(),
        action: "certificates.revoke".into(),
        instance: Some(instance.to_string()),
        outcome: result,
        detail,
    };
    if let Err(e) = inner.store.audit(&entry) {
        tracing::error!(error = %e, instance, "auditing a revocation failed");
    }
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
