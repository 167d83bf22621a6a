use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::{
    pick_console_in, DeploymentSpec, HealthTable, InstanceName, NodeSpec, NodeState, Zone,
};

const BASE: &str = "kanmon.test";

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn spec(instance: &str, states: &[(NodeState, bool)], allow: &[&str]) -> DeploymentSpec {
    DeploymentSpec {
        instance: InstanceName::parse(instance).unwrap(),
        zone: Zone::parse("us-east1").unwrap(),
        nodes: states
            .iter()
            .enumerate()
            .map(|(i, (state, console))| NodeSpec {
                id: format!("{instance}-{i}"),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                grpc: None,
                console: console.then(|| format!("127.0.0.1:{}", 8000 + i).parse().unwrap()),
                state: *state,
            })
            .collect(),
        fallback_to_draining: true,
        max_connections: None,
        console_allow: nets(allow),
    }
}

#[test]
fn patterns() {
    let d = ConsoleNames::default();
    assert_eq!(
        d,
        ConsoleNames::parse(ConsoleNames::DEFAULT_PATTERN).unwrap()
    );
    assert_eq!(d.pattern(), "{instance}-console");
    let p = ConsoleNames::parse("Console-{instance}").unwrap();
    assert_eq!(p.pattern(), "console-{instance}");
    let alpha = InstanceName::parse("alpha").unwrap();
    let zone = Zone::parse("us-east1").unwrap();
    assert_eq!(
        p.hostname(&alpha, &zone, "Kanmon.Test."),
        "console-alpha.us-east1.kanmon.test"
    );
    for bad in [
        "{instance}",
        "console",
        "{instance}-{instance}",
        "{instance}.admin",
        "-x{instance}",
        "{instance}-x-",
        "{instance}_c",
    ] {
        assert!(ConsoleNames::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn console_names_win_and_are_reserved() {
    let d = ConsoleNames::default();
    let t = d
        .target("alpha-console.us-east1.kanmon.test", BASE)
        .unwrap();
    assert_eq!((t.instance, t.zone, t.console), ("alpha", "us-east1", true));
    let t = d.target("Alpha.US-east1.kanmon.test", BASE).unwrap();
    assert_eq!((t.instance, t.console), ("Alpha", false));
    // `console` alone and `-console` are no console names (nothing in front of the suffix).
    assert!(
        !d.target("console.us-east1.kanmon.test", BASE)
            .unwrap()
            .console
    );
    assert!(d.claims("alpha-console"));
    assert!(d.claims("ALPHA-CONSOLE"));
    assert!(!d.claims("console"));
    assert!(!d.claims("alpha-consoles"));
    assert_eq!(d.target("alpha-console.kanmon.test", BASE), None);
}

#[test]
fn allow_lists() {
    let ip = |s: &str| Some(s.parse().unwrap());
    assert_eq!(admits(&[], ip("10.0.0.1")), Err(ConsoleRefusal::Closed));
    let allow = nets(&["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(admits(&allow, ip("10.1.2.3")), Ok(()));
    assert_eq!(admits(&allow, ip("::ffff:10.1.2.3")), Ok(()));
    assert_eq!(admits(&allow, ip("2001:db8::1")), Ok(()));
    assert_eq!(
        admits(&allow, ip("11.0.0.1")),
        Err(ConsoleRefusal::NotAllowed)
    );
    assert_eq!(admits(&allow, None), Err(ConsoleRefusal::NoClientAddress));
}

#[test]
fn the_console_goes_to_the_first_ready_node_with_a_console_never_a_draining_one() {
    use NodeState::*;
    let table = HealthTable::new();
    table.publish_all(vec![
        spec(
            "alpha",
            &[
                (Draining, true),
                (Ready, false),
                (Ready, true),
                (Ready, true),
            ],
            &["127.0.0.0/8"],
        ),
        spec("beta", &[(Ready, true)], &[]),
        spec("gamma", &[(Draining, true)], &["0.0.0.0/0"]),
    ]);
    let client = Some("127.0.0.1".parse().unwrap());
    for _ in 0..10 {
        let g = table
            .pick_console("alpha", "us-east1", client, 0, None)
            .unwrap();
        assert_eq!(
            (g.node().id(), g.addr().port(), g.is_console()),
            ("alpha-2", 8002, true)
        );
    }
    let g = table
        .pick_console("alpha", "us-east1", client, 0, Some("alpha-2"))
        .unwrap();
    assert_eq!(g.node().id(), "alpha-3");
    table.load().find("alpha", "us-east1").unwrap().nodes()[2]
        .stats()
        .eject(0, 1000);
    let g = table
        .pick_console("alpha", "us-east1", client, 10, None)
        .unwrap();
    assert_eq!(g.node().id(), "alpha-3");
    let refused = table
        .pick_console("beta", "us-east1", client, 0, None)
        .unwrap_err();
    assert_eq!(refused, ConsolePickError::Refused(ConsoleRefusal::Closed));
    // fallback_to_draining is for API traffic only.
    let none = table
        .pick_console("gamma", "us-east1", client, 0, None)
        .unwrap_err();
    assert_eq!(none, ConsolePickError::Pick(crate::PickError::NoReadyNode));
    let other = Some("192.0.2.1".parse().unwrap());
    let refused = table
        .pick_console("alpha", "us-east1", other, 0, None)
        .unwrap_err();
    assert_eq!(
        refused,
        ConsolePickError::Refused(ConsoleRefusal::NotAllowed)
    );
}

use crate::ConsolePickError;

proptest! {
    /// A console hostname names exactly its own deployment's console, and no deployment name
    /// the control plane allows reads as a console name.
    #[test]
    fn a_console_name_never_names_another_tenant(
        a in "[a-z][a-z0-9-]{1,40}[a-z0-9]",
        b in "[a-z][a-z0-9-]{1,40}[a-z0-9]",
        pattern in prop_oneof![
            Just("{instance}-console".to_string()),
            Just("console-{instance}".to_string()),
            "[a-z]{1,4}-\\{instance\\}-[a-z]{1,4}",
        ],
    ) {
        let names = ConsoleNames::parse(&pattern).unwrap();
        let zone = Zone::parse("us-east1").unwrap();
        let ia = InstanceName::parse(&a).unwrap();
        let host = names.hostname(&ia, &zone, BASE);
        let upper = host.to_ascii_uppercase();
        let t = names.target(&upper, BASE).unwrap();
        prop_assert!(t.console);
        prop_assert!(t.instance.eq_ignore_ascii_case(&a));
        if a != b {
            prop_assert!(!t.instance.eq_ignore_ascii_case(&b));
        }
        // An allowed deployment name is read as that deployment, never as a console.
        if !names.claims(&b) {
            let ib = InstanceName::parse(&b).unwrap();
            let api = crate::hostname(&ib, &zone, BASE);
            let t = names.target(&api, BASE).unwrap();
            prop_assert!(!t.console);
            prop_assert_eq!(t.instance, b.as_str());
            prop_assert_ne!(api, host.clone());
        }
    }

    #[test]
    fn hostile_input_never_panics(s in ".*", p in ".*") {
        let names = ConsoleNames::default();
        let _ = names.target(&s, BASE);
        let _ = names.claims(&s);
        let _ = names.instance_of(&s);
        let _ = ConsoleNames::parse(&p);
    }

    /// A console connection goes only to a ready node with a console, whatever the states.
    #[test]
    fn console_picks_only_ready_nodes_with_a_console(
        states in proptest::collection::vec((0u8..3, any::<bool>()), 1..8),
        exclude in proptest::option::of(0usize..8),
    ) {
        let states: Vec<_> = states.into_iter().map(|(s, c)| (NodeState::ALL[s as usize], c)).collect();
        let table = HealthTable::new();
        table.publish_all(vec![spec("alpha", &states, &["0.0.0.0/0"])]);
        let snap = table.load_full();
        let dep: &Arc<_> = snap.find("alpha", "us-east1").unwrap();
        let exclude = exclude.map(|i| format!("alpha-{i}"));
        match pick_console_in(dep, 0, exclude.as_deref()) {
            Ok(g) => {
                prop_assert_eq!(g.node().state(), NodeState::Ready);
                prop_assert_eq!(Some(g.addr()), g.node().console());
            }
            Err(_) => prop_assert!(!states.iter().any(|(s, c)| *s == NodeState::Ready && *c)),
        }
    }
}
