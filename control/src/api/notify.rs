//! Notification subscriptions: `/v1/orgs/{org}/subscriptions`,
//! `/v1/deployments/{instance}/subscriptions`, `/v1/subscriptions/{id}` and its
//! `/deliveries` log. Reading needs `view` and managing needs `edit` at the subscription's
//! level (the organization, or the deployment); the signing secret is shown once, at
//! creation, and only to a caller with `secrets` there, and so is a webhook URL in full (URLs
//! of chat webhooks carry their token in the path).

use std::collections::BTreeSet;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    answers::{Deliveries, DeliveryEntry, NewSubscription, Subscriptions},
    context::Cx,
    deployments::Limit,
    error::{ApiError, ErrorBody},
    App, Body,
};
use crate::{
    domain::{
        notify::{check_url, Channel, NotifyEvent, SubScope, Subscription},
        Permission,
    },
    runtime::{now, random_secret},
};

/// Subscriptions one organization or deployment may hold: each costs sends on every
/// operation, and a tenant must not turn the control plane into a mailer.
const MAX_PER_SCOPE: usize = 20;

/// Body of `POST .../subscriptions`: exactly one of `webhook` and `email`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// An http(s) URL the control plane may reach (not loopback, private or link-local).
    webhook: Option<String>,
    /// An e-mail address (needs `[smtp]` in the control plane's configuration).
    email: Option<String>,
    /// Event names (`operation.completed`, `operation.failed`, `operation.superseded`);
    /// default: every event.
    events: Option<Vec<String>>,
}

/// Why a webhook's creation answer has no secret, for a caller without `secrets`.
const SECRET_NOTE: &str =
    "the signing secret is shown only to holders of the secrets permission, and only now";

/// A webhook URL as someone without `secrets` sees it: scheme, host and port only.
fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", u.scheme(), u.host_str().unwrap_or(""))
        }
        Err(_) => "<redacted>".into(),
    }
}

/// The subscription as the caller may see it: without `secrets`, a webhook's URL loses its
/// path and query (where chat webhooks carry their token).
fn sight(s: &Subscription, secrets: bool) -> Subscription {
    let mut s = s.clone();
    if let Channel::Webhook { url } = &mut s.channel {
        if !secrets {
            *url = redacted_url(url);
        }
    }
    s
}

/// Refuses with 403 unless the caller holds `p` where `sub` lives.
fn require_at(cx: &Cx<'_>, p: Permission, scope: &SubScope) -> Result<(), ApiError> {
    match scope {
        SubScope::Organization { org } => cx.require_org(p, org),
        SubScope::Deployment { instance } => cx.require(p, &cx.deployment(instance)?),
    }
}

fn has_at(cx: &Cx<'_>, p: Permission, scope: &SubScope) -> bool {
    require_at(cx, p, scope).is_ok()
}

fn events(names: Option<Vec<String>>) -> Result<BTreeSet<NotifyEvent>, ApiError> {
    let Some(names) = names else {
        return Ok(NotifyEvent::ALL.into_iter().collect());
    };
    let set = names
        .iter()
        .map(|n| {
            NotifyEvent::parse(n).ok_or_else(|| {
                let known: Vec<&str> = NotifyEvent::ALL.iter().map(|e| e.as_str()).collect();
                ApiError::bad_request(format!(
                    "events: unknown event {n:?} (known: {})",
                    known.join(", ")
                ))
            })
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if set.is_empty() {
        return Err(ApiError::bad_request("events: name at least one event"));
    }
    Ok(set)
}

fn channel(cx: &Cx<'_>, body: &CreateBody) -> Result<Channel, ApiError> {
    match (&body.webhook, &body.email) {
        (Some(url), None) => {
            check_url(url, &cx.app.rt.reach()).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(Channel::Webhook { url: url.clone() })
        }
        (None, Some(to)) => {
            if cx.app.rt.settings().notify.smtp.is_none() {
                return Err(ApiError::unprocessable(
                    "e-mail notifications need an SMTP server in the control plane's configuration ([smtp])",
                ));
            }
            let addr: lettre::Address = to
                .parse()
                .map_err(|e| ApiError::bad_request(format!("email: {e}")))?;
            Ok(Channel::Email {
                to: addr.to_string(),
            })
        }
        _ => Err(ApiError::bad_request(
            "give exactly one of webhook (an http(s) URL) and email (an address)",
        )),
    }
}

fn create(
    cx: &Cx<'_>,
    scope: SubScope,
    org: String,
    body: Body<CreateBody>,
) -> Result<(StatusCode, Json<NewSubscription>), ApiError> {
    require_at(cx, Permission::Edit, &scope)?;
    let body = super::body(body)?;
    let channel = channel(cx, &body)?;
    let events = events(body.events)?;
    let store = cx.app.rt.store();
    if store.subscriptions(&scope)?.len() >= MAX_PER_SCOPE {
        return Err(ApiError::conflict(format!(
            "at most {MAX_PER_SCOPE} subscriptions here; remove one first"
        )));
    }
    let secret = random_secret();
    let sub = store.insert_subscription(
        &Subscription {
            id: 0,
            scope,
            org,
            channel,
            events,
            created_by: cx.user.name.clone(),
            created_at: now(),
        },
        &secret,
    )?;
    let secrets = has_at(cx, Permission::Secrets, &sub.scope);
    cx.note(format!("{} subscription {}", sub.channel.kind(), sub.id));
    let webhook = matches!(sub.channel, Channel::Webhook { .. });
    Ok((
        StatusCode::CREATED,
        Json(NewSubscription {
            subscription: sight(&sub, secrets),
            secret: (webhook && secrets).then_some(secret),
            secret_note: (webhook && !secrets).then_some(SECRET_NOTE),
        }),
    ))
}

fn list(cx: &Cx<'_>, scope: &SubScope) -> Result<Json<Subscriptions>, ApiError> {
    require_at(cx, Permission::View, scope)?;
    let secrets = has_at(cx, Permission::Secrets, scope);
    let subscriptions = cx
        .app
        .rt
        .store()
        .subscriptions(scope)?
        .iter()
        .map(|s| sight(s, secrets))
        .collect();
    Ok(Json(Subscriptions { subscriptions }))
}

/// Subscribe a webhook or an e-mail address to the end of every operation of an organization's
/// deployments.
///
/// Needs `edit` on the organization (an organization-level grant); the signing secret needs
/// `secrets` there as well.
#[utoipa::path(post, path = "/v1/orgs/{org}/subscriptions", tag = "notifications", operation_id = "create_org_subscription",
    params(("org" = String, Path, description = "Organization")), request_body = CreateBody,
    responses(
        (status = 201, description = "The subscription; a webhook's signing secret (secret, shown only here and only with `secrets`)", body = NewSubscription),
        (status = 400, description = "Bad body, organization name, URL, address or event", body = ErrorBody),
        (status = 403, description = "Missing `edit` on the organization", body = ErrorBody),
        (status = 409, description = "The organization holds the most subscriptions allowed (20)", body = ErrorBody),
        (status = 422, description = "An e-mail subscription, but no SMTP server is configured", body = ErrorBody),
    ))]
pub(super) async fn org_create(
    State(app): State<App>,
    headers: HeaderMap,
    Path(org): Path<String>,
    body: Body<CreateBody>,
) -> Result<(StatusCode, Json<NewSubscription>), ApiError> {
    app.handle(&headers, "subscriptions.create", None, |cx| {
        super::support::check_org(&org)?;
        create(
            cx,
            SubScope::Organization { org: org.clone() },
            org.clone(),
            body,
        )
    })
}

/// An organization's subscriptions.
///
/// Needs `view` on the organization; webhook URLs are shown in full only with `secrets`.
#[utoipa::path(get, path = "/v1/orgs/{org}/subscriptions", tag = "notifications", operation_id = "list_org_subscriptions",
    params(("org" = String, Path, description = "Organization")),
    responses(
        (status = 200, description = "Subscriptions", body = Subscriptions),
        (status = 400, description = "Bad organization name", body = ErrorBody),
        (status = 403, description = "Missing `view` on the organization", body = ErrorBody),
    ))]
pub(super) async fn org_list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Result<Json<Subscriptions>, ApiError> {
    app.handle(&headers, "subscriptions.list", None, |cx| {
        super::support::check_org(&org)?;
        list(cx, &SubScope::Organization { org: org.clone() })
    })
}

/// Subscribe a webhook or an e-mail address to the end of a deployment's operations.
///
/// Needs `edit` on the deployment; the signing secret needs `secrets` there as well.
#[utoipa::path(post, path = "/v1/deployments/{instance}/subscriptions", tag = "notifications", operation_id = "create_deployment_subscription",
    params(("instance" = String, Path, description = "Instance name")), request_body = CreateBody,
    responses(
        (status = 201, description = "The subscription; a webhook's signing secret (secret, shown only here and only with `secrets`)", body = NewSubscription),
        (status = 400, description = "Bad body, URL, address or event", body = ErrorBody),
        (status = 403, description = "Missing `edit` on the deployment", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
        (status = 409, description = "The deployment is deleted, or holds the most subscriptions allowed (20)", body = ErrorBody),
        (status = 422, description = "An e-mail subscription, but no SMTP server is configured", body = ErrorBody),
    ))]
pub(super) async fn dep_create(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<CreateBody>,
) -> Result<(StatusCode, Json<NewSubscription>), ApiError> {
    app.handle(&headers, "subscriptions.create", Some(&instance), |cx| {
        let dep = cx.deployment(&instance)?;
        cx.require(Permission::Edit, &dep)?;
        if dep.deleted {
            return Err(ApiError::conflict(format!(
                "deployment {instance} is deleted"
            )));
        }
        let scope = SubScope::Deployment {
            instance: instance.clone(),
        };
        create(cx, scope, dep.org.clone(), body)
    })
}

/// A deployment's own subscriptions (not its organization's).
///
/// Needs `view` on the deployment; webhook URLs are shown in full only with `secrets`.
#[utoipa::path(get, path = "/v1/deployments/{instance}/subscriptions", tag = "notifications", operation_id = "list_deployment_subscriptions",
    params(("instance" = String, Path, description = "Instance name")),
    responses(
        (status = 200, description = "Subscriptions", body = Subscriptions),
        (status = 403, description = "Missing `view` on the deployment", body = ErrorBody),
        (status = 404, description = "No such deployment", body = ErrorBody),
    ))]
pub(super) async fn dep_list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Subscriptions>, ApiError> {
    app.handle(&headers, "subscriptions.list", Some(&instance), |cx| {
        list(
            cx,
            &SubScope::Deployment {
                instance: instance.clone(),
            },
        )
    })
}

/// The subscription `id` if the caller may see it (404 otherwise: its existence is none of
/// another tenant's business).
fn visible(cx: &Cx<'_>, id: u64) -> Result<Subscription, ApiError> {
    let gone = || ApiError::not_found(format!("subscription {id} not found"));
    let sub = cx.app.rt.store().subscription(id)?.ok_or_else(gone)?;
    if let SubScope::Deployment { instance } = &sub.scope {
        cx.about(instance);
    }
    if !has_at(cx, Permission::View, &sub.scope) {
        return Err(gone());
    }
    Ok(sub)
}

/// One subscription.
///
/// Needs `view` where it lives (otherwise 404); its webhook URL is shown in full only with
/// `secrets` there.
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "notifications", operation_id = "show_subscription",
    params(("id" = u64, Path, description = "Subscription id")),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 404, description = "No such subscription, or one the caller may not view", body = ErrorBody),
    ))]
pub(super) async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Subscription>, ApiError> {
    app.handle(&headers, "subscriptions.read", None, |cx| {
        let sub = visible(cx, id)?;
        Ok(Json(sight(
            &sub,
            has_at(cx, Permission::Secrets, &sub.scope),
        )))
    })
}

/// Remove a subscription; its pending deliveries are not sent.
///
/// Needs `edit` where it lives (without `view` there: 404).
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "notifications", operation_id = "remove_subscription",
    params(("id" = u64, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 403, description = "Missing `edit` where the subscription lives", body = ErrorBody),
        (status = 404, description = "No such subscription, or one the caller may not view", body = ErrorBody),
    ))]
pub(super) async fn remove(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    app.handle(&headers, "subscriptions.delete", None, |cx| {
        let sub = visible(cx, id)?;
        require_at(cx, Permission::Edit, &sub.scope)?;
        cx.app.rt.store().delete_subscription(id)?;
        cx.note(format!("{} subscription {id}", sub.channel.kind()));
        Ok(StatusCode::NO_CONTENT)
    })
}

/// A subscription's deliveries, newest first, each with every try (status, error, time).
///
/// Needs `view` where the subscription lives (otherwise 404).
#[utoipa::path(get, path = "/v1/subscriptions/{id}/deliveries", tag = "notifications", operation_id = "subscription_deliveries",
    params(("id" = u64, Path, description = "Subscription id"), Limit),
    responses(
        (status = 200, description = "Deliveries", body = Deliveries),
        (status = 400, description = "A path or query parameter of the wrong type (plain text, from the router)", content_type = "text/plain", body = String),
        (status = 404, description = "No such subscription, or one the caller may not view", body = ErrorBody),
    ))]
pub(super) async fn deliveries(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Query(limit): Query<Limit>,
) -> Result<Json<Deliveries>, ApiError> {
    app.handle(&headers, "subscriptions.deliveries", None, |cx| {
        visible(cx, id)?;
        let deliveries = cx
            .app
            .rt
            .store()
            .deliveries(id, limit.get())?
            .into_iter()
            .map(|(d, tries)| DeliveryEntry {
                id: d.id,
                operation: d.op,
                event: d.event,
                state: d.state,
                attempts: d.attempts,
                next_at: d.next_at,
                tries,
            })
            .collect();
        Ok(Json(Deliveries {
            subscription: id,
            deliveries,
        }))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_path_and_query_without_secrets() {
        assert_eq!(
            super::redacted_url("https://hooks.example:8443/T0/B1/xyz?token=1"),
            "https://hooks.example:8443/…"
        );
        assert_eq!(
            super::redacted_url("http://a.example/x"),
            "http://a.example/…"
        );
    }
}
