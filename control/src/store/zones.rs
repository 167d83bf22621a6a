//! On-request zones given to organizations by a platform admin.

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};
use crate::domain::Timestamp;

/// One organization's access to one on-request zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ZoneGrant {
    /// The organization.
    pub org: String,
    /// The zone.
    pub zone: String,
    /// The admin who enabled it.
    pub enabled_by: String,
    /// When.
    pub enabled_at: Timestamp,
}

impl Store {
    /// Enables `zone` for `org` (again: the newest record wins).
    pub fn enable_zone(&self, g: &ZoneGrant) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO zone_grants (org, zone, enabled_by, enabled_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![g.org, g.zone, g.enabled_by, g.enabled_at.0 as i64],
        )?;
        Ok(())
    }

    /// Takes `zone` back from `org`; whether it was enabled. Deployments already there stay.
    pub fn disable_zone(&self, org: &str, zone: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM zone_grants WHERE org = ?1 AND zone = ?2",
            params![org, zone],
        )?;
        Ok(n > 0)
    }

    /// The on-request zones enabled for `org`.
    pub fn zone_grants(&self, org: &str) -> Result<Vec<ZoneGrant>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT org, zone, enabled_by, enabled_at FROM zone_grants WHERE org = ?1 ORDER BY zone",
        )?;
        let rows = stmt.query_map(params![org], |r| {
            Ok(ZoneGrant {
                org: r.get(0)?,
                zone: r.get(1)?,
                enabled_by: r.get(2)?,
                enabled_at: Timestamp(r.get::<_, i64>(3)? as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
