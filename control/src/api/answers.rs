//! The bodies the API answers with, as types: the handlers build them and the OpenAPI document
//! takes its response schemas from them (`ToSchema`), so the document cannot describe a shape
//! the code does not send. Domain and store records inside them (`Operation`, `User`, …) carry
//! their own `ToSchema`, derived next to the serde attributes that decide their shape.

use serde::Serialize;
use utoipa::ToSchema;

use super::views::DeploymentView;
use crate::{
    domain::{notify::Subscription, Grant, Operation, Timestamp},
    driver::node_log::Record,
    store::{Attempt, AuditEntry, DeliveryState, StoredGrant, User},
};

/// `GET /v1/whoami`: the caller and the grants it holds.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Whoami {
    pub(super) user: User,
    pub(super) grants: Vec<Grant>,
}

/// One released version and whether deploys to it are accepted.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct VersionEntry {
    /// `3.37.0` or `3.21.1-r3`.
    pub(super) version: String,
    /// `supported`, `unsupported` or `unknown`.
    #[schema(pattern = "^(supported|unsupported|unknown)$")]
    pub(super) support: &'static str,
    /// The newest release of the catalog.
    pub(super) latest: bool,
}

/// `GET /v1/versions`, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Versions {
    pub(super) versions: Vec<VersionEntry>,
}

/// One zone of the platform's catalog.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ZoneEntry {
    pub(super) zone: String,
    /// Offered only to organizations a platform admin enabled it for.
    pub(super) on_request: bool,
}

/// `GET /v1/zones`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Zones {
    pub(super) zones: Vec<ZoneEntry>,
}

/// One zone as one organization sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct OrgZoneEntry {
    pub(super) zone: String,
    pub(super) on_request: bool,
    /// Whether the organization may create deployments there.
    pub(super) available: bool,
    /// The admin who enabled an on-request zone for the organization.
    pub(super) enabled_by: Option<String>,
    pub(super) enabled_at: Option<Timestamp>,
}

/// `GET /v1/orgs/{org}/zones`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct OrgZones {
    pub(super) org: String,
    pub(super) zones: Vec<OrgZoneEntry>,
}

/// `DELETE /v1/orgs/{org}/zones/{zone}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ZoneDisabled {
    pub(super) org: String,
    pub(super) zone: String,
    /// Always `false`.
    pub(super) enabled: bool,
}

/// A user's new bearer token (`POST /v1/users`): shown once, the store keeps only its hash.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NewUser {
    pub(super) user: User,
    /// Secret: the only time the token is shown.
    pub(super) token: String,
    /// When the token stops working; `null` for `never`.
    pub(super) expires_at: Option<Timestamp>,
}

/// `POST /v1/users/{name}/token`: the replacement token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NewToken {
    pub(super) user: String,
    /// Secret: the only time the token is shown.
    pub(super) token: String,
    /// When the token stops working; `null` for `never`.
    pub(super) expires_at: Option<Timestamp>,
}

/// `GET /v1/users/{name}/grants`: with the ids `DELETE /v1/grants/{id}` takes.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Grants {
    pub(super) grants: Vec<StoredGrant>,
}

/// `GET /v1/audit` and `GET /v1/deployments/{instance}/audit`, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Audit {
    pub(super) audit: Vec<AuditEntry>,
}

/// `GET /v1/deployments`: the deployments the caller may view.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Deployments {
    pub(super) deployments: Vec<DeploymentView>,
}

/// `POST /v1/deployments`: the deployment and its first (queued) deploy.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Created {
    pub(super) deployment: DeploymentView,
    pub(super) operation: Operation,
}

/// `GET /v1/deployments/{instance}/keys` (needs `secrets`, like every field here).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Keys {
    /// Secret: the key game clients authenticate to the server with.
    pub(super) server_key: String,
    /// Secret: the key of the runtime (HTTP) API.
    pub(super) runtime_key: String,
}

/// `GET /v1/deployments/{instance}/operations`, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Operations {
    pub(super) operations: Vec<Operation>,
}

/// `GET /v1/deployments/{instance}/logs` (JSON form), oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Logs {
    pub(super) lines: Vec<Record>,
}

/// One settled UTC day of usage.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UsageDay {
    /// `YYYY-MM-DD`.
    pub(super) date: String,
    /// The day's highest node CPU count.
    pub(super) node_cpus: u32,
    /// The day's highest database CPU count.
    pub(super) db_cpus: u32,
    /// Samples taken that day.
    pub(super) samples: u32,
    /// No sample that day: the last known tier is charged.
    pub(super) carried: bool,
}

/// Today's day, not settled yet.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UsageOpen {
    pub(super) date: String,
    pub(super) node_cpus: u32,
    pub(super) db_cpus: u32,
    pub(super) samples: u32,
}

/// `GET /v1/deployments/{instance}/usage`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Usage {
    pub(super) instance: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) days: Vec<UsageDay>,
    pub(super) in_progress: Option<UsageOpen>,
}

/// `GET .../subscriptions`: an organization's or a deployment's subscriptions (webhook URLs
/// shortened without `secrets`, see `Channel`).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Subscriptions {
    pub(super) subscriptions: Vec<Subscription>,
}

/// `POST .../subscriptions`: the new subscription and, for a webhook, its signing secret,
/// the only time it is shown.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NewSubscription {
    #[serde(flatten)]
    pub(super) subscription: Subscription,
    /// Secret: the webhook's signing secret (64 hex digits), present only with `secrets` where
    /// the subscription lives, and only in this answer. Absent for e-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) secret: Option<String>,
    /// Present instead of `secret` for a webhook created without `secrets`: why it is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) secret_note: Option<&'static str>,
}

/// One message to one subscription, with every try made.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryEntry {
    /// Delivery id (also the `Kanmon-Delivery` header).
    pub(super) id: u64,
    /// The operation it is about.
    pub(super) operation: u64,
    /// Event name (`operation.completed`, …).
    pub(super) event: String,
    pub(super) state: DeliveryState,
    /// Tries made.
    pub(super) attempts: u32,
    /// When it is (or was last) due.
    pub(super) next_at: Timestamp,
    /// Every try, oldest first.
    pub(super) tries: Vec<Attempt>,
}

/// `GET /v1/subscriptions/{id}/deliveries`, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Deliveries {
    pub(super) subscription: u64,
    pub(super) deliveries: Vec<DeliveryEntry>,
}

/// `GET|PUT /v1/deployments/{instance}/console`: the console's hostname and allow-list.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Console {
    pub(super) instance: String,
    /// The console's hostname at the edge.
    pub(super) hostname: String,
    /// The client networks (CIDRs) that may reach it; empty: closed.
    pub(super) allow: Vec<String>,
    /// Whether any network may reach it (`allow` is not empty).
    pub(super) open: bool,
}
