//! Per-request authentication, authorization and auditing.
//!
//! Every handler runs its body through [`App::handle`], which authenticates the bearer token
//! and writes exactly one audit record for each authenticated request, whatever its outcome:
//! allowed, denied (403) or failed. That makes "every user action is audited" a property of the
//! routing code instead of something each handler has to remember. A request without a valid
//! token has no actor: it is answered 401 and counted ([`super::refusals`]), never audited, so a
//! flood of bad tokens cannot grow the audit log or hold the store's lock.

use std::cell::RefCell;

use axum::http::{header::AUTHORIZATION, HeaderMap, StatusCode};

use super::{error::ApiError, refusals::Refusal, App};
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
    /// The deployment the request turned out to be about, when the route does not name it
    /// (found only after authentication, so an anonymous request never reaches the store).
    about: RefCell<Option<String>>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether `token` has the shape of the tokens this control plane issues (`kmn_` and 64 hex
/// digits), so that garbage is refused without a store lookup.
fn well_formed(token: &str) -> bool {
    token
        .strip_prefix("kmn_")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
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
        let token = match bearer(headers) {
            None => return Err(self.refuse(Refusal::Missing)),
            Some(t) if !well_formed(t) => return Err(self.refuse(Refusal::Malformed)),
            Some(t) => t,
        };
        let user = match self.rt.store().user_by_token(token, now()) {
            Ok(Some(user)) => user,
            Ok(None) => return Err(self.refuse(Refusal::Rejected)),
            Err(e) => return Err(e.into()),
        };
        let grants = self.rt.store().grants(&user.name)?;
        let cx = Cx {
            app: self,
            user,
            grants,
            note: RefCell::new(String::new()),
            about: RefCell::new(None),
        };
        let result = body(&cx);
        let (outcome, detail) = match &result {
            Ok(_) => (Outcome::Allowed, cx.note.take()),
            Err(e) => {
                let detail = e
                    .audit_detail
                    .map_or_else(|| e.message.clone(), str::to_string);
                let outcome = if e.status == StatusCode::FORBIDDEN {
                    Outcome::Denied
                } else {
                    Outcome::Error
                };
                (outcome, detail)
            }
        };
        let about = cx.about.take();
        let instance = about.as_deref().or(instance);
        self.audit(&cx.user.name, action, instance, outcome, &detail);
        result
    }

    fn refuse(&self, why: Refusal) -> ApiError {
        self.auth_failures.record(why);
        ApiError::unauthorized()
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

    /// What the caller may see of `dep` beyond `view`.
    pub(crate) fn sight(&self, dep: &Deployment) -> super::views::Sight {
        super::views::Sight {
            secrets: self.has(Permission::Secrets, dep),
            exports: self.has(Permission::Export, dep),
        }
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

    /// Refuses with 403 unless the caller holds `p` on the organization itself (an
    /// organization-level grant: title and deployment grants do not reach that far).
    pub fn require_org(&self, p: Permission, org: &str) -> Result<(), ApiError> {
        let t = Target {
            org,
            title: None,
            instance: None,
        };
        if effective(&self.grants, &self.user.name, &t).contains(p) {
            Ok(())
        } else {
            Err(ApiError::missing(p, &format!("organization {org}")))
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

    /// Records that the request is about deployment `instance` (for the audit record of a
    /// route that names an operation rather than a deployment).
    pub fn about(&self, instance: &str) {
        *self.about.borrow_mut() = Some(instance.to_string());
    }

    /// The deployment `instance`, or 404.
    pub fn deployment(&self, instance: &str) -> Result<Deployment, ApiError> {
        Ok(self.app.rt.deployment(instance)?)
    }
}
