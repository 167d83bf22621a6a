//! Per-request authentication, authorization and auditing.
//!
//! Every handler runs its body through [`App::handle`], which authenticates the bearer token
//! and writes exactly one audit record for the request, whatever its outcome: allowed, denied
//! (401/403) or failed. That makes "every user action is audited" a property of the routing
//! code instead of something each handler has to remember.

use std::cell::RefCell;

use axum::http::{header::AUTHORIZATION, HeaderMap, StatusCode};

use super::{error::ApiError, App};
use crate::{
    domain::{
        permissions::{effective, Target},
        Deployment, Grant, Permission,
    },
    runtime::now,
    store::{AuditEntry, Outcome, User},
};

/// The authenticated caller of one request.
pub struct Cx<'a> {
    /// The application.
    pub app: &'a App,
    /// Who is calling.
    pub user: User,
    grants: Vec<Grant>,
    note: RefCell<String>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn target(dep: &Deployment) -> Target<'_> {
    Target {
        org: &dep.org,
        title: Some(&dep.title),
        instance: Some(dep.instance.as_str()),
    }
}

impl App {
    /// Authenticates, runs `body`, audits the outcome.
    pub fn handle<T>(
        &self,
        headers: &HeaderMap,
        action: &str,
        instance: Option<&str>,
        body: impl FnOnce(&Cx<'_>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let user = match bearer(headers).map(|t| self.rt.store().user_by_token(t)) {
            Some(Ok(Some(user))) => user,
            Some(Err(e)) => return Err(e.into()),
            _ => {
                let err = ApiError::unauthorized();
                self.audit("anonymous", action, instance, Outcome::Denied, &err.message);
                return Err(err);
            }
        };
        let grants = self.rt.store().grants(&user.name)?;
        let cx = Cx {
            app: self,
            user,
            grants,
            note: RefCell::new(String::new()),
        };
        let result = body(&cx);
        let (outcome, detail) = match &result {
            Ok(_) => (Outcome::Allowed, cx.note.take()),
            Err(e) if e.status == StatusCode::FORBIDDEN => (Outcome::Denied, e.message.clone()),
            Err(e) => (Outcome::Error, e.message.clone()),
        };
        self.audit(&cx.user.name, action, instance, outcome, &detail);
        result
    }

    fn audit(
        &self,
        who: &str,
        action: &str,
        instance: Option<&str>,
        outcome: Outcome,
        detail: &str,
    ) {
        let entry = AuditEntry {
            id: 0,
            at: now(),
            who: who.to_string(),
            action: action.to_string(),
            instance: instance.map(str::to_string),
            outcome,
            detail: detail.to_string(),
        };
        if let Err(e) = self.rt.store().audit(&entry) {
            tracing::error!(error = %e, action, "writing audit record failed");
        }
    }
}

impl Cx<'_> {
    /// Whether the caller holds `p` on `dep`.
    pub fn has(&self, p: Permission, dep: &Deployment) -> bool {
        effective(&self.grants, &self.user.name, &target(dep)).contains(p)
    }

    /// Refuses with 403 unless the caller holds `p` on `dep`.
    pub fn require(&self, p: Permission, dep: &Deployment) -> Result<(), ApiError> {
        if self.has(p, dep) {
            Ok(())
        } else {
            Err(ApiError::missing(
                p,
                &format!("deployment {}", dep.instance),
            ))
        }
    }

    /// Refuses with 403 unless the caller holds `p` on the title (for creating deployments).
    pub fn require_title(&self, p: Permission, org: &str, title: &str) -> Result<(), ApiError> {
        let t = Target {
            org,
            title: Some(title),
            instance: None,
        };
        if effective(&self.grants, &self.user.name, &t).contains(p) {
            Ok(())
        } else {
            Err(ApiError::missing(p, &format!("title {org}/{title}")))
        }
    }

    /// Refuses with 403 unless the caller is an administrator (user and grant management).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.user.admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("admin", "the platform"))
        }
    }

    /// Refuses with 403 unless the caller is an administrator or is `user` itself: people
    /// may look after their own grants and tokens without an admin, but not anyone else's.
    pub fn require_admin_or_self(&self, user: &str) -> Result<(), ApiError> {
        if self.user.admin || self.user.name == user {
            Ok(())
        } else {
            Err(ApiError::forbidden("admin", &format!("user {user}")))
        }
    }

    /// Sets the audit detail of a successful request, for actions whose subject is not a
    /// deployment (which grant was revoked, whose token was rotated). Never pass secrets.
    pub fn note(&self, detail: impl Into<String>) {
        *self.note.borrow_mut() = detail.into();
    }

    /// The deployment `instance`, or 404.
    pub fn deployment(&self, instance: &str) -> Result<Deployment, ApiError> {
        Ok(self.app.rt.deployment(instance)?)
    }
}
