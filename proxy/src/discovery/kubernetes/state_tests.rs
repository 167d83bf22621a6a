use std::net::{IpAddr, Ipv4Addr};

use kanmon_router::NodeState;
use proptest::prelude::*;

use super::*;
use crate::discovery::kubernetes::{
    mapping::{AddressType, Conditions, EndpointView},
    policy::{Policy, Rejection},
};

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
        console_allow: Vec::new(),
    }
}

fn slice(name: &str, service: &str, eps: &[(&str, u8, bool)]) -> SliceView {
    SliceView {
        key: ObjectKey::new("games", name),
        service: service.into(),
        address_type: AddressType::V4,
        labelled: true,
        http_port: Some(7350),
        grpc_port: None,
        console_port: None,
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

/// Every instance owned by `games`, pod networks the defaults.
fn games() -> Policy {
    Policy::new(
        "games",
        Default::default(),
        crate::config::Discovery::default().allowed_cidrs,
    )
}

fn synced() -> Store {
    let mut s = Store::new([all(Kind::Services), all(Kind::Slices)], None, games());
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
    let mut s = Store::new([all(Kind::Services), all(Kind::Slices)], None, games());
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
    assert!(f.errors.is_empty(), "{f:?}");
    assert!(
        matches!(&f.rejections[..], [Rejected { reason: Rejection::Conflict, object, .. }] if object.name == "zzz"),
        "{f:?}"
    );
    // Reported once, not on every recomputation of the instance.
    s.apply(Input::Apply(Object::Slice(slice(
        "alpha-1",
        "alpha",
        &[("alpha-0", 1, true), ("alpha-1", 2, false)],
    ))));
    assert!(s.flush().rejections.is_empty());
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

fn svc_in(ns: &str, name: &str, instance: &str) -> ServiceView {
    ServiceView {
        key: ObjectKey::new(ns, name),
        ..svc(name, instance)
    }
}

fn slice_in(ns: &str, name: &str, service: &str, octet: u8) -> SliceView {
    let mut s = slice(name, service, &[(name, octet, false)]);
    s.key.namespace = ns.into();
    s
}

/// The owner rule of the control plane's driver: instance `x` lives in `kanmon-x`.
fn owned() -> Policy {
    Policy::new(
        "kanmon-{instance}",
        Default::default(),
        vec!["10.0.0.0/8".parse().unwrap()],
    )
}

#[test]
fn an_earlier_sorting_namespace_cannot_take_an_instance() {
    let mut s = Store::new([all(Kind::Services), all(Kind::Slices)], None, owned());
    let services = vec![
        Object::Service(svc_in("aaa", "alpha", "alpha")),
        Object::Service(svc_in("kanmon-alpha", "alpha", "alpha")),
    ];
    let slices = vec![
        Object::Slice(slice_in("aaa", "thief", "alpha", 66)),
        Object::Slice(slice_in("kanmon-alpha", "alpha-0", "alpha", 1)),
    ];
    s.apply(Input::Replace(all(Kind::Services), services.clone()));
    s.apply(Input::Replace(all(Kind::Slices), slices.clone()));
    let f = s.flush();
    let [Change::Publish(spec)] = &f.changes[..] else {
        panic!("{f:?}")
    };
    let addrs: Vec<String> = spec.nodes.iter().map(|n| n.addr.to_string()).collect();
    assert_eq!(addrs, ["10.0.0.1:7350"], "{f:?}");
    assert!(
        matches!(&f.rejections[..], [Rejected { reason: Rejection::ForeignNamespace, object, .. }] if object.namespace == "aaa"),
        "{f:?}"
    );
    // Even alone, the foreign Service never claims it, and a relist reports nothing new.
    s.apply(Input::Delete(
        Kind::Services,
        ObjectKey::new("kanmon-alpha", "alpha"),
    ));
    s.apply(Input::Replace(
        all(Kind::Services),
        vec![services[0].clone()],
    ));
    let f = s.flush();
    assert_eq!(f.changes, [Change::Remove("alpha".into())]);
    assert!(f.rejections.is_empty(), "{f:?}");
    assert!(s.published().is_empty());
}

#[test]
fn endpoints_outside_the_allowed_networks_or_of_another_type_are_dropped_once() {
    let mut s = Store::new([all(Kind::Services), all(Kind::Slices)], None, owned());
    let mut mixed = slice_in("kanmon-alpha", "alpha-0", "alpha", 1);
    let mut outside = mixed.endpoints[0].clone();
    outside.id = "outside".into();
    outside.address = "127.0.0.1".parse().unwrap();
    let mut v6 = mixed.endpoints[0].clone();
    v6.id = "v6".into();
    v6.address = "::1".parse().unwrap();
    mixed.endpoints.extend([outside, v6]);
    let mut fqdn = slice_in("kanmon-alpha", "alpha-fqdn", "alpha", 2);
    fqdn.address_type = AddressType::Other;
    let mut unlabelled = slice_in("kanmon-alpha", "alpha-other", "alpha", 3);
    unlabelled.labelled = false;
    // A slice of a Service that is no game deployment is nobody's business.
    let mut foreign = slice_in("kanmon-alpha", "metrics", "metrics-server", 4);
    foreign.labelled = false;
    foreign.endpoints[0].address = "127.0.0.1".parse().unwrap();
    s.apply(Input::Replace(
        all(Kind::Services),
        vec![Object::Service(svc_in("kanmon-alpha", "alpha", "alpha"))],
    ));
    s.apply(Input::Replace(
        all(Kind::Slices),
        [mixed.clone(), fqdn, unlabelled, foreign]
            .into_iter()
            .map(Object::Slice)
            .collect(),
    ));
    let f = s.flush();
    let [Change::Publish(spec)] = &f.changes[..] else {
        panic!("{f:?}")
    };
    let ids: Vec<&str> = spec.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["alpha-0", "alpha-other"], "{f:?}");
    let mut reasons: Vec<(Rejection, String)> = f
        .rejections
        .iter()
        .map(|r| (r.reason, r.detail.clone()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            (Rejection::AddressNotAllowed, "127.0.0.1".to_string()),
            (Rejection::AddressType, "::1".to_string()),
            (
                Rejection::AddressType,
                "addressType is not IPv4/IPv6".to_string()
            ),
            (Rejection::UnlabelledSlice, String::new()),
        ]
    );
    // A condition change on the same slice reports nothing already reported.
    mixed.endpoints[0].conditions.terminating = Some(true);
    s.apply(Input::Apply(Object::Slice(mixed)));
    let f = s.flush();
    assert_eq!(f.changes.len(), 1);
    assert!(f.rejections.is_empty(), "{f:?}");
}

#[test]
fn conditions_seen_tell_whether_the_cluster_reports_terminating() {
    let mut s = synced();
    s.flush();
    assert_eq!(
        s.conditions(),
        ConditionsSeen {
            endpoints: true,
            serving_terminating: true
        }
    );
    let mut old = Store::new([all(Kind::Services), all(Kind::Slices)], None, games());
    let mut sl = slice("alpha-1", "alpha", &[("alpha-0", 1, false)]);
    sl.endpoints[0].conditions = Conditions {
        ready: Some(true),
        serving: None,
        terminating: None,
    };
    old.apply(Input::Replace(
        all(Kind::Services),
        vec![Object::Service(svc("alpha", "alpha"))],
    ));
    old.apply(Input::Replace(all(Kind::Slices), vec![Object::Slice(sl)]));
    old.flush();
    assert_eq!(
        old.conditions(),
        ConditionsSeen {
            endpoints: true,
            serving_terminating: false
        }
    );
}
