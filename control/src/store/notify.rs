//! Notification subscriptions, their pending deliveries and each delivery's attempts.
//!
//! A finished operation's deliveries are written in the same transaction as the operation
//! ([`enqueue`], called by [`Store::persist`]), so a notification is never lost between "the
//! operation is done" and "someone will be told", even if the process dies right there; the
//! delivery worker picks pending rows up again after a restart.

use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;

use super::{decode, encode, Store, StoreError};
use crate::domain::{
    notify::{payload, route, SubScope, Subscription},
    Deployment, OpId, Operation, Timestamp,
};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next try.
    Pending,
    /// The receiver took it.
    Delivered,
    /// Every try failed.
    Failed,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            _ => Self::Failed,
        }
    }
}

/// One message to one subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Id (also sent as `Kanmon-Delivery`, so receivers can drop duplicates).
    pub id: u64,
    /// The subscription.
    pub subscription: u64,
    /// The operation it is about.
    pub op: OpId,
    /// Event name (`operation.completed`, …).
    pub event: String,
    /// The JSON body sent.
    pub payload: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Tries made.
    pub attempts: u32,
    /// When it is (or was last) due.
    pub next_at: Timestamp,
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// 1 for the first try.
    pub attempt: u32,
    /// When it was made.
    pub at: Timestamp,
    /// The HTTP status (webhooks) or SMTP reply code (e-mail), when one came back.
    pub status: Option<u16>,
    /// Why it failed; `None` when it succeeded.
    pub error: Option<String>,
}

const SUB_COLUMNS: &str = "SELECT id, body FROM subscriptions";

fn sub_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn subs_of(rows: Vec<(i64, String)>) -> Result<Vec<Subscription>, StoreError> {
    rows.into_iter()
        .map(|(id, body)| {
            let mut s: Subscription = decode("subscription", &body)?;
            s.id = id as u64;
            Ok(s)
        })
        .collect()
}

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get::<_, i64>(0)? as u64,
        subscription: r.get::<_, i64>(1)? as u64,
        op: r.get::<_, i64>(2)? as u64,
        event: r.get(3)?,
        payload: r.get(4)?,
        state: DeliveryState::parse(&r.get::<_, String>(5)?),
        attempts: r.get(6)?,
        next_at: Timestamp(r.get::<_, i64>(7)? as u64),
    })
}

const DELIVERY_COLUMNS: &str =
    "SELECT id, subscription, op, event, payload, state, attempts, next_at FROM deliveries";

/// Queues the deliveries of `op` (when it finished) to every subscription that hears it.
/// Idempotent: an operation saved twice as finished is still told once per subscription.
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    dep: &Deployment,
    op: &Operation,
) -> Result<(), StoreError> {
    if !op.status.is_final() {
        return Ok(());
    }
    let rows = {
        let mut stmt = tx.prepare(&format!(
            "{SUB_COLUMNS} WHERE org = ?1 AND (instance IS NULL OR instance = ?2)"
        ))?;
        let rows = stmt.query_map(params![dep.org, dep.instance.as_str()], sub_row)?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    let subs = subs_of(rows)?;
    let Some((event, hit)) = route(&subs, dep, op) else {
        return Ok(());
    };
    if hit.is_empty() {
        return Ok(());
    }
    let body = payload(dep, op, event).to_string();
    let due = op.finished_at.unwrap_or(Timestamp(0));
    for s in hit {
        tx.execute(
            "INSERT OR IGNORE INTO deliveries (subscription, op, event, payload, state, next_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                s.id as i64,
                op.id as i64,
                event.as_str(),
                body,
                DeliveryState::Pending.as_str(),
                due.0 as i64
            ],
        )?;
    }
    Ok(())
}

impl Store {
    /// Saves a new subscription with its signing secret; returns it with its id.
    pub fn insert_subscription(
        &self,
        sub: &Subscription,
        secret: &str,
    ) -> Result<Subscription, StoreError> {
        let instance = match &sub.scope {
            SubScope::Organization { .. } => None,
            SubScope::Deployment { instance } => Some(instance.as_str()),
        };
        let conn = self.conn();
        conn.execute(
            "INSERT INTO subscriptions (org, instance, body, secret) VALUES (?1, ?2, ?3, ?4)",
            params![sub.org, instance, encode(sub), secret],
        )?;
        let mut saved = sub.clone();
        saved.id = conn.last_insert_rowid() as u64;
        Ok(saved)
    }

    /// The subscriptions made at exactly `scope` (an organization's own, or one deployment's).
    pub fn subscriptions(&self, scope: &SubScope) -> Result<Vec<Subscription>, StoreError> {
        let conn = self.conn();
        let rows = match scope {
            SubScope::Organization { org } => {
                let mut stmt = conn.prepare(&format!(
                    "{SUB_COLUMNS} WHERE org = ?1 AND instance IS NULL ORDER BY id"
                ))?;
                let rows = stmt.query_map(params![org], sub_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            SubScope::Deployment { instance } => {
                let mut stmt =
                    conn.prepare(&format!("{SUB_COLUMNS} WHERE instance = ?1 ORDER BY id"))?;
                let rows = stmt.query_map(params![instance], sub_row)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
        };
        subs_of(rows)
    }

    /// One subscription.
    pub fn subscription(&self, id: u64) -> Result<Option<Subscription>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("{SUB_COLUMNS} WHERE id = ?1"),
                params![id.min(i64::MAX as u64) as i64],
                sub_row,
            )
            .optional()?;
        Ok(subs_of(row.into_iter().collect())?.pop())
    }

    /// A subscription's signing secret (for the delivery worker only).
    pub fn subscription_secret(&self, id: u64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT secret FROM subscriptions WHERE id = ?1",
                params![id as i64],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Removes a subscription with its deliveries and their log; false when there was none.
    pub fn delete_subscription(&self, id: u64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM subscriptions WHERE id = ?1",
            params![id.min(i64::MAX as u64) as i64],
        )?;
        Ok(n > 0)
    }

    /// Pending deliveries due at `now`, oldest first (at most `limit`).
    pub fn due_deliveries(&self, now: Timestamp, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{DELIVERY_COLUMNS} WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now.0 as i64, limit], delivery_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending delivery is due.
    pub fn next_delivery_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let at: Option<i64> = self.conn().query_row(
            "SELECT MIN(next_at) FROM deliveries WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(at.map(|t| Timestamp(t as u64)))
    }

    /// Logs a try of delivery `id` and moves it on: delivered, due again at `retry_at`, or
    /// failed for good when no retry is left.
    pub fn record_attempt(
        &self,
        id: u64,
        attempt: &Attempt,
        delivered: bool,
        retry_at: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let state = match (delivered, retry_at) {
            (true, _) => DeliveryState::Delivered,
            (false, Some(_)) => DeliveryState::Pending,
            (false, None) => DeliveryState::Failed,
        };
        let next = retry_at.unwrap_or(attempt.at);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO delivery_attempts (delivery, attempt, at, status, error)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id as i64,
                attempt.attempt,
                attempt.at.0 as i64,
                attempt.status,
                attempt.error
            ],
        )?;
        tx.execute(
            "UPDATE deliveries SET attempts = ?2, state = ?3, next_at = ?4 WHERE id = ?1",
            params![id as i64, attempt.attempt, state.as_str(), next.0 as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets finished deliveries (delivered or failed) whose last try was before `before`,
    /// with their tries, so the log does not grow without end; pending ones are kept.
    pub fn prune_deliveries(&self, before: Timestamp) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM deliveries WHERE state != 'pending' AND next_at < ?1",
            params![before.0.min(i64::MAX as u64) as i64],
        )?)
    }

    /// A subscription's deliveries, newest first (at most `limit`), each with its tries.
    pub fn deliveries(
        &self,
        subscription: u64,
        limit: u32,
    ) -> Result<Vec<(Delivery, Vec<Attempt>)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{DELIVERY_COLUMNS} WHERE subscription = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![subscription as i64, limit], delivery_row)?;
        let list: Vec<Delivery> = rows.collect::<Result<_, _>>()?;
        let mut attempts = conn.prepare(
            "SELECT attempt, at, status, error FROM delivery_attempts WHERE delivery = ?1 ORDER BY attempt",
        )?;
        list.into_iter()
            .map(|d| {
                let tries = attempts
                    .query_map(params![d.id as i64], |r| {
                        Ok(Attempt {
                            attempt: r.get(0)?,
                            at: Timestamp(r.get::<_, i64>(1)? as u64),
                            status: r.get(2)?,
                            error: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((d, tries))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::{
        notify::{Channel, NotifyEvent},
        sim::{catalog, create, keys, zones},
        DeploymentType, OpKind, OpStatus,
    };

    #[test]
    fn a_finished_operation_queues_one_delivery_per_subscription_and_logs_tries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let store = Store::open(&path).unwrap();
        let dep = Deployment::create(
            create(DeploymentType::Development, 1),
            &catalog(),
            &zones(),
            "kanmon.test",
            keys(),
            "ann",
            Timestamp(0),
        )
        .unwrap();
        store.insert_deployment(&dep).unwrap();
        let sub = store
            .insert_subscription(
                &Subscription {
                    id: 0,
                    scope: SubScope::Organization { org: "acme".into() },
                    org: "acme".into(),
                    channel: Channel::Email {
                        to: "ops@example.com".into(),
                    },
                    events: BTreeSet::from([NotifyEvent::Completed]),
                    created_by: "ann".into(),
                    created_at: Timestamp(1),
                },
                "s3cret",
            )
            .unwrap();
        let mut op = Operation::new(3, "alpha", OpKind::Reboot, "ann", Timestamp(2));
        store.persist(&dep, std::slice::from_ref(&op)).unwrap();
        assert!(store
            .due_deliveries(Timestamp(u64::MAX >> 2), 10)
            .unwrap()
            .is_empty());
        op.status = OpStatus::Completed;
        op.finished_at = Some(Timestamp(50));
        store.persist(&dep, &[op.clone(), op.clone()]).unwrap();
        drop(store);
        // Pending deliveries survive a restart.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.next_delivery_at().unwrap(), Some(Timestamp(50)));
        assert!(store.due_deliveries(Timestamp(49), 10).unwrap().is_empty());
        let due = store.due_deliveries(Timestamp(50), 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event, "operation.completed");
        let fail = Attempt {
            attempt: 1,
            at: Timestamp(60),
            status: Some(500),
            error: Some("HTTP 500".into()),
        };
        store
            .record_attempt(due[0].id, &fail, false, Some(Timestamp(70)))
            .unwrap();
        assert!(store.due_deliveries(Timestamp(69), 10).unwrap().is_empty());
        let ok = Attempt {
            attempt: 2,
            at: Timestamp(70),
            status: Some(200),
            error: None,
        };
        store.record_attempt(due[0].id, &ok, true, None).unwrap();
        let log = store.deliveries(sub.id, 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].0.state, DeliveryState::Delivered);
        assert_eq!(log[0].1, [fail, ok]);
        assert_eq!(
            store.subscription_secret(sub.id).unwrap().unwrap(),
            "s3cret"
        );
        assert!(store.delete_subscription(sub.id).unwrap());
        assert!(store.deliveries(sub.id, 10).unwrap().is_empty());
        assert!(!store.delete_subscription(sub.id).unwrap());
    }
}
