//! What the API shows: secrets are removed or redacted unless the caller may read them.

use serde_json::{json, Value};

use crate::domain::{Deployment, Operation};

/// What a caller may see of one deployment beyond `view`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sight {
    /// Secret config values (`secrets`).
    pub(crate) secrets: bool,
    /// Where an export's database dump is downloaded (`export`).
    pub(crate) exports: bool,
}

/// Placeholder for a secret value the caller may not read.
pub(super) const REDACTED: &str = "<redacted>";

/// A deployment without its keys; secret config values only with `secrets`.
pub(super) fn deployment(dep: &Deployment, secrets: bool) -> Value {
    let mut v = serde_json::to_value(dep).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("keys");
        obj.insert("version".into(), json!(dep.spec.version.to_string()));
    }
    if !secrets {
        if let Some(sc) = v
            .pointer_mut("/spec/secret_config")
            .and_then(Value::as_object_mut)
        {
            sc.values_mut().for_each(|x| *x = json!(REDACTED));
        }
    }
    v
}

/// An operation; secret config values only with `secrets`, an export's download link only
/// with `export`.
pub(super) fn operation(op: &Operation, sight: &Sight) -> Value {
    let mut op = op.clone();
    op.kind = if sight.secrets {
        op.kind.without_new_key()
    } else {
        op.kind.redacted()
    };
    let mut v = serde_json::to_value(op).unwrap_or(Value::Null);
    if !sight.exports {
        if let Some(db) = v
            .pointer_mut("/result/database")
            .and_then(Value::as_object_mut)
        {
            db.remove("download");
        }
    }
    v
}
