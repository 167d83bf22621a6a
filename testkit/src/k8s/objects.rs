//! The object store's writes, as the API server does them: resourceVersions, UIDs and
//! generations, server-side apply, graceful pod deletion and namespace cascades. Both the wire
//! (`PATCH`, `DELETE`) and the in-process writers (tests, [`super::sim`]) go through here, so
//! every change reaches the watches the same way.

use serde_json::{json, Value};

use super::{broadcast_event, Kind, State};

/// A refused request: HTTP status code and the `Status` body.
pub(super) type Refusal = (u16, Value);

pub(super) fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "code": code, "message": message})
}

impl State {
    /// Writes an object: a new resourceVersion, the UID kept across updates (a new one for a
    /// new object), and an ADDED/MODIFIED event when `broadcast`.
    pub(super) fn upsert(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        mut object: Value,
        broadcast: bool,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let ns = if kind.namespaced() { ns } else { "" };
        let key = (kind, ns.to_string(), name.to_string());
        let old_uid = self.objects.get(&key).map(|o| o["metadata"]["uid"].clone());
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind());
        object["metadata"]["name"] = json!(name);
        if kind.namespaced() {
            object["metadata"]["namespace"] = json!(ns);
        }
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = match old_uid {
            Some(uid) => uid,
            None if object["metadata"]["uid"].is_string() => object["metadata"]["uid"].clone(),
            None => json!(format!("uid-{ns}-{name}-{rv}")),
        };
        let ty = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key, object.clone());
        if broadcast {
            self.history.push((rv, kind, ty, object.clone()));
            broadcast_event(self, kind, ns, ty, &object);
        }
        self.changed.notify_one();
        object
    }

    /// Removes an object (a DELETED event when `broadcast`); `None` if there is none.
    pub(super) fn remove(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        broadcast: bool,
    ) -> Option<Value> {
        let ns = if kind.namespaced() { ns } else { "" };
        let mut object = self
            .objects
            .remove(&(kind, ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if broadcast {
            self.history.push((rv, kind, "DELETED", object.clone()));
            broadcast_event(self, kind, ns, "DELETED", &object);
        }
        self.changed.notify_one();
        Some(object)
    }

    /// Server-side apply by one manager: the applied object replaces what that manager set
    /// (the fixture has one manager per object, as kanmon has); what the server and the
    /// controllers own — UID, creation and deletion times, generation, status — is kept, and
    /// `metadata.generation` moves when the spec changes.
    pub(super) fn apply(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        mut applied: Value,
        manager: &str,
    ) -> Result<Value, Refusal> {
        if applied["kind"] != kind.kind() || applied["apiVersion"] != kind.api_version() {
            return Err((
                400,
                status(400, "BadRequest", "apiVersion/kind do not match the URL"),
            ));
        }
        if applied["metadata"]["name"] != name {
            return Err((
                400,
                status(400, "BadRequest", "metadata.name does not match the URL"),
            ));
        }
        if manager.is_empty() {
            return Err((
                422,
                status(422, "Invalid", "fieldManager is required for apply"),
            ));
        }
        if kind.namespaced()
            && applied["metadata"]["namespace"]
                .as_str()
                .is_some_and(|n| n != ns)
        {
            return Err((
                400,
                status(
                    400,
                    "BadRequest",
                    "metadata.namespace does not match the URL",
                ),
            ));
        }
        let key = (
            kind,
            if kind.namespaced() { ns } else { "" }.to_string(),
            name.to_string(),
        );
        if kind.namespaced()
            && !self
                .objects
                .contains_key(&(Kind::Namespace, String::new(), ns.to_string()))
        {
            return Err((
                404,
                status(404, "NotFound", &format!("namespaces \"{ns}\" not found")),
            ));
        }
        let generation = match self.objects.get(&key) {
            Some(old) => {
                for f in [
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    if !old["metadata"][f].is_null() {
                        applied["metadata"][f] = old["metadata"][f].clone();
                    }
                }
                if !old["status"].is_null() {
                    applied["status"] = old["status"].clone();
                }
                let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                if old["spec"] != applied["spec"] || old["data"] != applied["data"] {
                    g + 1
                } else {
                    g
                }
            }
            None => {
                applied["metadata"]["creationTimestamp"] = json!("2026-12-02T00:00:00Z");
                1
            }
        };
        if kind.has_spec() {
            applied["metadata"]["generation"] = json!(generation);
        }
        applied["metadata"]["managedFields"] = json!([{"manager": manager,
            "operation": "Apply", "apiVersion": kind.api_version(), "fieldsType": "FieldsV1"}]);
        Ok(self.upsert(kind, ns, name, applied, true))
    }

    /// A DELETE: a Pod is marked terminating (its kubelet — the simulated cluster — removes it
    /// after its grace), a Namespace takes everything in it along, anything else goes at once.
    /// With `uid`, only that incarnation is deleted (409 otherwise).
    pub(super) fn delete(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Value, Refusal> {
        let key = (
            kind,
            if kind.namespaced() { ns } else { "" }.to_string(),
            name.to_string(),
        );
        let Some(object) = self.objects.get(&key).cloned() else {
            let msg = format!("{} \"{name}\" not found", kind.plural());
            return Err((404, status(404, "NotFound", &msg)));
        };
        if uid.is_some_and(|u| object["metadata"]["uid"] != u) {
            return Err((
                409,
                status(
                    409,
                    "Conflict",
                    "Precondition failed: UID in precondition does not match the object",
                ),
            ));
        }
        match kind {
            Kind::Pod => {
                if !object["metadata"]["deletionTimestamp"].is_null() {
                    return Ok(object);
                }
                let mut o = object;
                o["metadata"]["deletionTimestamp"] = json!("2026-12-02T00:00:00Z");
                o["metadata"]["deletionGracePeriodSeconds"] =
                    o["spec"]["terminationGracePeriodSeconds"].clone();
                Ok(self.upsert(kind, ns, name, o, true))
            }
            Kind::Namespace => {
                let inside: Vec<(Kind, String, String)> = self
                    .objects
                    .keys()
                    .filter(|(_, n, _)| n == name)
                    .cloned()
                    .collect();
                for (k, n, o) in inside {
                    self.remove(k, &n, &o, true);
                }
                Ok(self.remove(kind, "", name, true).unwrap_or(object))
            }
            _ => Ok(self.remove(kind, ns, name, true).unwrap_or(object)),
        }
    }
}
