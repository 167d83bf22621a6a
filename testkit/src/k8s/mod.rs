//! A stand-in Kubernetes API server on 127.0.0.1, speaking the real wire protocol to the real
//! kube client (and to kubectl). For every kind in [`Kind`] — Namespaces, Pods, StatefulSets,
//! Services, Secrets, NetworkPolicies, PodDisruptionBudgets, EndpointSlices — lists carry
//! `metadata.resourceVersion`, `?watch=1` answers a chunked stream of JSON events (ADDED,
//! MODIFIED, DELETED, BOOKMARK, ERROR), label selectors filter both, and a watch from a
//! compacted resourceVersion gets a `410 Gone` Status (reason `Expired`). Objects are written
//! by server-side apply (`PATCH application/apply-patch+yaml` with a `fieldManager`), read by
//! `GET` and removed by `DELETE` (a Pod gracefully, a Namespace with everything in it, UID
//! preconditions honoured); `/api`, `/apis` and the group documents answer discovery. It can
//! also go down (connections dropped), fall silent (a partition: nothing answered, nothing
//! closed), expire every open watch, change objects without telling watchers, and send raw
//! malformed lines. [`sim::SimCluster`] plays the controllers and the kubelet behind it.
//!
//! Like a real API server it serves TLS only (its own CA, written into the kubeconfig) and
//! answers 401 without the bearer token; by default it refuses endpoint addresses a real server
//! refuses (loopback, link-local) and mirrors a Service's labels onto its slices only as the
//! EndpointSlice controller does. Tests whose nodes listen on loopback opt in with
//! [`FixtureOpts::loopback_endpoints`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::{json, Value};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch, Notify},
};

/// How the fixture behaves where tests need a choice.
#[derive(Debug, Clone, Copy)]
pub struct FixtureOpts {
    /// Accept loopback/link-local endpoint addresses (a real API server refuses them; the
    /// tests' demo nodes listen on 127.0.0.1).
    pub loopback_endpoints: bool,
    /// Copy the Service's labels onto the slices written by `put_node` (what the
    /// EndpointSlice controller does for Services with a selector).
    pub mirror_labels: bool,
}

impl Default for FixtureOpts {
    fn default() -> Self {
        Self {
            loopback_endpoints: false,
            mirror_labels: true,
        }
    }
}

/// The options of tests whose nodes listen on loopback.
pub const LOOPBACK: FixtureOpts = FixtureOpts {
    loopback_endpoints: true,
    mirror_labels: true,
};

/// The bearer token the fixture wants.
pub const TOKEN: &str = "fixture-token-7f3a";

pub mod jobs;
mod kinds;
mod objects;
pub mod pods;
pub mod sim;
mod slices;
mod tls;
mod wire;
pub use kinds::Kind;
pub use slices::{service_json, slice_json, Cond, NOT_SERVING, READY, TERMINATING};
use tls::tls;
use wire::{event, labels_match, serve, status_410};

enum Frame {
    Line(String),
    /// End the stream cleanly (terminating chunk).
    End,
}

struct Watch {
    kind: Kind,
    namespace: Option<String>,
    selector: String,
    fields: String,
    tx: mpsc::UnboundedSender<Frame>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    /// (resourceVersion, kind, event type, object)
    history: Vec<(u64, Kind, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410.
    compacted: u64,
    watches: Vec<Watch>,
    down: bool,
    /// Request log: "LIST services ?query" / "WATCH ...".
    requests: Vec<String>,
    /// When each event was handed to the watch streams (for latency measurements).
    emitted: Vec<Instant>,
    /// Signalled on every write (the simulated cluster's controllers wait on it).
    changed: Arc<Notify>,
    /// Whether the CloudNativePG API is served.
    cnpg: bool,
    /// Pod logs `(namespace, pod)` → text, written by the simulated kubelet.
    logs: BTreeMap<(String, String), String>,
}

pub struct ApiFixture {
    pub addr: SocketAddr,
    opts: FixtureOpts,
    silent: watch::Sender<bool>,
    state: Arc<Mutex<State>>,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiFixture {
    /// A strict fixture (no loopback endpoints, labels mirrored).
    pub async fn start() -> Self {
        Self::start_with(FixtureOpts::default()).await
    }

    pub async fn start_with(opts: FixtureOpts) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let acceptor = tls(dir.path());
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            ..State::default()
        }));
        let (silent, silent_rx) = watch::channel(false);
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                if *silent_rx.borrow() {
                    // Partitioned: the connection is held open and never answered.
                    let mut rx = silent_rx.clone();
                    tokio::spawn(async move {
                        let _held = sock;
                        let _healed = rx.wait_for(|s| !*s).await;
                    });
                    continue;
                }
                if st.lock().unwrap().down {
                    drop(sock); // unreachable: the connection dies before any answer
                    continue;
                }
                let (st, acceptor, rx) = (st.clone(), acceptor.clone(), silent_rx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(sock).await {
                        serve(tls, st, rx).await;
                    }
                });
            }
        });
        Self {
            addr,
            opts,
            silent,
            state,
            dir,
            task,
        }
    }

    /// Writes a kubeconfig pointing at this server (its CA, the right token) and returns
    /// its path.
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_with_token("kubeconfig.yaml", TOKEN)
    }

    /// A kubeconfig named `name` presenting `token`.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: fixture\n  user:\n    token: {token}\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: fixture\n    namespace: default\ncurrent-context: fixture\n",
            self.addr,
            self.dir.path().join("ca.pem").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A `[discovery]` table for the proxy using this server.
    pub fn discovery_toml(&self, stale_after: &str) -> String {
        format!(
            "[discovery]\nkind = \"kubernetes\"\nkubeconfig = \"{}\"\nstale_after = \"{stale_after}\"\n",
            self.kubeconfig().display()
        )
    }

    /// Partition: from now on nothing is answered and nothing is closed (open watches go
    /// quiet, new connections hang before the TLS handshake). `false` heals it; the held
    /// connections are dropped then.
    pub fn set_silent(&self, silent: bool) {
        self.silent.send_replace(silent);
    }

    fn upsert(&self, kind: Kind, ns: &str, name: &str, object: Value, broadcast: bool) {
        self.state
            .lock()
            .unwrap()
            .upsert(kind, ns, name, object, broadcast);
    }

    /// Adds or replaces a game-deployment Service.
    pub fn put_service(&self, ns: &str, name: &str, instance: &str) {
        self.upsert(Kind::Service, ns, name, service_json(instance), true);
    }

    /// Adds or replaces the one-endpoint slice of a node (one slice per node, as each demo
    /// node listens on its own port: slices group endpoints by port).
    pub fn put_node(&self, ns: &str, service: &str, node: &str, addr: SocketAddr, c: Cond) {
        self.try_put_node(ns, service, node, addr, c)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// As [`ApiFixture::put_node`], or the 422 Status a real API server answers for an
    /// address it refuses (unless the fixture allows loopback endpoints).
    pub fn try_put_node(
        &self,
        ns: &str,
        service: &str,
        node: &str,
        addr: SocketAddr,
        c: Cond,
    ) -> Result<(), Value> {
        self.try_put_slice(
            ns,
            &format!("{service}-{node}"),
            slice_json(service, node, ns, addr, c),
        )
    }

    /// Writes a slice as a controller would (validated, labels mirrored as configured).
    pub fn try_put_slice(&self, ns: &str, name: &str, slice: Value) -> Result<(), Value> {
        self.validate(&slice)?;
        let service = slice["metadata"]["labels"]["kubernetes.io/service-name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let slice = self.mirrored(ns, &service, slice);
        self.upsert(Kind::Slice, ns, name, slice, true);
        Ok(())
    }

    pub fn put_slice(&self, ns: &str, name: &str, slice: Value) {
        self.try_put_slice(ns, name, slice)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The API server's validation of endpoint addresses (`ValidateEndpointIP`).
    fn validate(&self, slice: &Value) -> Result<(), Value> {
        if self.opts.loopback_endpoints || slice["addressType"] == "FQDN" {
            return Ok(());
        }
        for ep in slice["endpoints"].as_array().into_iter().flatten() {
            for a in ep["addresses"].as_array().into_iter().flatten() {
                let Some(ip) = a.as_str().and_then(|a| a.parse::<std::net::IpAddr>().ok()) else {
                    continue;
                };
                let refused = match ip {
                    std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
                    std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
                };
                if refused {
                    return Err(
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Invalid", "code": 422,
                        "message": format!("endpoints[0].addresses[0]: Invalid value: \"{ip}\": may not be in the loopback or link-local range")}),
                    );
                }
            }
        }
        Ok(())
    }

    /// Copies the Service's labels onto its slice, as the EndpointSlice controller does
    /// (Kubernetes ≥ 1.20) — unless the fixture was told not to (slices of other
    /// controllers carry only their own labels).
    fn mirrored(&self, ns: &str, service: &str, mut slice: Value) -> Value {
        if !self.opts.mirror_labels {
            return slice;
        }
        let st = self.state.lock().unwrap();
        let key = (Kind::Service, ns.to_string(), service.to_string());
        if let Some(Value::Object(labels)) = st.objects.get(&key).map(|s| &s["metadata"]["labels"])
        {
            for (k, v) in labels {
                slice["metadata"]["labels"][k] = v.clone();
            }
        }
        slice
    }

    /// Adds the slice of a Service that is no game deployment (no kanmon labels to mirror).
    pub fn put_foreign_slice(&self, ns: &str, service: &str, addr: SocketAddr) {
        let slice = slice_json(service, "other-pod", ns, addr, READY);
        self.upsert(Kind::Slice, ns, &format!("{service}-other"), slice, true);
    }

    fn remove(&self, kind: Kind, ns: &str, name: &str, broadcast: bool) {
        if self
            .state
            .lock()
            .unwrap()
            .remove(kind, ns, name, broadcast)
            .is_none()
        {
            panic!("no {kind:?} {ns}/{name}");
        }
    }

    /// The stored object, if any (`ns` is ignored for cluster-scoped kinds).
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let ns = if kind.namespaced() { ns } else { "" };
        let st = self.state.lock().unwrap();
        st.objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every stored object of `kind`.
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Writes an object as a controller would (events to the watches; UID kept on update).
    pub fn put(&self, kind: Kind, ns: &str, name: &str, object: Value) -> Value {
        self.state
            .lock()
            .unwrap()
            .upsert(kind, ns, name, object, true)
    }

    /// Removes an object at once (a DELETED event); `false` if there was none.
    pub fn delete_now(&self, kind: Kind, ns: &str, name: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .remove(kind, ns, name, true)
            .is_some()
    }

    /// Serves (or stops serving) CloudNativePG's `postgresql.cnpg.io/v1` API, as if its
    /// operator were installed.
    pub fn serve_cnpg(&self, on: bool) {
        self.state.lock().unwrap().cnpg = on;
    }

    /// Notified on every write, for controllers that react to changes.
    pub fn changed(&self) -> Arc<Notify> {
        self.state.lock().unwrap().changed.clone()
    }

    /// Deletes a Service.
    pub fn remove_service(&self, ns: &str, name: &str) {
        self.remove(Kind::Service, ns, name, true);
    }

    /// Deletes a node's slice.
    pub fn remove_node(&self, ns: &str, service: &str, node: &str) {
        self.remove(Kind::Slice, ns, &format!("{service}-{node}"), true);
    }

    /// Changes a node's slice without any watch event (as if the events were compacted away).
    pub fn put_node_silently(
        &self,
        ns: &str,
        service: &str,
        node: &str,
        addr: SocketAddr,
        c: Cond,
    ) {
        let slice = slice_json(service, node, ns, addr, c);
        self.validate(&slice).unwrap_or_else(|e| panic!("{e}"));
        let slice = self.mirrored(ns, service, slice);
        self.upsert(Kind::Slice, ns, &format!("{service}-{node}"), slice, false);
    }

    /// Deletes a node's slice without any watch event.
    pub fn remove_node_silently(&self, ns: &str, service: &str, node: &str) {
        self.remove(Kind::Slice, ns, &format!("{service}-{node}"), false);
    }

    /// Compacts history: every resourceVersion so far is too old. Each open watch gets an
    /// ERROR event with a 410 Status and ends; watches from an old version get the same.
    pub fn expire(&self) {
        let mut st = self.state.lock().unwrap();
        st.compacted = st.rv + 1;
        st.rv += 1;
        let status = status_410(st.rv - 1, st.compacted);
        for w in st.watches.drain(..) {
            let _ = w.tx.send(Frame::Line(event("ERROR", &status)));
            let _ = w.tx.send(Frame::End);
        }
        st.history.clear();
    }

    /// Down: open watches are cut and new connections are dropped. Up: served again.
    pub fn set_down(&self, down: bool) {
        let mut st = self.state.lock().unwrap();
        st.down = down;
        if down {
            st.watches.clear(); // dropping the senders cuts the streams mid-chunk
        }
    }

    /// Sends a raw line on every open watch of `kind`.
    pub fn send_raw(&self, kind: Kind, line: &str) {
        let mut st = self.state.lock().unwrap();
        st.watches
            .retain(|w| w.kind != kind || w.tx.send(Frame::Line(format!("{line}\n"))).is_ok());
    }

    /// Sends a BOOKMARK at the current resourceVersion on every open watch.
    pub fn bookmark(&self) {
        let mut st = self.state.lock().unwrap();
        let rv = st.rv.to_string();
        st.watches.retain(|w| {
            let obj = json!({"kind": w.kind.kind(), "apiVersion": w.kind.api_version(),
                "metadata": {"resourceVersion": rv}});
            w.tx.send(Frame::Line(event("BOOKMARK", &obj))).is_ok()
        });
    }

    pub fn open_watches(&self, kind: Kind) -> usize {
        let mut st = self.state.lock().unwrap();
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.iter().filter(|w| w.kind == kind).count()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn lists(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("LIST"))
            .count()
    }

    /// When the last event was handed to the watch streams.
    pub fn last_emitted(&self) -> Option<Instant> {
        self.state.lock().unwrap().emitted.last().copied()
    }
}

fn broadcast_event(st: &mut State, kind: Kind, ns: &str, ty: &str, object: &Value) {
    let labels = object["metadata"]["labels"].clone();
    let line = event(ty, object);
    st.emitted.push(Instant::now());
    st.watches.retain(|w| {
        if w.kind != kind
            || w.namespace.as_deref().is_some_and(|n| n != ns)
            || !labels_match(&labels, &w.selector)
            || !wire::fields_match(object, &w.fields)
        {
            return !w.tx.is_closed();
        }
        w.tx.send(Frame::Line(line.clone())).is_ok()
    });
}
