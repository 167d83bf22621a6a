//! The Secrets of a deployment: the node Secret (keys, merged config, database URL) and the
//! database credentials.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta, ByteString,
};
use sha2::{Digest, Sha256};

use super::names::{labels, Names, Role};
use crate::domain::{Keys, NodeLaunch};

/// File (and Secret key) the node reads its config from: the local driver's `KANMON_NODE_CONFIG`
/// contract, a JSON object of `KANMON_CONFIG_<KEY>` entries plus `DATABASE_URL`.
pub(super) const NODE_CONFIG_KEY: &str = "node-config.json";
/// Database role and database name of every deployment (each has its own server).
pub(super) const DATABASE_USER: &str = "kanmon";

/// Percent-encodes a URL userinfo part (RFC 3986 unreserved characters pass).
fn userinfo(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `postgres://` URL of the deployment's database, by its cluster DNS name.
pub(super) fn database_url(host: &str, namespace: &str, password: &str) -> String {
    format!(
        "postgres://{DATABASE_USER}:{}@{host}.{namespace}.svc:5432/{DATABASE_USER}",
        userinfo(password)
    )
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

/// The node Secret and the hash its pods carry.
pub(super) fn node_secret(
    names: &Names,
    instance: &str,
    keys: &Keys,
    launch: &NodeLaunch,
    database_url: &str,
) -> (Secret, String) {
    let mut config = crate::driver::node_config_entries(launch);
    config.insert("DATABASE_URL".into(), database_url.into());
    // A BTreeMap of strings always serialises.
    let config = serde_json::to_string(&config).unwrap_or_default();
    let data = BTreeMap::from([
        ("server-key".to_string(), bytes(&keys.server_key)),
        ("runtime-key".to_string(), bytes(&keys.runtime_key)),
        ("database-url".to_string(), bytes(database_url)),
        (NODE_CONFIG_KEY.to_string(), bytes(&config)),
    ]);
    let hash = hash(&data);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(names.node_secret.clone()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(instance, Some(Role::Node))),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(false),
        data: Some(data),
        ..Secret::default()
    };
    (secret, hash)
}

/// The database credentials, in the `kubernetes.io/basic-auth` shape CloudNativePG's
/// `bootstrap.initdb.secret` wants (the StatefulSet database reads the same keys).
pub(super) fn database_secret(names: &Names, instance: &str, password: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(names.database_secret.clone()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(instance, Some(Role::Database))),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(BTreeMap::from([
            ("username".to_string(), bytes(DATABASE_USER)),
            ("password".to_string(), bytes(password)),
        ])),
        ..Secret::default()
    }
}

/// SHA-256 over the entries, each length-prefixed so no two Secrets share an input.
fn hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_be_bytes());
        h.update(&v.0);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_url_encoded() {
        let url = database_url("alpha-db", "kanmon-alpha", "a/b@c:d");
        assert_eq!(
            url,
            "postgres://kanmon:a%2Fb%40c%3Ad@alpha-db.kanmon-alpha.svc:5432/kanmon"
        );
    }

    #[test]
    fn hash_changes_with_any_entry() {
        let a = BTreeMap::from([("k".to_string(), bytes("v"))]);
        let b = BTreeMap::from([("k".to_string(), bytes("w"))]);
        let c = BTreeMap::from([("kv".to_string(), bytes(""))]);
        assert_ne!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
        assert_eq!(hash(&a), hash(&a.clone()));
    }
}
