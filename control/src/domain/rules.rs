//! Operation rules checked when an operation is queued and again when it starts, and the
//! export document.

use kanmon_router::Catalog;

use super::{
    deployment::{
        check_cpus, check_key, check_version, Deployment, MAX_DB_CPUS, MAX_NODE_CPUS,
        MAX_SHUTDOWN_GRACE_SEC, RUNTIME_KEY_CONFIG, SERVER_KEY_CONFIG, SHUTDOWN_GRACE_CONFIG,
    },
    ops::OpKind,
    DomainError,
};

/// Checks an operation against the deployment's current state.
pub fn validate(dep: &Deployment, kind: &OpKind, catalog: &Catalog) -> Result<(), DomainError> {
    match kind {
        OpKind::Deploy { version, .. } => {
            // The allowed downgrade still has to be a supported release.
            let from = (!dep.downgrade_allowed(version)).then_some(&dep.spec.version);
            check_version(catalog, from, version)
        }
        OpKind::Scale { node_cpus, db_cpus } => {
            check_cpus("node_cpus", *node_cpus, MAX_NODE_CPUS)?;
            check_cpus("db_cpus", *db_cpus, MAX_DB_CPUS)?;
            if *db_cpus < dep.spec.db_cpus {
                return Err(DomainError::DatabaseCpuDown {
                    from: dep.spec.db_cpus,
                    to: *db_cpus,
                });
            }
            Ok(())
        }
        OpKind::SetVars { vars } => vars.keys().try_for_each(|k| check_key(k)),
        OpKind::SetConfig {
            config,
            secret_config,
            remove_config,
            remove_secret_config,
        } => {
            if let Some(v) = config.get(SHUTDOWN_GRACE_CONFIG) {
                match v.trim().parse::<u64>() {
                    Ok(s) if s <= MAX_SHUTDOWN_GRACE_SEC => {}
                    _ => return Err(DomainError::InvalidGrace(v.clone())),
                }
            }
            config
                .keys()
                .chain(secret_config.keys())
                .chain(remove_config)
                .chain(remove_secret_config)
                .try_for_each(|k| {
                    check_key(k)?;
                    if k == SERVER_KEY_CONFIG || k == RUNTIME_KEY_CONFIG {
                        return Err(DomainError::ReservedKey(k.clone()));
                    }
                    Ok(())
                })
        }
        OpKind::Delete if dep.delete_protection => Err(DomainError::DeleteProtected),
        // Builds are refused for unsupported versions (the catalog may have moved on since
        // the builder was made).
        OpKind::Build { version, .. } => check_version(catalog, None, version),
        OpKind::Reboot | OpKind::Export | OpKind::Certificate | OpKind::Delete => Ok(()),
        OpKind::RotateKey { value, .. } if value.is_empty() => Err(DomainError::InvalidKey(
            "rotate-key without a new key value".into(),
        )),
        OpKind::RotateKey { .. } => Ok(()),
    }
}

/// The export document: settings without keys or secret values.
pub fn export(dep: &Deployment) -> serde_json::Value {
    serde_json::json!({
        "instance": dep.instance.as_str(),
        "zone": dep.zone.as_str(),
        "type": dep.kind.as_str(),
        "hostname": dep.hostname,
        "version": dep.spec.version.to_string(),
        "image": dep.spec.image,
        "node_cpus": dep.spec.node_cpus,
        "db_cpus": dep.spec.db_cpus,
        "vars": dep.spec.vars,
        "config": dep.spec.config,
        "secret_config_keys": dep.spec.secret_config.keys().collect::<Vec<_>>(),
    })
}
