//! First-start bootstrap: an administrator and its token, so there is someone to create the
//! other users.

use std::path::Path;

use crate::{
    domain::{Grant, PermissionSet, Scope},
    runtime::{now, random_secret},
    store::{hash_token, Store, StoreError, User},
};

/// Name of the bootstrap administrator.
pub const ADMIN: &str = "admin";

const DONE_KEY: &str = "bootstrapped";

/// Why bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the token file failed.
    #[error("writing admin token to {path}: {source}")]
    TokenFile {
        /// File path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// On the first start against a database, creates the `admin` user with every permission in
/// every organization and writes its token to `token_file` (mode 0600, since the database only
/// keeps a hash and this is the one copy). Returns the token when it was created, `None` on
/// later starts.
pub fn bootstrap_admin(store: &Store, token_file: &Path) -> Result<Option<String>, BootstrapError> {
    if store.meta(DONE_KEY)?.is_some() {
        return Ok(None);
    }
    let token = format!("kmn_{}", random_secret());
    let io = |source| BootstrapError::TokenFile {
        path: token_file.display().to_string(),
        source,
    };
    crate::private::write_file(token_file, format!("{token}\n").as_bytes()).map_err(io)?;
    match store.create_user(&User {
        name: ADMIN.into(),
        service: false,
        admin: true,
        created_at: now(),
        disabled: false,
    }) {
        Ok(()) | Err(StoreError::UserExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // No expiry: this file is how an operator gets back in (disable `admin` to lock it out).
    store.add_token(ADMIN, &hash_token(&token), None)?;
    store.add_grant(&Grant {
        user: ADMIN.into(),
        scope: Scope::Organization { org: "*".into() },
        permissions: PermissionSet::all(),
    })?;
    store.set_meta(DONE_KEY, "1")?;
    Ok(Some(token))
}
