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
use serde_json::{json, Value};

use super::{context::Cx, deployments::Limit, error::ApiError, App, Body};
use crate::{
    domain::{
        notify::{check_url, Channel, NotifyEvent, SubScope, Subscription},
        Permission,
    },
    runtime::{now, random_secret},
    store::{Attempt, Delivery},
};

/// Subscriptions one organization or deployment may hold: each costs sends on every
/// operation, and a tenant must not turn the control plane into a mailer.
const MAX_PER_SCOPE: usize = 20;

/// Body of `POST .../subscriptions`: exactly one of `webhook` and `email`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    webhook: Option<String>,
    email: Option<String>,
    /// Event names; default: every event.
    events: Option<Vec<String>>,
}

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

fn sub_json(s: &Subscription, secrets: bool) -> Value {
    let channel = match &s.channel {
        Channel::Webhook { url } if !secrets => {
            json!({ "kind": "webhook", "url": redacted_url(url) })
        }
        c => json!(c),
    };
    json!({
        "id": s.id,
        "scope": s.scope,
        "org": s.org,
        "channel": channel,
        "events": s.events,
        "created_by": s.created_by,
        "created_at": s.created_at,
    })
}

fn delivery_json(d: &Delivery, tries: &[Attempt]) -> Value {
    json!({
        "id": d.id,
        "operation": d.op,
        "event": d.event,
        "state": d.state,
        "attempts": d.attempts,
        "next_at": d.next_at,
        "tries": tries,
    })
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
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let mut v = sub_json(&sub, secrets);
    if matches!(sub.channel, Channel::Webhook { .. }) {
        v["secret"] = if secrets { json!(secret) } else { Value::Null };
        if !secrets {
            v["secret_note"] = json!("the signing secret is shown only to holders of the secrets permission, and only now");
        }
    }
    Ok((StatusCode::CREATED, Json(v)))
}

fn list(cx: &Cx<'_>, scope: &SubScope) -> Result<Json<Value>, ApiError> {
    require_at(cx, Permission::View, scope)?;
    let secrets = has_at(cx, Permission::Secrets, scope);
    let subs: Vec<Value> = cx
        .app
        .rt
        .store()
        .subscriptions(scope)?
        .iter()
        .map(|s| sub_json(s, secrets))
        .collect();
    Ok(Json(json!({ "subscriptions": subs })))
}

pub(super) async fn org_create(
    State(app): State<App>,
    headers: HeaderMap,
    Path(org): Path<String>,
    body: Body<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

pub(super) async fn org_list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "subscriptions.list", None, |cx| {
        super::support::check_org(&org)?;
        list(cx, &SubScope::Organization { org: org.clone() })
    })
}

pub(super) async fn dep_create(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
    body: Body<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

pub(super) async fn dep_list(
    State(app): State<App>,
    headers: HeaderMap,
    Path(instance): Path<String>,
) -> Result<Json<Value>, ApiError> {
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

pub(super) async fn show(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "subscriptions.read", None, |cx| {
        let sub = visible(cx, id)?;
        Ok(Json(sub_json(
            &sub,
            has_at(cx, Permission::Secrets, &sub.scope),
        )))
    })
}

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

pub(super) async fn deliveries(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<u64>,
    Query(limit): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    app.handle(&headers, "subscriptions.deliveries", None, |cx| {
        visible(cx, id)?;
        let list: Vec<Value> = cx
            .app
            .rt
            .store()
            .deliveries(id, limit.get())?
            .iter()
            .map(|(d, tries)| delivery_json(d, tries))
            .collect();
        Ok(Json(json!({ "subscription": id, "deliveries": list })))
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
