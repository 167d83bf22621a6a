use std::net::{IpAddr, Ipv4Addr};

use kanmon_router::NodeState;
use proptest::prelude::*;

use super::*;
use crate::discovery::kubernetes::mapping::{Conditions, EndpointView};

fn all(kind: Kind) -> StreamId {
    StreamId {
        kind,
        namespace: None,
    }
}

fn svc(name: &str, instance: &str) -> ServiceView {
    ServiceView {
        key: ObjectKey::new("games", name),
        instance: instance.into(),
        zone: "us-east1".into(),
        has_http: true,
        fallback_to_draining: false,
    }
}

fn slice(name: &str, service: &str, eps: &[(&str, u8, bool)]) -> SliceView {
    SliceView {
        key: ObjectKey::new("games", name),
        service: service.into(),
        http_port: Some(7350),
        grpc_port: None,
        endpoints: eps
            .iter()
            .map(|(id, octet, terminating)| EndpointView {
                id: (*id).into(),
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, *octet)),
                conditions: Conditions {
                    ready: Some(!terminating),
                    serving: Some(true),
                    terminating: Some(*terminating),
                },
            })
            .collect(),
    }
}

fn synced() -> Store {
    let mut s = Store::new([all(Kind::Services), all(Kind::Slices)], None);
    s.apply(Input::Replace(
        all(Kind::Services),
        vec![Object::Service(svc("alpha", "alpha"))],
    ));
    s.apply(Input::Replace(
        all(Kind::Slices),
        vec![Object::Slice(slice(
            "alpha-1",
            "alpha",
            &[("alpha-0", 1, false), ("alpha-1", 2, false)],
        ))],
    ));
    s
}

#[test]
fn nothing_is_published_until_every_stream_listed() {
    let mut s = Store::new([all(Kind::Services), all(Kind::Slices)], None);
    s.apply(Input::Replace(
        all(Kind::Services),
        vec![Object::Service(svc("alpha", "alpha"))],
    ));
    assert_eq!(s.flush(), Flush::default());
    s.apply(Input::Replace(all(Kind::Slices), vec![]));
    let f = s.flush();
    assert!(f.initial);
    assert_eq!(f.changes.len(), 1);
    assert!(!s.flush().initial);
}

#[test]
fn terminating_endpoint_publishes_draining_once() {
    let mut s = synced();
    let first = s.flush();
    assert!(first.initial);
    let terminating = slice(
        "alpha-1",
        "alpha",
        &[("alpha-0", 1, false), ("alpha-1", 2, true)],
    );
    // Three identical events coalesce into one change.
    for _ in 0..3 {
        s.apply(Input::Apply(Object::Slice(terminating.clone())));
    }
    let f = s.flush();
    assert_eq!(f.changes.len(), 1);
    let Change::Publish(spec) = &f.changes[0] else {
        panic!("{f:?}")
    };
    assert_eq!(spec.nodes[1].state, NodeState::Draining);
    assert_eq!(s.flush(), Flush::default());
}

#[test]
fn endpoint_and_service_removal() {
    let mut s = synced();
    s.flush();
    s.apply(Input::Apply(Object::Slice(slice(
        "alpha-1",
        "alpha",
        &[("alpha-0", 1, false)],
    ))));
    let f = s.flush();
    let Change::Publish(spec) = &f.changes[0] else {
        panic!("{f:?}")
    };
    assert_eq!(spec.nodes.len(), 1);
    s.apply(Input::Delete(
        Kind::Services,
        ObjectKey::new("games", "alpha"),
    ));
    assert_eq!(s.flush().changes, vec![Change::Remove("alpha".into())]);
}

#[test]
fn relist_replaces_only_its_scope_and_unchanged_publishes_nothing() {
    let mut s = synced();
    s.flush();
    // The same list again: no change.
    s.apply(Input::Replace(
        all(Kind::Slices),
        vec![Object::Slice(slice(
            "alpha-1",
            "alpha",
            &[("alpha-0", 1, false), ("alpha-1", 2, false)],
        ))],
    ));
    assert_eq!(s.flush(), Flush::default());
    // A relist that misses a slice deletes it (the API says it is gone).
    s.apply(Input::Replace(all(Kind::Slices), vec![]));
    let f = s.flush();
    let Change::Publish(spec) = &f.changes[0] else {
        panic!("{f:?}")
    };
    assert!(spec.nodes.is_empty());
    // A relist of another namespace leaves this one alone.
    let other = StreamId {
        kind: Kind::Services,
        namespace: Some("elsewhere".into()),
    };
    s.apply(Input::Replace(other, vec![]));
    assert_eq!(s.flush(), Flush::default());
}

#[test]
fn conflicts_and_bad_services_keep_the_last_good_spec() {
    let mut s = synced();
    s.flush();
    s.apply(Input::Apply(Object::Service(svc("zzz", "alpha"))));
    let f = s.flush();
    assert!(f.changes.is_empty(), "{f:?}");
    assert!(matches!(f.errors[..], [MappingError::Conflict { .. }]));
    let mut bad = svc("alpha", "alpha");
    bad.has_http = false;
    s.apply(Input::Delete(
        Kind::Services,
        ObjectKey::new("games", "zzz"),
    ));
    s.apply(Input::Apply(Object::Service(bad)));
    let f = s.flush();
    assert!(f.changes.is_empty());
    assert_eq!(f.errors.len(), 1);
    assert_eq!(s.published()["alpha"].nodes.len(), 2);
}

#[test]
fn relabelled_service_moves_its_deployment() {
    let mut s = synced();
    s.flush();
    s.apply(Input::Apply(Object::Service(svc("alpha", "gamma"))));
    let mut changes = s.flush().changes;
    changes.sort_by_key(|c| matches!(c, Change::Publish(_)));
    assert_eq!(changes[0], Change::Remove("alpha".into()));
    let Change::Publish(spec) = &changes[1] else {
        panic!()
    };
    assert_eq!(spec.instance.as_str(), "gamma");
    assert_eq!(spec.nodes.len(), 2);
}

#[derive(Debug, Clone)]
enum Op {
    PutService(u8, u8),
    DeleteService(u8),
    PutSlice(u8, u8, Vec<(u8, bool)>),
    DeleteSlice(u8),
    Flush,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..3).prop_map(|(s, i)| Op::PutService(s, i)),
        (0u8..4).prop_map(Op::DeleteService),
        (
            0u8..5,
            0u8..4,
            proptest::collection::vec((0u8..4, any::<bool>()), 0..4)
        )
            .prop_map(|(n, s, e)| Op::PutSlice(n, s, e)),
        (0u8..5).prop_map(Op::DeleteSlice),
        Just(Op::Flush),
    ]
}

/// The reference: the whole desired table, computed from scratch.
fn desired(
    services: &BTreeMap<String, ServiceView>,
    slices: &BTreeMap<String, SliceView>,
) -> BTreeMap<String, DeploymentSpec> {
    let mut out = BTreeMap::new();
    for s in services.values() {
        if out.contains_key(&s.instance) {
            continue; // services iterate by key: the first claim wins
        }
        let mine = slices.values().filter(|sl| sl.service == s.key.name);
        out.insert(s.instance.clone(), deployment(s, mine, None).unwrap());
    }
    out
}

proptest! {
    #[test]
    fn flushed_changes_track_the_cluster(ops in proptest::collection::vec(arb_op(), 1..40)) {
        let mut store = synced();
        let mut table = BTreeMap::new();
        let mut services = BTreeMap::from([("alpha".to_string(), svc("alpha", "alpha"))]);
        let mut slices = BTreeMap::from([(
            "alpha-1".to_string(),
            slice("alpha-1", "alpha", &[("alpha-0", 1, false), ("alpha-1", 2, false)]),
        )]);
        let apply = |table: &mut BTreeMap<String, DeploymentSpec>, f: Flush| {
            for c in f.changes {
                match c {
                    Change::Publish(spec) => { table.insert(spec.instance.to_string(), spec); }
                    Change::Remove(i) => { table.remove(&i); }
                }
            }
        };
        let instances = ["alpha", "beta", "gamma"];
        let svc_names = ["alpha", "s1", "s2", "s3"];
        for op in ops.into_iter().chain([Op::Flush]) {
            match op {
                Op::PutService(s, i) => {
                    let v = svc(svc_names[s as usize], instances[i as usize]);
                    services.insert(v.key.name.clone(), v.clone());
                    store.apply(Input::Apply(Object::Service(v)));
                }
                Op::DeleteService(s) => {
                    services.remove(svc_names[s as usize]);
                    store.apply(Input::Delete(Kind::Services, ObjectKey::new("games", svc_names[s as usize])));
                }
                Op::PutSlice(n, s, eps) => {
                    let eps: Vec<(String, u8, bool)> = eps.iter().map(|(i, t)| (format!("node-{i}"), *i + 1, *t)).collect();
                    let eps_ref: Vec<(&str, u8, bool)> = eps.iter().map(|(i, o, t)| (i.as_str(), *o, *t)).collect();
                    let v = slice(&format!("slice-{n}"), svc_names[s as usize], &eps_ref);
                    slices.insert(v.key.name.clone(), v.clone());
                    store.apply(Input::Apply(Object::Slice(v)));
                }
                Op::DeleteSlice(n) => {
                    let name = format!("slice-{n}");
                    slices.remove(&name);
                    store.apply(Input::Delete(Kind::Slices, ObjectKey::new("games", name)));
                }
                Op::Flush => apply(&mut table, store.flush()),
            }
        }
        prop_assert_eq!(&table, &desired(&services, &slices));
        prop_assert_eq!(&table, store.published());
    }
}
