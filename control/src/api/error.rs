//! API errors: a status code and a JSON body that says which rule or permission failed.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{DomainError, Permission},
    runtime::RuntimeError,
    store::StoreError,
};

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// For 403: the permission the caller lacks (`admin` for user management).
    pub missing: Option<&'static str>,
    /// What the audit log records instead of `message`, when the message may echo request
    /// input (a decoder error can quote a secret value the caller sent).
    pub audit_detail: Option<&'static str>,
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            missing: None,
            audit_detail: None,
        }
    }

    /// A 401: no token, or an unknown one.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: "a valid bearer token is required".into(),
            missing: None,
            audit_detail: None,
        }
    }

    /// A 403 naming the missing permission.
    pub fn forbidden(missing: &'static str, on: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: format!("missing permission '{missing}' on {on}"),
            missing: Some(missing),
            audit_detail: None,
        }
    }

    /// A 403 for a missing lifecycle permission.
    pub fn missing(p: Permission, on: &str) -> Self {
        Self::forbidden(p.as_str(), on)
    }

    /// A 400 for a request body the JSON extractor refused: the caller sees why, the audit log
    /// only which kind of refusal it was.
    pub fn bad_body(rejection: &axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        let kind = match rejection {
            R::JsonDataError(_) => "request body does not match the expected fields",
            R::JsonSyntaxError(_) => "request body is not valid JSON",
            R::MissingJsonContentType(_) => "request body is not application/json",
            _ => "request body could not be read",
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            message: rejection.body_text(),
            missing: None,
            audit_detail: Some(kind),
        }
    }

    /// A 409: the request conflicts with the current state (a limit, a deleted deployment).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            message: message.into(),
            missing: None,
            audit_detail: None,
        }
    }

    /// A 422: well-formed, but the platform cannot do it (e.g. nothing configured for it).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            missing: None,
            audit_detail: None,
        }
    }

    /// A 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: what.into(),
            missing: None,
            audit_detail: None,
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match e {
            DomainError::PermanentChoice { .. }
            | DomainError::DeleteProtected
            | DomainError::Deleted
            | DomainError::CertificateQueued
            | DomainError::Downgrade { .. }
            | DomainError::NotADowngrade { .. }
            | DomainError::DatabaseCpuDown { .. } => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self {
            status,
            message: e.to_string(),
            missing: None,
            audit_detail: None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::InstanceTaken(_)
            | StoreError::UserExists(_)
            | StoreError::BuilderExists(_) => StatusCode::CONFLICT,
            StoreError::UnknownUser(_) => StatusCode::NOT_FOUND,
            _ => {
                tracing::error!(error = %e, "store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self {
            status,
            message: e.to_string(),
            missing: None,
            audit_detail: None,
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Domain(d) => d.into(),
            RuntimeError::Store(s) => s.into(),
            RuntimeError::NotFound(what) => Self::not_found(format!("{what} not found")),
            // Only `Runtime::start` registers metrics; no request gets here.
            RuntimeError::Metrics(m) => {
                tracing::error!(error = %m, "metrics failure");
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "internal error".into(),
                    missing: None,
                    audit_detail: None,
                }
            }
        }
    }
}

/// The body of every error answer (the OpenAPI document's `ErrorBody`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
    /// For 403: the permission the caller lacks (`admin` for user management).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_permission: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            missing_permission: self.missing,
        };
        (self.status, Json(body)).into_response()
    }
}
