//! Users, bearer tokens and grants.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{decode, encode, Store, StoreError};
use crate::domain::{Grant, Timestamp};
use utoipa::ToSchema;

/// A user or service user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Unique name.
    pub name: String,
    /// A service user (CI, bots) rather than a person.
    pub service: bool,
    /// May manage users and grants.
    pub admin: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// A disabled user's tokens are refused (and stay refused until the user is enabled).
    #[serde(default)]
    pub disabled: bool,
}

/// A grant as stored, with the id an operator needs to revoke it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredGrant {
    /// Row id: stable for the grant's lifetime and never reused (`AUTOINCREMENT`), so a
    /// revoke by id cannot hit a grant created after the operator listed them.
    pub id: u64,
    /// The grant itself; flattened so the API shows `{id, user, scope, permissions}`.
    #[serde(flatten)]
    pub grant: Grant,
}

/// The stored form of a token: its SHA-256. Tokens are 256 random bits, so a plain hash is
/// enough (no salt or slow hash needed), and a stolen database holds no usable token.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every stored token hash (loaded once when the store opens).
pub(super) fn token_hashes(
    conn: &rusqlite::Connection,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT hash FROM tokens")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Store {
    fn known(&self) -> std::sync::RwLockWriteGuard<'_, std::collections::HashSet<String>> {
        self.known_tokens.write().unwrap_or_else(|p| p.into_inner())
    }

    fn is_known(&self, hash: &str) -> bool {
        self.known_tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(hash)
    }

    /// Creates a user.
    pub fn create_user(&self, u: &User) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO users (name, service, admin, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![u.name, u.service, u.admin, u.created_at.0 as i64],
        )?;
        if n == 0 {
            return Err(StoreError::UserExists(u.name.clone()));
        }
        Ok(())
    }

    /// Adds a token (by its hash) for `user`, working until `expires` (`None`: no expiry).
    pub fn add_token(
        &self,
        user: &str,
        token_hash: &str,
        expires: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO tokens (hash, user, expires_at) VALUES (?1, ?2, ?3)",
            params![token_hash, user, expires.map(|t| t.0 as i64)],
        )?;
        self.known().insert(token_hash.to_string());
        Ok(())
    }

    /// The user a token belongs to, if the token has not expired at `now` and the user is not
    /// disabled.
    pub fn user_by_token(&self, token: &str, now: Timestamp) -> Result<Option<User>, StoreError> {
        let hash = hash_token(token);
        if !self.is_known(&hash) {
            return Ok(None);
        }
        Ok(self
            .conn()
            .query_row(
                "SELECT u.name, u.service, u.admin, u.created_at, u.disabled FROM tokens t
                 JOIN users u ON u.name = t.user
                 WHERE t.hash = ?1 AND u.disabled = 0
                   AND (t.expires_at IS NULL OR t.expires_at > ?2)",
                params![hash, now.0 as i64],
                |r| {
                    Ok(User {
                        name: r.get(0)?,
                        service: r.get(1)?,
                        admin: r.get(2)?,
                        created_at: Timestamp(r.get::<_, i64>(3)? as u64),
                        disabled: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Disables (or enables again) `user`: a disabled user's tokens are refused at once, and
    /// come back only if an admin enables the user (rotate the token too when it leaked).
    pub fn set_disabled(&self, user: &str, disabled: bool) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE users SET disabled = ?2 WHERE name = ?1",
            params![user, disabled],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownUser(user.to_string()));
        }
        Ok(())
    }

    /// Whether a user exists.
    pub fn user_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Adds a grant.
    pub fn add_grant(&self, g: &Grant) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO grants (user, body) VALUES (?1, ?2)",
            params![g.user, encode(g)],
        )?;
        Ok(())
    }

    /// All grants of `user`.
    pub fn grants(&self, user: &str) -> Result<Vec<Grant>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT body FROM grants WHERE user = ?1 ORDER BY id")?;
        let rows = stmt.query_map([user], |r| r.get::<_, String>(0))?;
        rows.map(|r| decode("grant", &r?)).collect()
    }

    /// All grants of `user` with their ids, oldest first.
    pub fn grants_with_ids(&self, user: &str) -> Result<Vec<StoredGrant>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, body FROM grants WHERE user = ?1 ORDER BY id")?;
        let rows = stmt.query_map([user], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        rows.map(|r| {
            let (id, body) = r?;
            Ok(StoredGrant {
                id: id as u64,
                grant: decode("grant", &body)?,
            })
        })
        .collect()
    }

    /// Removes grant `id`; `false` when there was no such grant. Requests load grants afresh
    /// each time, so the revoke takes effect on the user's next request.
    pub fn revoke_grant(&self, id: u64) -> Result<bool, StoreError> {
        // Ids above i64::MAX cannot exist in SQLite; do not let them wrap to a real row.
        let Ok(id) = i64::try_from(id) else {
            return Ok(false);
        };
        let n = self
            .conn()
            .execute("DELETE FROM grants WHERE id = ?1", [id])?;
        Ok(n > 0)
    }

    /// Replaces every token of `user` with `new_hash` (working until `expires`) in one
    /// transaction, so a leaked token stops working at the same instant the new one starts,
    /// and a failure leaves the old tokens in place rather than locking the user out. Returns
    /// how many tokens it removed.
    pub fn rotate_tokens(
        &self,
        user: &str,
        new_hash: &str,
        expires: Option<Timestamp>,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE name = ?1", [user], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Err(StoreError::UnknownUser(user.to_string()));
        }
        let old: Vec<String> = {
            let mut stmt = tx.prepare("SELECT hash FROM tokens WHERE user = ?1")?;
            let rows = stmt.query_map([user], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let removed = tx.execute("DELETE FROM tokens WHERE user = ?1", [user])?;
        tx.execute(
            "INSERT INTO tokens (hash, user, expires_at) VALUES (?1, ?2, ?3)",
            params![new_hash, user, expires.map(|t| t.0 as i64)],
        )?;
        tx.commit()?;
        let mut known = self.known();
        for h in &old {
            known.remove(h);
        }
        known.insert(new_hash.to_string());
        Ok(removed)
    }
}
