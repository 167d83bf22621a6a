//! The OpenAPI 3.1 document, written by hand: the API is small, and a hand-written document
//! keeps a code generator out of the build.

use axum::Json;
use serde_json::{json, Value};

fn op(summary: &str, permission: &str, body: Option<&str>, ok: &str) -> Value {
    // A 204 has no body to describe.
    let success = if ok == "204" {
        json!({ "description": "Success" })
    } else {
        json!({ "description": "Success", "content": { "application/json": {} } })
    };
    let mut v = json!({
        "summary": summary,
        "description": format!("Requires permission: {permission}."),
        "security": [{ "bearer": [] }],
        "responses": {
            ok: success,
            "401": { "$ref": "#/components/responses/Unauthorized" },
            "403": { "$ref": "#/components/responses/Forbidden" },
        },
    });
    if let Some(schema) = body {
        v["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
        });
    }
    v
}

/// `op` for routes that answer 404 when the user or grant in the path does not exist.
fn op_404(summary: &str, permission: &str, ok: &str) -> Value {
    let mut v = op(summary, permission, None, ok);
    v["responses"]["404"] = json!({ "$ref": "#/components/responses/NotFound" });
    v
}

fn path_param(name: &str, ty: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": ty } }])
}

fn instance_param() -> Value {
    path_param("instance", "string")
}

fn kv() -> Value {
    json!({ "type": "object", "additionalProperties": { "type": "string" } })
}

fn keys() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

/// The logs search: its query parameters and the ndjson export.
fn logs_op() -> Value {
    let mut v = op("Node log lines, oldest first, the newest `limit`: {lines: [{ts, node, stream, severity, line}]}; with format=ndjson a download of the records", "view", None, "200");
    let q = |name: &str, description: &str| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string" } });
    v["parameters"] = json!([
        q("q", "Substring the line contains"),
        q("severity", "Minimum severity: debug, info, warn, error"),
        q("since", "RFC 3339 time or a duration ago (10m)"),
        q("until", "RFC 3339 time or a duration ago"),
        q(
            "limit",
            "Newest lines returned (default 100, at most 100000)"
        ),
        q("format", "json (default) or ndjson (a download)"),
    ]);
    v["responses"]["200"]["content"]["application/x-ndjson"] = json!({});
    v
}

/// The usage (billing) read: its date range.
fn usage_op() -> Value {
    let mut v = op("CPUs charged per UTC day, the day's highest sample: {instance, from, to, days: [{date, node_cpus, db_cpus, samples, carried}], in_progress: {date, node_cpus, db_cpus, samples} | null}; a day without samples carries the last known tier", "billing", None, "200");
    let q = |name: &str, description: &str| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string", "format": "date" } });
    v["parameters"] = json!([
        q("from", "First day, YYYY-MM-DD (default: 30 days before to)"),
        q("to", "Last day, YYYY-MM-DD (default: today, UTC)"),
    ]);
    v
}

/// `GET /openapi.json`.
pub(super) async fn document() -> Json<Value> {
    Json(json!({
        "openapi": "3.1.0",
        "info": { "title": "kanmon control plane", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/v1/whoami": { "get": op("The caller and its grants", "any valid token", None, "200") },
            "/v1/versions": { "get": op("Released versions with support status", "any valid token", None, "200") },
            "/v1/zones": { "get": op("Zone catalog", "any valid token", None, "200") },
            "/v1/orgs/{org}/zones": {
                "parameters": path_param("org", "string"),
                "get": op("The zone catalog as the organization sees it: {org, zones: [{zone, on_request, available, enabled_by, enabled_at}]}", "any valid token", None, "200"),
            },
            "/v1/orgs/{org}/zones/{zone}": {
                "parameters": [
                    { "name": "org", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "zone", "in": "path", "required": true, "schema": { "type": "string" } },
                ],
                "put": op("Enable an on-request zone for the organization (audited); 422 for a zone that is not on request", "admin", None, "200"),
                "delete": op_404("Take an on-request zone back from the organization (its deployments there stay)", "admin", "200"),
            },
            "/v1/users": { "post": op("Create a user or service user; returns its token once", "admin", Some("NewUser"), "201") },
            "/v1/users/{name}/grants": {
                "parameters": path_param("name", "string"),
                "get": op_404("The user's grants with their ids: {grants: [{id, user, scope, permissions}]}", "admin, or the user itself", "200"),
            },
            "/v1/users/{name}/token": {
                "parameters": path_param("name", "string"),
                "post": op_404("Rotate: replace every token of the user with a new one, returned once as {user, token, expires_at}; the old tokens stop working at once; ?expires_in=30d (default 90d, or never)", "admin, or the user itself", "200"),
            },
            "/v1/users/{name}/disable": {
                "parameters": path_param("name", "string"),
                "post": op_404("Disable a user: its tokens are refused from its next request on", "admin (not oneself)", "204"),
            },
            "/v1/users/{name}/enable": {
                "parameters": path_param("name", "string"),
                "post": op_404("Enable a disabled user again", "admin", "204"),
            },
            "/v1/grants": { "post": op("Grant permissions at organization, title or deployment level", "admin", Some("Grant"), "201") },
            "/v1/grants/{id}": {
                "parameters": path_param("id", "integer"),
                "delete": op_404("Revoke a grant (ids from GET /v1/users/{name}/grants); takes effect on the user's next request", "admin", "204"),
            },
            "/v1/audit": { "get": op("Platform audit log, newest first", "admin", None, "200") },
            "/v1/deployments": {
                "get": op("Deployments the caller may view", "view (per deployment)", None, "200"),
                "post": op("Create a deployment and queue its first deploy", "edit on the title", Some("NewDeployment"), "201"),
            },
            "/v1/deployments/{instance}": {
                "parameters": instance_param(),
                "get": op("A deployment with its nodes and queue (secret config values need secrets)", "view", None, "200"),
                "patch": op("Change delete protection or fallback_to_draining; permanent choices are refused with 409", "edit", Some("Edit"), "200"),
                "delete": op("Queue a delete operation (refused while delete protection is on)", "delete", None, "202"),
            },
            "/v1/deployments/{instance}/keys": { "parameters": instance_param(), "get": op("Server key and runtime key", "secrets", None, "200") },
            "/v1/deployments/{instance}/audit": { "parameters": instance_param(), "get": op("Audit log of the deployment", "view", None, "200") },
            "/v1/deployments/{instance}/logs": { "parameters": instance_param(), "get": logs_op() },
            "/v1/deployments/{instance}/usage": { "parameters": instance_param(), "get": usage_op() },
            "/v1/deployments/{instance}/builders": {
                "parameters": instance_param(),
                "get": op("The deployment's builders: {builders: [{name, source, version, created_by, created_at}]}", "view", None, "200"),
                "post": op("Add a builder (a directory or git source and the Nakama version to compile against; 422 for an unsupported version, 409 for a taken name)", "edit", Some("NewBuilder"), "201"),
            },
            "/v1/deployments/{instance}/builders/{name}": {
                "parameters": [
                    { "name": "instance", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
                ],
                "delete": op_404("Remove a builder (its builds and images stay)", "edit", "204"),
            },
            "/v1/deployments/{instance}/builds": { "parameters": instance_param(), "get": op("Builds, newest first: {builds: [{id, builder, version, status, image, digest, error, started_at, finished_at}]}", "view", None, "200") },
            "/v1/deployments/{instance}/builds/{id}/log": {
                "parameters": [
                    { "name": "instance", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } },
                ],
                "get": op_404("One build with its log (the last 256 KiB of its output)", "view", "200"),
            },
            "/v1/deployments/{instance}/downgrade-allowance": {
                "parameters": instance_param(),
                "post": op("Allow one deploy to the given older supported version (the support team's intervention, audited); used up by the deploy that completes to it", "admin", Some("DowngradeAllowance"), "200"),
            },
            "/v1/deployments/{instance}/operations": {
                "parameters": instance_param(),
                "get": op("Operations, newest first", "view", None, "200"),
                "post": op("Queue an operation", "deploy (deploy, reboot, build), scale, edit (set-vars, set-config; plus secrets for setting or removing secret_config), export, delete", Some("Operation"), "202"),
            },
            "/v1/operations/{id}": {
                "parameters": path_param("id", "integer"),
                "get": op("One operation with status and progress", "view", None, "200"),
            },
            "/v1/operations/{id}/download": {
                "parameters": path_param("id", "integer"),
                "get": {
                    "summary": "The database dump of an export operation (result.database.download), streamed; deleted when its link expires (15 minutes)",
                    "x-permission": "view and export on the deployment",
                    "responses": { "200": { "description": "The pg_dump SQL file" }, "403": { "description": "Missing export" }, "404": { "description": "No dump, or its link has expired" } },
                },
            },
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Unauthorized": { "description": "Missing or unknown token", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "Forbidden": { "description": "Missing permission (named in missing_permission)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "NotFound": { "description": "No such user or grant", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": {
                    "error": { "type": "string" }, "missing_permission": { "type": "string" } } },
                "NewUser": { "type": "object", "required": ["name"], "properties": {
                    "name": { "type": "string" }, "service": { "type": "boolean" }, "admin": { "type": "boolean" },
                    "expires_in": { "type": "string", "description": "token lifetime: 90d (default), 12h, or never" } } },
                "Grant": { "type": "object", "required": ["user", "scope", "permissions"], "properties": {
                    "user": { "type": "string" },
                    "scope": { "type": "object", "description": "{level: organization, org} | {level: title, org, title} | {level: deployment, instance}; org \"*\" = every organization" },
                    "permissions": { "type": "array", "items": { "enum": ["view", "edit", "deploy", "delete", "export", "scale", "secrets", "billing"] } } } },
                "NewDeployment": { "type": "object", "required": ["instance", "zone", "type", "version"], "properties": {
                    "instance": { "type": "string", "pattern": "^[a-z][a-z0-9-]{1,61}[a-z0-9]$" },
                    "zone": { "type": "string" }, "type": { "enum": ["development", "production"] },
                    "version": { "type": "string" }, "org": { "type": "string" }, "title": { "type": "string" },
                    "node_cpus": { "type": "integer", "minimum": 1 }, "db_cpus": { "type": "integer", "minimum": 1 },
                    "delete_protection": { "type": "boolean" } } },
                "DowngradeAllowance": { "type": "object", "required": ["version"], "properties": {
                    "version": { "type": "string", "description": "an older supported version than the running one" } } },
                "Edit": { "type": "object", "properties": {
                    "delete_protection": { "type": "boolean" }, "fallback_to_draining": { "type": "boolean" } } },
                "NewBuilder": { "type": "object", "required": ["name", "source", "version"], "properties": {
                    "name": { "type": "string" }, "source": { "type": "string" }, "version": { "type": "string" },
                } },
                "Operation": { "oneOf": [
                    { "type": "object", "required": ["kind", "version"], "properties": { "kind": { "const": "deploy" }, "version": { "type": "string" }, "image": { "type": "string" } } },
                    { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "reboot" } } },
                    { "type": "object", "required": ["kind", "node_cpus", "db_cpus"], "properties": { "kind": { "const": "scale" }, "node_cpus": { "type": "integer" }, "db_cpus": { "type": "integer" } } },
                    { "type": "object", "required": ["kind", "vars"], "properties": { "kind": { "const": "set-vars" }, "vars": kv() } },
                    { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "set-config" }, "config": kv(), "secret_config": kv(), "remove_config": keys(), "remove_secret_config": keys() } },
                    { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "export" } } },
                    { "type": "object", "required": ["kind"], "properties": { "kind": { "const": "delete" } } },
                    { "type": "object", "required": ["kind", "builder"], "properties": { "kind": { "const": "build" }, "builder": { "type": "string" } } },
                ] },
            },
        },
    }))
}
