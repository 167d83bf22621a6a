//! The audit log: every user action, allowed or refused.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use crate::domain::Timestamp;

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Allowed and done.
    Allowed,
    /// Refused for lack of a permission.
    Denied,
    /// Allowed but refused by a rule or failed.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "allowed" => Self::Allowed,
            "denied" => Self::Denied,
            _ => Self::Error,
        }
    }
}

/// One audit record: who did what, when, to which deployment, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: u64,
    /// When.
    pub at: Timestamp,
    /// User name (always an authenticated user: requests without a valid token are counted,
    /// not audited).
    pub who: String,
    /// Action name (`deployments.create`, `operations.deploy`, `keys.read`, …).
    pub action: String,
    /// Deployment, if the action was about one.
    pub instance: Option<String>,
    /// Outcome.
    pub outcome: Outcome,
    /// Short detail (missing permission, error message). Never holds secret values.
    pub detail: String,
}

impl Store {
    /// Appends an audit record (`id` is assigned).
    pub fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO audit (at, who, action, instance, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![e.at.0 as i64, e.who, e.action, e.instance, e.outcome.as_str(), e.detail],
        )?;
        Ok(())
    }

    /// Audit records, newest first, of one deployment or of everything.
    pub fn audit_log(
        &self,
        instance: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, at, who, action, instance, outcome, detail FROM audit
             WHERE ?1 IS NULL OR instance = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![instance, limit], |r| {
            Ok(AuditEntry {
                id: r.get::<_, i64>(0)? as u64,
                at: Timestamp(r.get::<_, i64>(1)? as u64),
                who: r.get(2)?,
                action: r.get(3)?,
                instance: r.get(4)?,
                outcome: Outcome::parse(&r.get::<_, String>(5)?),
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
