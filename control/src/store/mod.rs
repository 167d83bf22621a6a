//! Durable state in an embedded SQLite database: deployments (with their vars and config),
//! the operations log, the audit log, users, tokens and grants.
//!
//! One connection behind a mutex: the control plane's write rate is a handful of rows per
//! operation step, far below what SQLite serialises comfortably, and a single writer makes
//! "deployment and its operations saved in one transaction" trivially true.

mod audit;
mod auth;
mod builds;
mod notify;
mod schema;
mod usage;
mod zones;

use std::{path::Path, sync::Mutex};

use rusqlite::{params, Connection, OptionalExtension};

pub use audit::{AuditEntry, Outcome};
pub use auth::{hash_token, StoredGrant, User};
pub use builds::{BuildRecord, BuildStatus, StoredBuilder};
pub use notify::{Attempt, Delivery, DeliveryState};
pub use zones::ZoneGrant;

use crate::domain::{Deployment, OpId, OpStatus, Operation};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored row did not decode (written by a newer version, or edited by hand).
    #[error("stored {what} does not decode: {source}")]
    Decode {
        /// Which kind of row.
        what: &'static str,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The instance name is taken (names are unique on the platform, deleted ones included,
    /// so a hostname is never reused by another tenant).
    #[error("instance name {0:?} is already taken")]
    InstanceTaken(String),
    /// A user by that name exists.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// No user by that name.
    #[error("user {0:?} not found")]
    UnknownUser(String),
    /// The deployment has a builder by that name.
    #[error("builder {0:?} already exists")]
    BuilderExists(String),
    /// A stored row holds a value the current rules refuse (edited by hand).
    #[error("stored {what} is invalid: {reason}")]
    Invalid {
        /// Which kind of row.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The database file could not be created with owner-only permissions.
    #[error("creating {path}: {source}")]
    File {
        /// The database file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// Hashes of every stored token, so that an unknown token (what a flood of guesses is) is
    /// refused without taking the connection's lock or reading the database.
    known_tokens: std::sync::RwLock<std::collections::HashSet<String>>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|source| StoreError::Decode { what, source })
}

fn encode<T: serde::Serialize>(v: &T) -> String {
    // Our own types always serialize (no maps with non-string keys).
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

impl Store {
    /// Opens (creating if needed) the database at `path`. The file is created 0600 before
    /// SQLite opens it (SQLite gives its WAL and journal files the database file's mode): it
    /// holds every deployment's keys and secret config.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        crate::private::touch(path).map_err(|source| StoreError::File {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(Connection::open(path)?)
    }

    /// A throw-away in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        schema::migrate(&conn)?;
        let known = auth::token_hashes(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            known_tokens: std::sync::RwLock::new(known),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (transactions roll
        // back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts a new deployment, refusing a taken instance name.
    pub fn insert_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn.execute(
            "INSERT OR IGNORE INTO deployments (instance, org, title, deleted, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![d.instance.as_str(), d.org, d.title, d.deleted, encode(d)],
        )?;
        if n == 0 {
            return Err(StoreError::InstanceTaken(d.instance.to_string()));
        }
        Ok(())
    }

    /// Saves a deployment and the operations that changed with it, in one transaction, so a
    /// crash never leaves an operation marked done without the state it produced (or the
    /// reverse), nor without the notifications of its end.
    pub fn persist(&self, d: &Deployment, ops: &[Operation]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE deployments SET deleted = ?2, body = ?3 WHERE instance = ?1",
            params![d.instance.as_str(), d.deleted, encode(d)],
        )?;
        for op in ops {
            tx.execute(
                "INSERT INTO operations (id, instance, status, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET status = excluded.status, body = excluded.body",
                params![op.id as i64, op.instance, op.status.as_str(), encode(op)],
            )?;
            notify::enqueue(&tx, d, op)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// All deployments, deleted ones included, by instance name.
    pub fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT body FROM deployments ORDER BY instance")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| decode("deployment", &r?)).collect()
    }

    /// One deployment.
    pub fn deployment(&self, instance: &str) -> Result<Option<Deployment>, StoreError> {
        let conn = self.conn();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM deployments WHERE instance = ?1",
                [instance],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| decode("deployment", &b)).transpose()
    }

    /// The next free operation id.
    pub fn next_op_id(&self) -> Result<OpId, StoreError> {
        let conn = self.conn();
        let max: Option<i64> =
            conn.query_row("SELECT MAX(id) FROM operations", [], |r| r.get(0))?;
        Ok(max.map_or(1, |m| m as u64 + 1))
    }

    /// A deployment's operations, newest first (at most `limit`).
    pub fn ops(&self, instance: &str, limit: u32) -> Result<Vec<Operation>, StoreError> {
        self.query_ops(
            "SELECT body FROM operations WHERE instance = ?1 ORDER BY id DESC LIMIT ?2",
            params![instance, limit],
        )
    }

    /// A deployment's unfinished operations, oldest first: the queue to reload on start.
    pub fn unfinished_ops(&self, instance: &str) -> Result<Vec<Operation>, StoreError> {
        self.query_ops(
            "SELECT body FROM operations WHERE instance = ?1 AND status IN (?2, ?3) ORDER BY id",
            params![
                instance,
                OpStatus::Pending.as_str(),
                OpStatus::InProgress.as_str()
            ],
        )
    }

    /// One operation.
    pub fn op(&self, id: OpId) -> Result<Option<Operation>, StoreError> {
        Ok(self
            .query_ops(
                "SELECT body FROM operations WHERE id = ?1",
                params![id as i64],
            )?
            .pop())
    }

    fn query_ops(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Operation>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map(params, |r| r.get::<_, String>(0))?;
        rows.map(|r| decode("operation", &r?)).collect()
    }

    /// A small key/value table for settings such as "bootstrap done".
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a meta value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
