use std::net::Ipv4Addr;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use proptest::prelude::*;

use super::*;

fn cond(ready: Option<bool>, serving: Option<bool>, terminating: Option<bool>) -> Conditions {
    Conditions {
        ready,
        serving,
        terminating,
    }
}

#[test]
fn design_mapping_of_conditions() {
    // ready → ready
    assert_eq!(
        node_state(cond(Some(true), Some(true), Some(false))),
        NodeState::Ready
    );
    // serving && terminating → draining
    assert_eq!(
        node_state(cond(Some(false), Some(true), Some(true))),
        NodeState::Draining
    );
    // !serving → unhealthy
    assert_eq!(
        node_state(cond(Some(false), Some(false), Some(false))),
        NodeState::Unhealthy
    );
    assert_eq!(
        node_state(cond(Some(false), Some(false), Some(true))),
        NodeState::Unhealthy
    );
    // The API's defaults: absent ready is true, absent serving follows ready, absent
    // terminating is false.
    assert_eq!(node_state(Conditions::default()), NodeState::Ready);
    assert_eq!(
        node_state(cond(Some(false), None, None)),
        NodeState::Unhealthy
    );
    assert_eq!(
        node_state(cond(None, None, Some(true))),
        NodeState::Draining
    );
    // A terminating endpoint claiming ready still only drains.
    assert_eq!(
        node_state(cond(Some(true), Some(true), Some(true))),
        NodeState::Draining
    );
}

fn service_json(instance: &str, ports: &[&str]) -> Service {
    let ports: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, n)| serde_json::json!({"name": n, "port": 7350 - i as i32}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "alpha", "namespace": "games",
            "labels": {"kanmon.dev/instance": instance, "kanmon.dev/zone": "us-east1"},
            "annotations": {"kanmon.dev/fallback-to-draining": "true"}},
        "spec": {"ports": ports}
    }))
    .unwrap()
}

#[test]
fn service_view_reads_labels_ports_and_fallback() {
    let v = service_view(&service_json("alpha", &["http", "grpc"])).unwrap();
    assert_eq!(v.key, ObjectKey::new("games", "alpha"));
    assert_eq!(
        (v.instance.as_str(), v.zone.as_str()),
        ("alpha", "us-east1")
    );
    assert!(v.has_http && v.fallback_to_draining);
    assert!(
        !service_view(&service_json("alpha", &["web"]))
            .unwrap()
            .has_http
    );
    let unlabelled: Service =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "x", "namespace": "n"}}))
            .unwrap();
    assert!(service_view(&unlabelled).is_none());
}

#[test]
fn slice_view_reads_ports_ids_and_conditions() {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "alpha-abc", "namespace": "games",
            "labels": {"kubernetes.io/service-name": "alpha"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 7350}, {"name": "grpc", "port": 7349}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "alpha-0"},
             "conditions": {"ready": true, "serving": true, "terminating": false}},
            {"addresses": ["10.0.0.2"], "hostname": "alpha-1",
             "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.0.0.3"]},
            {"addresses": ["not-an-ip.example"]},
            {"addresses": []}
        ]
    }))
    .unwrap();
    let v = slice_view(&slice).unwrap();
    assert_eq!(v.service, "alpha");
    assert_eq!((v.http_port, v.grpc_port), (Some(7350), Some(7349)));
    let ids: Vec<_> = v.endpoints.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["alpha-0", "alpha-1", "10.0.0.3"]);
    assert_eq!(node_state(v.endpoints[1].conditions), NodeState::Draining);
}

fn svc(instance: &str) -> ServiceView {
    ServiceView {
        key: ObjectKey::new("games", instance),
        instance: instance.into(),
        zone: "us-east1".into(),
        has_http: true,
        fallback_to_draining: false,
        console_allow: Vec::new(),
    }
}

fn ep(id: &str, last_octet: u8, c: Conditions) -> EndpointView {
    EndpointView {
        id: id.into(),
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last_octet)),
        conditions: c,
    }
}

fn slice(name: &str, http: Option<u16>, endpoints: Vec<EndpointView>) -> SliceView {
    SliceView {
        key: ObjectKey::new("games", name),
        service: "alpha".into(),
        address_type: AddressType::V4,
        labelled: true,
        http_port: http,
        grpc_port: Some(7349),
        console_port: None,
        endpoints,
    }
}

#[test]
fn deployment_joins_slices_sorted_and_deduplicated() {
    let a = slice(
        "alpha-b",
        Some(7350),
        vec![ep("alpha-1", 2, Conditions::default())],
    );
    let b = slice(
        "alpha-a",
        Some(7350),
        vec![
            ep("alpha-0", 1, Conditions::default()),
            ep("alpha-1", 9, Conditions::default()),
        ],
    );
    let no_port = slice(
        "alpha-c",
        None,
        vec![ep("alpha-9", 7, Conditions::default())],
    );
    let spec = deployment(&svc("alpha"), [&a, &b, &no_port], Some(10)).unwrap();
    let nodes: Vec<_> = spec
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.addr.to_string()))
        .collect();
    // alpha-1 keeps the address of the first slice by name (alpha-a).
    assert_eq!(
        nodes,
        [
            ("alpha-0", "10.0.0.1:7350".to_string()),
            ("alpha-1", "10.0.0.9:7350".to_string())
        ]
    );
    assert_eq!(spec.nodes[0].grpc.unwrap().to_string(), "10.0.0.1:7349");
    assert_eq!(spec.max_connections, Some(10));
}

#[test]
fn bad_services_are_named_errors() {
    let mut s = svc("alpha");
    s.instance = "Not_A_Name".into();
    assert!(matches!(
        deployment(&s, [], None),
        Err(MappingError::Instance { .. })
    ));
    let mut s = svc("alpha");
    s.zone = "-".into();
    assert!(matches!(
        deployment(&s, [], None),
        Err(MappingError::Zone { .. })
    ));
    let mut s = svc("alpha");
    s.has_http = false;
    let err = deployment(&s, [], None).unwrap_err();
    assert!(err.to_string().contains("games/alpha"), "{err}");
}

fn arb_conditions() -> impl Strategy<Value = Conditions> {
    let b = || proptest::option::of(any::<bool>());
    (b(), b(), b()).prop_map(|(ready, serving, terminating)| Conditions {
        ready,
        serving,
        terminating,
    })
}

fn arb_slices() -> impl Strategy<Value = Vec<SliceView>> {
    let endpoint = (0u8..6, 1u8..250, arb_conditions())
        .prop_map(|(id, octet, c)| ep(&format!("alpha-{id}"), octet, c));
    let one = (
        0u8..1,
        proptest::option::of(1u16..u16::MAX),
        proptest::collection::vec(endpoint, 0..6),
    )
        .prop_map(|(n, http, eps)| slice(&format!("alpha-{n}"), http, eps));
    // Slice names are unique in a namespace.
    proptest::collection::vec(one, 0..4).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                s.key.name = format!("alpha-{i}");
                s
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn terminating_endpoints_never_take_new_connections(c in arb_conditions()) {
        let state = node_state(c);
        if c.terminating == Some(true) {
            prop_assert_ne!(state, NodeState::Ready);
        }
        if c.ready == Some(false) || c.serving == Some(false) {
            prop_assert_ne!(state, NodeState::Ready);
        }
        // Draining exactly when serving and terminating.
        let serving = c.serving.unwrap_or(c.ready.unwrap_or(true));
        prop_assert_eq!(state == NodeState::Draining, serving && c.terminating == Some(true));
    }

    #[test]
    fn deployment_is_order_independent_and_complete(slices in arb_slices(), rotate in 0usize..4) {
        let forward: Vec<&SliceView> = slices.iter().collect();
        let mut other = forward.clone();
        other.reverse();
        if !other.is_empty() {
            let k = rotate % other.len();
            other.rotate_left(k);
        }
        let a = deployment(&svc("alpha"), forward, None).unwrap();
        let b = deployment(&svc("alpha"), other, None).unwrap();
        prop_assert_eq!(&a, &b);
        // Ids are unique and sorted.
        let ids: Vec<&str> = a.nodes.iter().map(|n| n.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&ids, &sorted);
        // Every endpoint of a slice with an http port is a node, and nothing else is.
        let mut expected: Vec<&str> = slices
            .iter()
            .filter(|s| s.http_port.is_some())
            .flat_map(|s| s.endpoints.iter().map(|e| e.id.as_str()))
            .collect();
        expected.sort();
        expected.dedup();
        prop_assert_eq!(ids, expected);
    }
}

#[test]
fn the_console_port_and_allow_list_reach_the_spec_and_a_bad_list_closes_it() {
    let mut svc_obj = service_json("alpha", &["http", "console"]);
    let notes = svc_obj
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    notes.insert(
        CONSOLE_ALLOW_ANNOTATION.into(),
        "10.0.0.0/8, 192.0.2.7/32".into(),
    );
    let view = service_view(&svc_obj).unwrap();
    assert_eq!(view.console_allow.len(), 2);
    assert!(parse_allow_list("10.0.0.0/8,nonsense").is_empty());
    assert!(parse_allow_list("").is_empty());
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "alpha-abc", "namespace": "games",
            "labels": {"kubernetes.io/service-name": "alpha"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 7350}, {"name": "console", "port": 7351}],
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]
    }))
    .unwrap();
    let slice = slice_view(&slice).unwrap();
    let spec = deployment(&view, [&slice], None).unwrap();
    assert_eq!(
        spec.nodes[0].console,
        Some("10.0.0.1:7351".parse().unwrap())
    );
    assert_eq!(spec.console_allow, view.console_allow);
}
