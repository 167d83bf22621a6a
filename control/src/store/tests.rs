use super::*;
use crate::domain::{
    sim::{running_deployment, v},
    Grant, OpKind, Permission, Scope, Timestamp,
};

#[test]
fn deployments_and_ops_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kanmon.db");
    let dep = running_deployment();
    {
        let store = Store::open(&path).unwrap();
        store.insert_deployment(&dep).unwrap();
        assert!(matches!(
            store.insert_deployment(&dep),
            Err(StoreError::InstanceTaken(_))
        ));
        let id = store.next_op_id().unwrap();
        let mut op = Operation::new(id, "alpha", OpKind::Reboot, "ann", Timestamp(5));
        store.persist(&dep, &[op.clone()]).unwrap();
        op.status = OpStatus::InProgress;
        let op2 = Operation::new(
            id + 1,
            "alpha",
            OpKind::Deploy {
                version: v("3.37.0"),
                image: None,
            },
            "ann",
            Timestamp(6),
        );
        store.persist(&dep, &[op, op2]).unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.deployment("alpha").unwrap().unwrap(), dep);
    let unfinished = store.unfinished_ops("alpha").unwrap();
    assert_eq!(unfinished.len(), 2);
    assert_eq!(unfinished[0].status, OpStatus::InProgress);
    assert_eq!(store.next_op_id().unwrap(), 3);
    assert_eq!(store.ops("alpha", 1).unwrap()[0].id, 2);
}

#[test]
fn tokens_grants_and_audit() {
    let store = Store::in_memory().unwrap();
    let user = User {
        name: "ann".into(),
        service: false,
        admin: false,
        created_at: Timestamp(1),
        disabled: false,
    };
    store.create_user(&user).unwrap();
    assert!(matches!(
        store.create_user(&user),
        Err(StoreError::UserExists(_))
    ));
    store
        .add_token("ann", &hash_token("secret-token"), None)
        .unwrap();
    assert_eq!(
        store.user_by_token("secret-token", Timestamp(0)).unwrap(),
        Some(user)
    );
    assert_eq!(store.user_by_token("other", Timestamp(0)).unwrap(), None);
    let grant = Grant {
        user: "ann".into(),
        scope: Scope::Deployment {
            instance: "alpha".into(),
        },
        permissions: [Permission::View].into_iter().collect(),
    };
    store.add_grant(&grant).unwrap();
    assert_eq!(store.grants("ann").unwrap(), vec![grant]);
    for (i, outcome) in [Outcome::Allowed, Outcome::Denied].into_iter().enumerate() {
        store
            .audit(&AuditEntry {
                id: 0,
                at: Timestamp(i as u64),
                who: "ann".into(),
                action: "keys.read".into(),
                instance: Some("alpha".into()),
                outcome,
                detail: String::new(),
            })
            .unwrap();
    }
    let log = store.audit_log(Some("alpha"), 10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].outcome, Outcome::Denied);
    assert!(store.audit_log(Some("beta"), 10).unwrap().is_empty());
    assert_eq!(store.audit_log(None, 1).unwrap().len(), 1);
}

fn user(name: &str) -> User {
    User {
        name: name.into(),
        service: false,
        admin: false,
        created_at: Timestamp(1),
        disabled: false,
    }
}

fn view_on(user: &str, instance: &str) -> Grant {
    Grant {
        user: user.into(),
        scope: Scope::Deployment {
            instance: instance.into(),
        },
        permissions: [Permission::View].into_iter().collect(),
    }
}

#[test]
fn grants_are_listed_with_ids_and_revoked_by_id() {
    let store = Store::in_memory().unwrap();
    store.create_user(&user("ann")).unwrap();
    store.create_user(&user("bob")).unwrap();
    store.add_grant(&view_on("ann", "alpha")).unwrap();
    store.add_grant(&view_on("bob", "alpha")).unwrap();
    store.add_grant(&view_on("ann", "beta")).unwrap();

    let listed = store.grants_with_ids("ann").unwrap();
    let ids: Vec<u64> = listed.iter().map(|g| g.id).collect();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(listed[1].grant, view_on("ann", "beta"));
    let json = serde_json::to_value(&listed[0]).unwrap();
    assert_eq!(json["id"], 1);
    assert_eq!(json["user"], "ann");
    assert_eq!(json["scope"]["instance"], "alpha");

    assert!(store.revoke_grant(1).unwrap());
    assert!(!store.revoke_grant(1).unwrap(), "already revoked");
    assert!(!store.revoke_grant(99).unwrap());
    assert!(!store.revoke_grant(u64::MAX).unwrap());
    assert_eq!(store.grants("ann").unwrap(), vec![view_on("ann", "beta")]);
    assert_eq!(store.grants("bob").unwrap(), vec![view_on("bob", "alpha")]);
    assert!(store.grants_with_ids("nobody").unwrap().is_empty());

    // Ids are never reused, so a stale id cannot revoke a newer grant.
    store.add_grant(&view_on("ann", "alpha")).unwrap();
    assert_eq!(store.grants_with_ids("ann").unwrap()[1].id, 4);
}

#[test]
fn rotating_replaces_every_token_of_the_user_only() {
    let store = Store::in_memory().unwrap();
    store.create_user(&user("ann")).unwrap();
    store.create_user(&user("bob")).unwrap();
    store.add_token("ann", &hash_token("ann-1"), None).unwrap();
    store.add_token("ann", &hash_token("ann-2"), None).unwrap();
    store.add_token("bob", &hash_token("bob-1"), None).unwrap();

    assert_eq!(
        store
            .rotate_tokens("ann", &hash_token("ann-3"), None)
            .unwrap(),
        2
    );
    assert_eq!(store.user_by_token("ann-1", Timestamp(0)).unwrap(), None);
    assert_eq!(store.user_by_token("ann-2", Timestamp(0)).unwrap(), None);
    assert_eq!(
        store.user_by_token("ann-3", Timestamp(0)).unwrap(),
        Some(user("ann"))
    );
    assert_eq!(
        store.user_by_token("bob-1", Timestamp(0)).unwrap(),
        Some(user("bob"))
    );

    assert!(matches!(
        store.rotate_tokens("nobody", &hash_token("x"), None),
        Err(StoreError::UnknownUser(name)) if name == "nobody"
    ));
    assert_eq!(store.user_by_token("x", Timestamp(0)).unwrap(), None);
}

#[test]
fn a_failed_rotation_keeps_the_old_tokens() {
    let store = Store::in_memory().unwrap();
    store.create_user(&user("ann")).unwrap();
    store.create_user(&user("bob")).unwrap();
    store.add_token("ann", &hash_token("ann-1"), None).unwrap();
    store.add_token("bob", &hash_token("bob-1"), None).unwrap();
    // The insert fails (hash taken) after the delete ran: the transaction must undo the delete.
    assert!(matches!(
        store.rotate_tokens("ann", &hash_token("bob-1"), None),
        Err(StoreError::Sql(_))
    ));
    assert_eq!(
        store.user_by_token("ann-1", Timestamp(0)).unwrap(),
        Some(user("ann"))
    );
    assert_eq!(
        store.user_by_token("bob-1", Timestamp(0)).unwrap(),
        Some(user("bob"))
    );
}

/// An unknown token is refused without waiting for the connection (held here by another
/// request, as during a slow fsync): a flood of guesses never queues on the store's lock.
#[test]
fn unknown_tokens_are_refused_without_the_connection() {
    let store = std::sync::Arc::new(Store::in_memory().unwrap());
    store.create_user(&user("ann")).unwrap();
    store.add_token("ann", &hash_token("ann-1"), None).unwrap();
    let held = store.conn();
    let (tx, rx) = std::sync::mpsc::channel();
    let s = store.clone();
    let probe = std::thread::spawn(move || {
        let refused = s.user_by_token("guess", Timestamp(0)).unwrap();
        let _ = tx.send(refused);
    });
    let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
    drop(held);
    probe.join().unwrap();
    assert_eq!(answer, Ok(None), "the refusal waited for the store's lock");
    // Known tokens still come from the database, and rotation updates the index.
    assert!(store
        .user_by_token("ann-1", Timestamp(0))
        .unwrap()
        .is_some());
    store
        .rotate_tokens("ann", &hash_token("ann-2"), None)
        .unwrap();
    assert_eq!(store.user_by_token("ann-1", Timestamp(0)).unwrap(), None);
    assert!(store
        .user_by_token("ann-2", Timestamp(0))
        .unwrap()
        .is_some());
}
