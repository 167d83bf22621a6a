//! Unit and property tests of the notification rules.

use proptest::prelude::*;

use super::*;
use crate::domain::{
    sim::{catalog, create, keys, zones},
    DeploymentType, OpKind,
};

fn dep(org: &str, instance: &str) -> Deployment {
    let mut c = create(DeploymentType::Development, 1);
    c.org = org.into();
    c.instance = kanmon_router::InstanceName::parse(instance).unwrap();
    Deployment::create(
        c,
        &catalog(),
        &zones(),
        "kanmon.test",
        keys(),
        "ann",
        Timestamp(0),
    )
    .unwrap()
}

fn op(instance: &str, status: OpStatus, error: Option<&str>) -> Operation {
    let mut o = Operation::new(7, instance, OpKind::Reboot, "ann", Timestamp(5));
    o.status = status;
    o.error = error.map(str::to_string);
    o
}

fn sub(id: u64, scope: SubScope, org: &str, events: &[NotifyEvent]) -> Subscription {
    Subscription {
        id,
        scope,
        org: org.into(),
        channel: Channel::Webhook {
            url: "https://hooks.example/k".into(),
        },
        events: events.iter().copied().collect(),
        created_by: "ann".into(),
        created_at: Timestamp(0),
    }
}

#[test]
fn a_finished_operation_is_one_event() {
    assert_eq!(NotifyEvent::of(&op("alpha", OpStatus::Pending, None)), None);
    assert_eq!(
        NotifyEvent::of(&op("alpha", OpStatus::InProgress, None)),
        None
    );
    assert_eq!(
        NotifyEvent::of(&op("alpha", OpStatus::Completed, None)),
        Some(NotifyEvent::Completed)
    );
    assert_eq!(
        NotifyEvent::of(&op("alpha", OpStatus::Failed, Some("node alpha-0 crashed"))),
        Some(NotifyEvent::Failed)
    );
    assert_eq!(
        NotifyEvent::of(&op(
            "alpha",
            OpStatus::Failed,
            Some("superseded by operation 9")
        )),
        Some(NotifyEvent::Superseded)
    );
    for e in NotifyEvent::ALL {
        assert_eq!(NotifyEvent::parse(e.as_str()), Some(e));
        assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
    }
}

#[test]
fn routing_follows_scope_org_and_events() {
    use NotifyEvent::*;
    let alpha = dep("acme", "alpha");
    let subs = vec![
        sub(
            1,
            SubScope::Organization { org: "acme".into() },
            "acme",
            &[Completed],
        ),
        sub(
            2,
            SubScope::Organization { org: "zeta".into() },
            "zeta",
            &[Completed],
        ),
        sub(
            3,
            SubScope::Deployment {
                instance: "alpha".into(),
            },
            "acme",
            &[Failed],
        ),
        sub(
            4,
            SubScope::Deployment {
                instance: "beta".into(),
            },
            "acme",
            &[Completed, Failed],
        ),
    ];
    let ids = |o: &Operation| -> Vec<u64> {
        route(&subs, &alpha, o)
            .map(|(_, s)| s.iter().map(|s| s.id).collect())
            .unwrap_or_default()
    };
    assert_eq!(ids(&op("alpha", OpStatus::Completed, None)), [1]);
    assert_eq!(ids(&op("alpha", OpStatus::Failed, Some("x"))), [3]);
    assert!(ids(&op(
        "alpha",
        OpStatus::Failed,
        Some("superseded by operation 2")
    ))
    .is_empty());
    assert!(route(&subs, &alpha, &op("alpha", OpStatus::Pending, None)).is_none());
    // A deployment-level subscription made in another org never hears a later namesake.
    let other = sub(
        5,
        SubScope::Deployment {
            instance: "alpha".into(),
        },
        "zeta",
        &[Completed],
    );
    assert!(!other.hears("acme", "alpha", Completed));
}

#[test]
fn the_payload_names_the_operation_but_not_its_values() {
    let alpha = dep("acme", "alpha");
    let mut o = op("alpha", OpStatus::Completed, None);
    o.kind = OpKind::SetVars {
        vars: [("PASSWORD".to_string(), "hunter2".to_string())].into(),
    };
    let p = payload(&alpha, &o, NotifyEvent::Completed);
    assert_eq!(p["event"], "operation.completed");
    assert_eq!(p["operation"]["kind"], "set-vars");
    assert_eq!(p["deployment"]["instance"], "alpha");
    assert!(!p.to_string().contains("hunter2"), "{p}");
}

#[test]
fn signatures_verify_and_refuse_tampering_and_old_times() {
    let body = br#"{"event":"operation.completed"}"#;
    let h = signature("s3cret", 1_700_000_000, body);
    assert!(h.starts_with("t=1700000000,v1="), "{h}");
    assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
    assert!(verify("s3cret", &h, body, 1_700_000_100, 300));
    assert!(!verify("other", &h, body, 1_700_000_100, 300));
    assert!(!verify("s3cret", &h, b"{}", 1_700_000_100, 300));
    assert!(!verify("s3cret", &h, body, 1_700_001_000, 300));
    let moved = h.replace("t=1700000000", "t=1700000999");
    assert!(!verify("s3cret", &moved, body, 1_700_001_000, 300));
    assert!(!verify("s3cret", "garbage", body, 1_700_000_000, 300));
    assert!(!verify(
        "s3cret",
        "t=1700000000,v1=zz",
        body,
        1_700_000_000,
        300
    ));
}

#[test]
fn retries_back_off_to_the_cap_and_stop() {
    let r = Retry {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(5),
        attempts: 5,
    };
    let at = |made| r.next(made, Timestamp(0)).map(|t| t.0);
    assert_eq!(
        (1..=5).map(at).collect::<Vec<_>>(),
        [Some(1000), Some(2000), Some(4000), Some(5000), None]
    );
}

#[test]
fn targets_inside_the_platform_are_refused() {
    let reach = Reach {
        allow_loopback: false,
        own: vec![
            "0.0.0.0:9101".parse().unwrap(),
            "127.0.0.1:7070".parse().unwrap(),
        ],
    };
    let refused = |a: &str| reach.check(a.parse().unwrap()).is_err();
    for a in [
        "127.0.0.1:8080",
        "[::1]:80",
        "169.254.169.254:80",
        "[fe80::1]:80",
        "10.1.2.3:443",
        "192.168.0.10:443",
        "172.20.0.1:443",
        "100.64.0.1:443",
        "0.0.0.0:80",
        "224.0.0.1:80",
        "[::ffff:169.254.169.254]:80",
        "[fd00::1]:443",
    ] {
        assert!(refused(a), "{a} should be refused");
    }
    assert!(!refused("93.184.216.34:443"));
    assert!(!refused("[2606:2800:220:1::1]:443"));
    let dev = Reach {
        allow_loopback: true,
        ..reach
    };
    assert!(dev.check("127.0.0.1:8080".parse().unwrap()).is_ok());
    // Even in development, never the control plane's own listeners.
    assert!(dev.check("127.0.0.1:7070".parse().unwrap()).is_err());
    assert!(dev.check("127.0.0.1:9101".parse().unwrap()).is_err());
    assert!(dev
        .check("[::ffff:127.0.0.1]:7070".parse().unwrap())
        .is_err());
}

#[test]
fn urls_are_http_with_a_host_and_no_credentials() {
    let reach = Reach::default();
    assert!(check_url("https://hooks.example/k?x=1", &reach).is_ok());
    for bad in [
        "file:///etc/passwd",
        "gopher://hooks.example/",
        "ftp://hooks.example/",
        "https://user:pw@hooks.example/",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9101/metrics",
        "http://[::1]/",
        "not a url",
    ] {
        assert!(check_url(bad, &reach).is_err(), "{bad}");
    }
    assert!(check_url(&format!("https://h.example/{}", "a".repeat(2100)), &reach).is_err());
}

fn event() -> impl Strategy<Value = NotifyEvent> {
    prop::sample::select(NotifyEvent::ALL.to_vec())
}

fn subscription() -> impl Strategy<Value = Subscription> {
    let orgs = prop::sample::select(vec!["acme", "zeta"]);
    let instances = prop::sample::select(vec!["alpha", "beta"]);
    (
        0u64..20,
        any::<bool>(),
        orgs,
        instances,
        prop::collection::btree_set(event(), 0..=3),
    )
        .prop_map(|(id, org_level, org, instance, events)| {
            let scope = if org_level {
                SubScope::Organization { org: org.into() }
            } else {
                SubScope::Deployment {
                    instance: instance.into(),
                }
            };
            Subscription {
                id,
                scope,
                org: org.into(),
                channel: Channel::Email {
                    to: "ops@example.com".into(),
                },
                events,
                created_by: "ann".into(),
                created_at: Timestamp(0),
            }
        })
}

proptest! {
    /// Every subscription routed hears the event, is of the deployment's organization, and
    /// appears once; every subscription left out does not hear it.
    #[test]
    fn routing_is_exactly_the_subscriptions_that_hear(
        subs in prop::collection::vec(subscription(), 0..12),
        org_acme in any::<bool>(),
        failed in any::<bool>(),
    ) {
        let d = dep(if org_acme { "acme" } else { "zeta" }, "alpha");
        let o = op("alpha", if failed { OpStatus::Failed } else { OpStatus::Completed }, None);
        let (event, hit) = route(&subs, &d, &o).unwrap();
        let mut ids: Vec<u64> = hit.iter().map(|s| s.id).collect();
        for s in &hit {
            prop_assert!(s.events.contains(&event));
            prop_assert_eq!(&s.org, &d.org);
        }
        let n = ids.len();
        ids.dedup();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), n);
        for s in &subs {
            if s.hears(&d.org, "alpha", event) {
                prop_assert!(ids.contains(&s.id));
            }
        }
    }

    /// Waits never shrink, never pass the cap, and the number of tries is bounded.
    #[test]
    fn backoff_grows_to_the_cap_and_ends(
        base_ms in 1u64..10_000,
        cap_ms in 1u64..1_000_000,
        attempts in 1u32..40,
        now in 0u64..1u64 << 40,
    ) {
        let r = Retry {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
            attempts,
        };
        let mut last = 0;
        for made in 1..attempts {
            let wait = r.next(made, Timestamp(now)).unwrap().0 - now;
            prop_assert!(wait >= last && wait <= cap_ms.max(1));
            last = wait;
        }
        prop_assert!(r.next(attempts, Timestamp(now)).is_none());
    }

    /// A signature verifies with its own secret and body only.
    #[test]
    fn signatures_bind_secret_time_and_body(
        secret in "[a-f0-9]{1,64}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        flip in any::<prop::sample::Index>(),
        t in 0u64..4_000_000_000,
    ) {
        let h = signature(&secret, t, &body);
        prop_assert!(verify(&secret, &h, &body, t, 0));
        if !body.is_empty() {
            let mut other = body.clone();
            let i = flip.index(other.len());
            other[i] ^= 1;
            prop_assert!(!verify(&secret, &h, &other, t, 0));
        }
    }
}
