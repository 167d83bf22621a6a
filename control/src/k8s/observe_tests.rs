//! The pure pod mapping: examples for every observation, and properties over arbitrary pods and
//! view sequences.

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetStatus},
        core::v1::{
            Container, ContainerPort, ContainerState, ContainerStateRunning,
            ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod, PodCondition,
            PodSpec, PodStatus,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::runtime::watcher::Event;
use proptest::prelude::*;

use super::{
    names::{labels, Role, GENERATION_ANNOTATION},
    observe::{changes, observe, ContainerView, NodeObservation as O, PodView},
    watch::{Input, Tracker},
};

#[derive(Debug, Clone, Copy)]
enum State {
    Pending,
    Running,
    Waiting(&'static str),
    Terminated(i32),
}

#[derive(Debug, Clone)]
struct P {
    uid: &'static str,
    ip: Option<&'static str>,
    state: State,
    ready: bool,
    deleting: bool,
    restarts: i32,
    last_exit: Option<i32>,
}

const RUNNING: P = P {
    uid: "u1",
    ip: Some("10.1.0.7"),
    state: State::Running,
    ready: false,
    deleting: false,
    restarts: 0,
    last_exit: None,
};

fn pod(p: &P) -> Pod {
    let state = match p.state {
        State::Pending => None,
        State::Running => Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        }),
        State::Waiting(r) => Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(r.into()),
                ..ContainerStateWaiting::default()
            }),
            ..ContainerState::default()
        }),
        State::Terminated(code) => Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
    };
    let port = |name: &str, n| ContainerPort {
        name: Some(name.into()),
        container_port: n,
        ..ContainerPort::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some("alpha-0".into()),
            uid: Some(p.uid.into()),
            labels: Some(labels("alpha", Some(Role::Node))),
            annotations: Some([(GENERATION_ANNOTATION.to_string(), "3".to_string())].into()),
            deletion_timestamp: p.deleting.then(|| Time(Default::default())),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "node".into(),
                ports: Some(vec![port("http", 7350), port("grpc", 7349)]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            pod_ip: p.ip.map(Into::into),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if p.ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "node".into(),
                state,
                restart_count: p.restarts,
                last_state: p.last_exit.map(|code| ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn view(p: &P) -> PodView {
    observe(&pod(p)).expect("a node pod")
}

fn whats(prev: Option<&P>, next: Option<&P>) -> Vec<O> {
    let (a, b) = (prev.map(view), next.map(view));
    changes(a.as_ref(), b.as_ref())
        .into_iter()
        .map(|o| o.what)
        .collect()
}

#[test]
fn a_running_pod_is_started_at_its_ip_and_ports_then_ready() {
    let started = whats(None, Some(&RUNNING));
    let O::Started(e) = &started[0] else {
        panic!("{started:?}")
    };
    assert_eq!(e.addr, "10.1.0.7:7350".parse().unwrap());
    assert_eq!(e.grpc, Some("10.1.0.7:7349".parse().unwrap()));
    assert_eq!(started.len(), 1);
    let ready = P {
        ready: true,
        ..RUNNING
    };
    assert_eq!(whats(Some(&RUNNING), Some(&ready)), vec![O::Ready]);
    assert_eq!(whats(Some(&ready), Some(&RUNNING)), vec![O::NotReady]);
    let v = view(&ready);
    assert_eq!((v.incarnation.as_str(), v.generation), ("u1", Some(3)));
}

#[test]
fn a_pending_pod_has_no_endpoints() {
    let pending = P {
        ip: None,
        state: State::Pending,
        ..RUNNING
    };
    assert!(whats(None, Some(&pending)).is_empty());
    // An IP but a container that does not run yet is not started either.
    let no_container = P {
        ip: Some("10.1.0.7"),
        ..pending
    };
    assert!(whats(None, Some(&no_container)).is_empty());
}

#[test]
fn a_deleted_pod_drains_then_exits_then_goes() {
    let ready = P {
        ready: true,
        ..RUNNING
    };
    // The kubelet may still report Ready for a moment: a terminating pod is never ready.
    let deleting = P {
        deleting: true,
        ..ready.clone()
    };
    assert_eq!(whats(Some(&ready), Some(&deleting)), vec![O::Draining]);
    assert!(!view(&deleting).ready);
    let exited = P {
        state: State::Terminated(0),
        ..deleting.clone()
    };
    assert_eq!(
        whats(Some(&deleting), Some(&exited)),
        vec![O::Exited { code: Some(0) }]
    );
    assert_eq!(whats(Some(&exited), None), vec![O::Gone]);
    // Removed before any final status: the exit has no code.
    assert_eq!(
        whats(Some(&deleting), None),
        vec![O::Exited { code: None }, O::Gone]
    );
}

#[test]
fn restarts_and_crash_loops_are_reported_with_counts_and_codes() {
    let backoff = P {
        state: State::Waiting("CrashLoopBackOff"),
        restarts: 2,
        last_exit: Some(3),
        ..RUNNING
    };
    assert_eq!(
        whats(Some(&RUNNING), Some(&backoff)),
        vec![
            O::Restarting {
                restarts: 2,
                last_exit: Some(3)
            },
            O::CrashLoopBackOff {
                restarts: 2,
                last_exit: Some(3)
            }
        ]
    );
    // The same back-off again is not news; another restart into back-off is.
    assert!(whats(Some(&backoff), Some(&backoff)).is_empty());
    let again = P {
        restarts: 3,
        ..backoff.clone()
    };
    assert_eq!(whats(Some(&backoff), Some(&again)).len(), 2);
    // A waiting container that never ran (image pull) is pending, not crash-looping.
    let pulling = P {
        state: State::Waiting("ErrImagePull"),
        ..RUNNING
    };
    assert_eq!(view(&pulling).container, ContainerView::Pending);
}

#[test]
fn a_new_incarnation_ends_the_old_one_first() {
    let old = P {
        ready: true,
        ..RUNNING
    };
    let new = P {
        uid: "u2",
        ..RUNNING
    };
    let obs = changes(Some(&view(&old)), Some(&view(&new)));
    let got: Vec<(&str, &O)> = obs
        .iter()
        .map(|o| (o.incarnation.as_str(), &o.what))
        .collect();
    assert!(
        matches!(
            got[..],
            [
                ("u1", O::Exited { code: None }),
                ("u1", O::Gone),
                ("u2", O::Started(_))
            ]
        ),
        "{got:?}"
    );
}

#[test]
fn pods_the_driver_did_not_make_are_ignored() {
    let mut p = pod(&RUNNING);
    p.metadata.labels = None;
    assert!(observe(&p).is_none());
}

fn set(generation: i64, observed: Option<i64>) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            generation: Some(generation),
            ..ObjectMeta::default()
        },
        status: observed.map(|o| StatefulSetStatus {
            observed_generation: Some(o),
            ..StatefulSetStatus::default()
        }),
        ..StatefulSet::default()
    }
}

#[test]
fn observations_wait_for_the_statefulset_controller() {
    let mut t = Tracker::default();
    // Before the set is seen, and while its status is behind its spec: held.
    assert!(t.handle(Input::Pod(Event::Apply(pod(&RUNNING)))).is_empty());
    assert!(t
        .handle(Input::Set(Event::Apply(set(2, Some(1)))))
        .is_empty());
    let ready = P {
        ready: true,
        ..RUNNING
    };
    assert!(t.handle(Input::Pod(Event::Apply(pod(&ready)))).is_empty());
    // Caught up: everything held is released once, in order.
    let got: Vec<O> = t
        .handle(Input::Set(Event::Apply(set(2, Some(2)))))
        .into_iter()
        .map(|o| o.what)
        .collect();
    assert!(matches!(got[..], [O::Started(_), O::Ready]), "{got:?}");
    assert!(t
        .handle(Input::Set(Event::Apply(set(2, Some(2)))))
        .is_empty());
}

#[test]
fn a_relist_reports_pods_deleted_while_the_watch_was_down() {
    let mut t = Tracker::default();
    t.handle(Input::Set(Event::Apply(set(1, Some(1)))));
    assert_eq!(t.handle(Input::Pod(Event::Apply(pod(&RUNNING)))).len(), 1);
    t.handle(Input::Pod(Event::Init));
    let got: Vec<O> = t
        .handle(Input::Pod(Event::InitDone))
        .into_iter()
        .map(|o| o.what)
        .collect();
    assert_eq!(got, vec![O::Exited { code: None }, O::Gone]);
}

#[test]
fn a_late_delete_of_the_old_incarnation_keeps_the_new_one() {
    let mut t = Tracker::default();
    t.handle(Input::Set(Event::Apply(set(1, Some(1)))));
    t.handle(Input::Pod(Event::Apply(pod(&RUNNING))));
    let new = P {
        uid: "u2",
        ..RUNNING
    };
    t.handle(Input::Pod(Event::Apply(pod(&new))));
    assert!(t
        .handle(Input::Pod(Event::Delete(pod(&RUNNING))))
        .is_empty());
}

fn arb_p() -> impl Strategy<Value = P> {
    let state = prop_oneof![
        Just(State::Pending),
        Just(State::Running),
        Just(State::Waiting("CrashLoopBackOff")),
        Just(State::Waiting("ContainerCreating")),
        (0..3i32).prop_map(State::Terminated),
    ];
    (
        prop_oneof![Just("u1"), Just("u2")],
        proptest::option::of(Just("10.1.0.9")),
        state,
        any::<bool>(),
        any::<bool>(),
        0..4i32,
        proptest::option::of(0..3i32),
    )
        .prop_map(|(uid, ip, state, ready, deleting, restarts, last_exit)| P {
            uid,
            ip,
            state,
            ready,
            deleting,
            restarts,
            last_exit,
        })
}

/// What the API server allows: a pod's deletion cannot be taken back.
fn sticky_deletion(mut seq: Vec<P>) -> Vec<P> {
    let mut deleted: Vec<&'static str> = Vec::new();
    for p in &mut seq {
        if deleted.contains(&p.uid) {
            p.deleting = true;
        } else if p.deleting {
            deleted.push(p.uid);
        }
    }
    seq
}

proptest! {
    /// Whatever the pods do: a view has endpoints only when running with an IP; it is ready
    /// only when running, not terminating and the condition says so; the same view twice is no
    /// news; a terminating incarnation is never reported ready; every observation names the
    /// incarnation it is about.
    #[test]
    fn observations_follow_the_pods(seq in proptest::collection::vec(arb_p(), 1..12)) {
        let mut prev: Option<PodView> = None;
        let mut draining: Vec<String> = Vec::new();
        for p in &sticky_deletion(seq) {
            let v = view(p);
            let running = matches!(p.state, State::Running);
            prop_assert_eq!(v.endpoints.is_some(), running && p.ip.is_some());
            prop_assert_eq!(v.ready, running && p.ready && !p.deleting);
            prop_assert!(changes(Some(&v), Some(&v)).is_empty());
            for o in changes(prev.as_ref(), Some(&v)) {
                let known = o.incarnation == v.incarnation
                    || prev.as_ref().is_some_and(|p| p.incarnation == o.incarnation);
                prop_assert!(known);
                if o.what == O::Draining {
                    draining.push(o.incarnation.clone());
                }
                if o.what == O::Ready {
                    prop_assert!(!draining.contains(&o.incarnation) || !v.terminating);
                    prop_assert!(!v.terminating);
                }
            }
            prev = Some(v);
        }
    }

    /// Folding the observations reproduces the facts of the last view: whether it has
    /// endpoints (which), is ready, is draining.
    #[test]
    fn observations_replay_to_the_last_view(seq in proptest::collection::vec(arb_p(), 1..12)) {
        let mut prev: Option<PodView> = None;
        let (mut ready, mut draining, mut endpoints) = (false, false, None);
        for p in &sticky_deletion(seq) {
            let v = view(p);
            for o in changes(prev.as_ref(), Some(&v)) {
                match o.what {
                    O::Started(e) => endpoints = Some(e),
                    O::Ready => ready = true,
                    O::NotReady => ready = false,
                    O::Draining => { draining = true; ready = false; }
                    O::Gone => { ready = false; draining = false; endpoints = None; }
                    _ => {}
                }
            }
            prop_assert_eq!(ready, v.ready);
            prop_assert_eq!(draining, v.terminating);
            if v.endpoints.is_some() {
                prop_assert_eq!(endpoints, v.endpoints);
            }
            prev = Some(v);
        }
    }
}
