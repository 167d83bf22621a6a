//! A simulated cluster behind the fixture: it plays the StatefulSet controller (pods
//! `{set}-N` from the template, `observedGeneration`, ready counts), the kubelet (an IP, a
//! running container passing its readiness probe, or — for a crashing image — exits and a
//! CrashLoopBackOff with growing restart counts; a deleted pod keeps serving for the grace, then
//! exits 0 and is removed) and the EndpointSlice controller (one slice per Service, the
//! Service's labels mirrored, `serving && terminating` for a deleted pod). With a
//! [`PodRuntime`] in [`SimOpts::runtime`], the pods it takes run real containers: the kubelet
//! gives them the runtime's IPs, marks them Ready when the runtime's probe passes, and stops
//! them when their grace has ended.
//!
//! Every write is conditional on a difference, so the controllers settle; they run on every
//! change of the fixture and on a short tick (for the timed transitions) until dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::time::Instant;

use super::{
    jobs::{JobScript, JobStep},
    labels_match,
    pods::PodRuntime,
    ApiFixture, Kind, State,
};

/// How the simulated cluster behaves.
#[derive(Debug, Clone)]
pub struct SimOpts {
    /// How long a deleted pod keeps running before it exits (the real one would wait for its
    /// preStop and the node's drain; tests use a short one).
    pub grace: Duration,
    /// A container whose image contains this exits with code 1 on every start.
    pub crash_marker: String,
    /// Time between the steps of a crash loop, and the controllers' tick.
    pub tick: Duration,
    /// Runs real containers (listeners) for the pods it takes; none: pods only look alive.
    pub runtime: Option<Arc<dyn PodRuntime>>,
    /// Plays the Job pods it takes (a build's outcome); none: every Job pod is a `pg_dump`.
    pub jobs: Option<Arc<dyn JobScript>>,
}

impl Default for SimOpts {
    fn default() -> Self {
        Self {
            grace: Duration::from_millis(500),
            crash_marker: "crash".into(),
            tick: Duration::from_millis(25),
            runtime: None,
            jobs: None,
        }
    }
}

/// Restarts after which a crashing container stays in back-off (bounds the simulation).
const MAX_RESTARTS: i64 = 4;

/// The running simulation; stopped when dropped.
pub struct SimCluster {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Timers {
    /// Pod UID → when its deletion was first seen.
    terminating: HashMap<String, Instant>,
    /// Pod UID → when its crash loop takes its next step.
    crash: HashMap<String, Instant>,
    next_ip: u32,
    /// Pod UIDs whose container the runtime runs and has not stopped yet.
    running: std::collections::HashSet<String>,
}

impl SimCluster {
    /// Starts the controllers against `api`.
    pub fn start(api: &ApiFixture, opts: SimOpts) -> Self {
        let state = api.state.clone();
        let changed = api.changed();
        let task = tokio::spawn(async move {
            let mut timers = Timers::default();
            loop {
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(opts.tick) => {}
                }
                reconcile(&state, &opts, &mut timers, Instant::now());
            }
        });
        Self { task }
    }
}

fn reconcile(state: &Arc<Mutex<State>>, opts: &SimOpts, t: &mut Timers, now: Instant) {
    let mut st = state.lock().unwrap();
    if st.down {
        return;
    }
    statefulsets(&mut st);
    jobs(&mut st);
    kubelet(&mut st, opts, t, now);
    endpoint_slices(&mut st);
}

fn of(st: &State, kind: Kind) -> Vec<Value> {
    st.objects
        .iter()
        .filter(|((k, _, _), _)| *k == kind)
        .map(|(_, o)| o.clone())
        .collect()
}

fn meta<'a>(o: &'a Value, f: &str) -> &'a str {
    o["metadata"][f].as_str().unwrap_or_default()
}

/// Writes `o` if it differs from what is stored.
fn put_if_changed(st: &mut State, kind: Kind, o: Value) {
    let (ns, name) = (
        meta(&o, "namespace").to_string(),
        meta(&o, "name").to_string(),
    );
    let key = (kind, ns.clone(), name.clone());
    if st.objects.get(&key) != Some(&o) {
        st.upsert(kind, &ns, &name, o, true);
    }
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn statefulsets(st: &mut State) {
    for set in of(st, Kind::StatefulSet) {
        let (ns, name) = (
            meta(&set, "namespace").to_string(),
            meta(&set, "name").to_string(),
        );
        let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1);
        let template = &set["spec"]["template"];
        let revision = format!("{name}-{}", set["metadata"]["generation"]);
        let pods: Vec<Value> = of(st, Kind::Pod)
            .into_iter()
            .filter(|p| {
                meta(p, "namespace") == ns
                    && p["metadata"]["ownerReferences"][0]["uid"] == set["metadata"]["uid"]
            })
            .collect();
        for i in 0..replicas {
            let pod = format!("{name}-{i}");
            if st
                .objects
                .contains_key(&(Kind::Pod, ns.clone(), pod.clone()))
            {
                continue;
            }
            let mut labels = template["metadata"]["labels"].clone();
            labels["statefulset.kubernetes.io/pod-name"] = json!(pod);
            labels["controller-revision-hash"] = json!(revision);
            let object = json!({
                "metadata": {"name": pod, "namespace": ns, "labels": labels,
                    "annotations": template["metadata"]["annotations"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "name": name, "uid": set["metadata"]["uid"], "controller": true}]},
                "spec": template["spec"],
                "status": {"phase": "Pending"},
            });
            st.upsert(Kind::Pod, &ns, &pod, object, true);
        }
        for p in &pods {
            let ordinal: i64 = meta(p, "name")
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if ordinal >= replicas && p["metadata"]["deletionTimestamp"].is_null() {
                // Scale-down: the controller deletes the highest ordinals.
                let _deleted = st.delete(Kind::Pod, &ns, meta(p, "name"), None);
            }
        }
        let mut set = set.clone();
        set["status"] = json!({
            "observedGeneration": set["metadata"]["generation"],
            "replicas": pods.len(),
            "readyReplicas": pods.iter().filter(|p| ready(p)).count(),
            "currentRevision": revision, "updateRevision": revision,
        });
        put_if_changed(st, Kind::StatefulSet, set);
    }
}

/// The Job controller: one pod per Job, and the Job's outcome from that pod's exit.
fn jobs(st: &mut State) {
    for job in of(st, Kind::Job) {
        let (ns, name) = (
            meta(&job, "namespace").to_string(),
            meta(&job, "name").to_string(),
        );
        let pod_name = format!("{name}-sim");
        let Some(pod) = st
            .objects
            .get(&(Kind::Pod, ns.clone(), pod_name.clone()))
            .cloned()
        else {
            if job["status"].is_null() {
                let template = &job["spec"]["template"];
                let mut labels = template["metadata"]["labels"].clone();
                labels["job-name"] = json!(name);
                labels["batch.kubernetes.io/job-name"] = json!(name);
                let object = json!({
                    "metadata": {"name": pod_name, "namespace": ns, "labels": labels,
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                            "name": name, "uid": job["metadata"]["uid"], "controller": true}]},
                    "spec": template["spec"],
                    "status": {"phase": "Pending"},
                });
                st.upsert(Kind::Pod, &ns, &pod_name, object, true);
                let mut job = job.clone();
                job["status"] = json!({"active": 1});
                put_if_changed(st, Kind::Job, job);
            }
            continue;
        };
        let outcome = match pod["status"]["phase"].as_str() {
            Some("Succeeded") => {
                json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
            }
            Some("Failed") => {
                json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
            }
            _ => continue,
        };
        let mut job = job.clone();
        job["status"] = outcome;
        put_if_changed(st, Kind::Job, job);
    }
}

/// A run-to-completion pod (`restartPolicy: Never`): running, then exited — 0, or 1 for a
/// crashing image — with its command and `PGDATABASE` recorded as its log.
fn job_pod(st: &mut State, opts: &SimOpts, pod: &Value) {
    let (ns, name) = (
        meta(pod, "namespace").to_string(),
        meta(pod, "name").to_string(),
    );
    let c = &pod["spec"]["containers"][0];
    let crashing = c["image"]
        .as_str()
        .is_some_and(|i| i.contains(&opts.crash_marker));
    let mut next = pod.clone();
    if pod["status"]["podIP"].is_null() {
        next["status"] = pod_status(
            "10.244.250.2",
            container_state(json!({"running": {}}), 0, None),
            false,
        );
    } else if let Some(step) = opts.jobs.as_ref().and_then(|j| {
        pod["status"]["containerStatuses"][0]["state"]["terminated"]
            .is_null()
            .then(|| j.step(pod))
            .flatten()
    }) {
        let JobStep::Exit {
            code,
            logs,
            message,
        } = step
        else {
            return;
        };
        for (container, text) in logs {
            st.logs
                .insert((ns.clone(), format!("{name}/{container}")), text);
        }
        let mut state = container_state(
            json!({"terminated": {"exitCode": code, "message": message}}),
            0,
            None,
        );
        state["name"] = c["name"].clone();
        next["status"] = pod_status("10.244.250.2", state, false);
        next["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
    } else if pod["status"]["containerStatuses"][0]["state"]["terminated"].is_null() {
        let code = i64::from(crashing);
        let db = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "PGDATABASE")
            .and_then(|e| e["value"].as_str())
            .unwrap_or_default();
        let command = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        let log = format!("-- {} of {db}\n", command.collect::<Vec<_>>().join(" "));
        st.logs.insert((ns, name), log);
        next["status"] = pod_status(
            "10.244.250.2",
            container_state(json!({"terminated": {"exitCode": code}}), 0, None),
            false,
        );
        next["status"]["phase"] = json!(if crashing { "Failed" } else { "Succeeded" });
    }
    put_if_changed(st, Kind::Pod, next);
}

fn container_state(state: Value, restarts: i64, last_exit: Option<i64>) -> Value {
    let mut s = json!({"name": "node", "state": state, "restartCount": restarts,
        "ready": false, "image": "", "imageID": ""});
    if let Some(code) = last_exit {
        s["lastState"] = json!({"terminated": {"exitCode": code, "reason": "Error"}});
    }
    s
}

fn pod_status(ip: &str, container: Value, is_ready: bool) -> Value {
    json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if is_ready { "True" } else { "False" }}],
        "containerStatuses": [container]})
}

fn kubelet(st: &mut State, opts: &SimOpts, t: &mut Timers, now: Instant) {
    for pod in of(st, Kind::Pod) {
        if pod["spec"]["restartPolicy"] == "Never" && pod["metadata"]["deletionTimestamp"].is_null()
        {
            job_pod(st, opts, &pod);
            continue;
        }
        let (ns, name) = (
            meta(&pod, "namespace").to_string(),
            meta(&pod, "name").to_string(),
        );
        let uid = meta(&pod, "uid").to_string();
        let ip = pod["status"]["podIP"].as_str().map(str::to_string);
        let crashing = pod["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.contains(&opts.crash_marker));
        let cs = &pod["status"]["containerStatuses"][0];
        let restarts = cs["restartCount"].as_i64().unwrap_or(0);
        let mut next = pod.clone();
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            let since = *t.terminating.entry(uid.clone()).or_insert(now);
            if now < since + opts.grace {
                continue; // preStop and drain: still serving
            }
            if cs["state"]["terminated"].is_null() {
                if let (true, Some(rt)) = (t.running.remove(&uid), &opts.runtime) {
                    rt.stop(&uid);
                }
                let code = if crashing { 1 } else { 0 };
                let ip = ip.unwrap_or_default();
                next["status"] = pod_status(
                    &ip,
                    container_state(json!({"terminated": {"exitCode": code}}), restarts, None),
                    false,
                );
                next["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                put_if_changed(st, Kind::Pod, next);
            } else {
                t.terminating.remove(&uid);
                t.crash.remove(&uid);
                st.remove(Kind::Pod, &ns, &name, true);
            }
            continue;
        }
        let ip = match ip {
            Some(ip) => ip,
            None => {
                t.next_ip += 1;
                let (ip, runs) = match &opts.runtime {
                    Some(rt) => {
                        let ip = rt.pod_ip(t.next_ip);
                        let runs = !crashing && rt.start(&pod, &ip);
                        (ip, runs)
                    }
                    None => (
                        format!("10.244.{}.{}", t.next_ip / 250, t.next_ip % 250 + 2),
                        false,
                    ),
                };
                if runs {
                    t.running.insert(uid.clone());
                }
                let running = container_state(json!({"running": {}}), 0, None);
                next["status"] = pod_status(&ip, running, !crashing && !runs);
                if crashing {
                    t.crash.insert(uid.clone(), now + opts.tick * 2);
                }
                put_if_changed(st, Kind::Pod, next);
                continue;
            }
        };
        if t.running.contains(&uid) && !ready(&pod) {
            // The readiness probe of a real container.
            if opts.runtime.as_ref().is_some_and(|rt| rt.ready(&uid)) {
                next["status"] = pod_status(&ip, cs.clone(), true);
                put_if_changed(st, Kind::Pod, next);
            }
            continue;
        }
        let Some(due) = t.crash.get(&uid).copied() else {
            continue;
        };
        if now < due || restarts >= MAX_RESTARTS && !cs["state"]["waiting"].is_null() {
            continue;
        }
        // running → exited 1 → back-off (restart counted) → running → ...
        let container = if !cs["state"]["running"].is_null() {
            container_state(
                json!({"terminated": {"exitCode": 1, "reason": "Error"}}),
                restarts,
                None,
            )
        } else if !cs["state"]["terminated"].is_null() {
            container_state(
                json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                restarts + 1,
                Some(1),
            )
        } else {
            container_state(json!({"running": {}}), restarts, Some(1))
        };
        next["status"] = pod_status(&ip, container, false);
        t.crash.insert(uid, now + opts.tick * 2);
        put_if_changed(st, Kind::Pod, next);
    }
}

/// The selector of a Service as a label-selector string.
fn selector(svc: &Value) -> Option<String> {
    let sel = svc["spec"]["selector"].as_object()?;
    Some(
        sel.iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn container_port(pod: &Value, target: &Value) -> Option<i64> {
    if let Some(n) = target.as_i64() {
        return Some(n);
    }
    let name = target.as_str()?;
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
}

fn endpoint_slices(st: &mut State) {
    let pods = of(st, Kind::Pod);
    for svc in of(st, Kind::Service) {
        let (ns, name) = (
            meta(&svc, "namespace").to_string(),
            meta(&svc, "name").to_string(),
        );
        let Some(sel) = selector(&svc) else { continue };
        let members: Vec<&Value> = pods
            .iter()
            .filter(|p| meta(p, "namespace") == ns && labels_match(&p["metadata"]["labels"], &sel))
            .filter(|p| p["status"]["podIP"].is_string())
            .filter(|p| p["status"]["containerStatuses"][0]["state"]["terminated"].is_null())
            .collect();
        let ports: Vec<Value> = svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let port = members
                    .first()
                    .and_then(|m| container_port(m, &p["targetPort"]))
                    .or_else(|| p["port"].as_i64());
                json!({"name": p["name"], "port": port, "protocol": "TCP"})
            })
            .collect();
        let endpoints: Vec<Value> = members
            .iter()
            .map(|p| {
                let terminating = !p["metadata"]["deletionTimestamp"].is_null();
                let serving = ready(p);
                json!({"addresses": [p["status"]["podIP"]],
                    "conditions": {"ready": serving && !terminating, "serving": serving,
                        "terminating": terminating},
                    "targetRef": {"kind": "Pod", "name": p["metadata"]["name"], "namespace": ns,
                        "uid": p["metadata"]["uid"]}})
            })
            .collect();
        let mut labels = svc["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["kubernetes.io/service-name"] = json!(name);
        labels["endpointslice.kubernetes.io/managed-by"] = json!("endpointslice-controller.k8s.io");
        let slice_name = format!("{name}-sim");
        let key = (Kind::Slice, ns.clone(), slice_name.clone());
        let mut slice = st
            .objects
            .get(&key)
            .cloned()
            .unwrap_or_else(|| json!({"metadata": {"name": slice_name, "namespace": ns}}));
        let want = (&labels, &ports, &endpoints);
        if (
            &slice["metadata"]["labels"],
            &slice["ports"],
            &slice["endpoints"],
        ) == (want.0, &json!(want.1), &json!(want.2))
        {
            continue;
        }
        slice["metadata"]["labels"] = labels;
        slice["addressType"] = json!("IPv4");
        slice["ports"] = json!(ports);
        slice["endpoints"] = json!(endpoints);
        st.upsert(Kind::Slice, &ns, &slice_name, slice, true);
    }
}
