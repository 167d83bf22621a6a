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
    };
    store.create_user(&user).unwrap();
    assert!(matches!(
        store.create_user(&user),
        Err(StoreError::UserExists(_))
    ));
    store.add_token("ann", &hash_token("secret-token")).unwrap();
    assert_eq!(store.user_by_token("secret-token").unwrap(), Some(user));
    assert_eq!(store.user_by_token("other").unwrap(), None);
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
