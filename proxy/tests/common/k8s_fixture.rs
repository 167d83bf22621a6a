//! A stand-in Kubernetes API server on 127.0.0.1 for Services and EndpointSlices, speaking the
//! real wire protocol to the real kube client: lists carry `metadata.resourceVersion`,
//! `?watch=1` answers a chunked stream of JSON events (ADDED, MODIFIED, DELETED, BOOKMARK,
//! ERROR), label selectors filter both, and a watch from a compacted resourceVersion gets a
//! `410 Gone` Status (reason `Expired`). It can also go down (connections dropped), fall
//! silent (a partition: nothing answered, nothing closed), expire every open watch, change
//! objects without telling watchers, and send raw malformed lines.
//!
//! Like a real API server it serves TLS only (its own CA, written into the kubeconfig) and
//! answers 401 without the bearer token; by default it refuses endpoint addresses a real server
//! refuses (loopback, link-local) and mirrors a Service's labels onto its slices only as the
//! EndpointSlice controller does. Tests whose nodes listen on loopback opt in with
//! [`FixtureOpts::loopback_endpoints`].
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_rustls::TlsAcceptor;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    Slice,
}

impl Kind {
    fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::Slice => "EndpointSliceList",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::Slice => "discovery.k8s.io/v1",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Slice => "EndpointSlice",
        }
    }
}

/// Conditions of an endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Cond {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

pub const READY: Cond = Cond {
    ready: true,
    serving: true,
    terminating: false,
};
pub const TERMINATING: Cond = Cond {
    ready: false,
    serving: true,
    terminating: true,
};
pub const NOT_SERVING: Cond = Cond {
    ready: false,
    serving: false,
    terminating: false,
};

enum Frame {
    Line(String),
    /// End the stream cleanly (terminating chunk).
    End,
}

struct Watch {
    kind: Kind,
    namespace: Option<String>,
    selector: String,
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

fn labels_match(labels: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
        if let Some((k, v)) = term.split_once("!=") {
            get(k) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k) == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            get(k).is_none()
        } else {
            get(term).is_some()
        }
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn event(kind: &str, object: &Value) -> String {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    s
}

fn status_410(rv: u64, compacted: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {rv} ({compacted})"),
        "reason": "Expired", "code": 410})
}

fn chunk(data: &str) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// A CA and a server certificate for 127.0.0.1, the CA written to `dir/ca.pem`.
fn tls(dir: &std::path::Path) -> TlsAcceptor {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
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

    fn upsert(&self, kind: Kind, ns: &str, name: &str, mut object: Value, broadcast: bool) {
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind());
        object["metadata"]["name"] = json!(name);
        object["metadata"]["namespace"] = json!(ns);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(format!("uid-{ns}-{name}"));
        let key = (kind, ns.to_string(), name.to_string());
        let ty = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.objects.insert(key, object.clone());
        if broadcast {
            st.history.push((rv, kind, ty, object.clone()));
            broadcast_event(&mut st, kind, ns, ty, &object);
        }
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
        let mut st = self.state.lock().unwrap();
        let Some(mut object) = st.objects.remove(&(kind, ns.to_string(), name.to_string())) else {
            panic!("no {kind:?} {ns}/{name}");
        };
        st.rv += 1;
        let rv = st.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if broadcast {
            st.history.push((rv, kind, "DELETED", object.clone()));
            broadcast_event(&mut st, kind, ns, "DELETED", &object);
        }
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
        {
            return !w.tx.is_closed();
        }
        w.tx.send(Frame::Line(line.clone())).is_ok()
    });
}

pub fn service_json(instance: &str) -> Value {
    json!({
        "metadata": {"labels": {"kanmon.dev/instance": instance, "kanmon.dev/zone": "us-east1",
            "app.kubernetes.io/name": "game"}},
        "spec": {"type": "ClusterIP", "ports": [
            {"name": "http", "port": 7350, "targetPort": 7350, "protocol": "TCP"},
            {"name": "grpc", "port": 7349, "targetPort": 7349, "protocol": "TCP"}]}
    })
}

pub fn slice_json(service: &str, node: &str, ns: &str, addr: SocketAddr, c: Cond) -> Value {
    json!({
        "metadata": {"labels": {"kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}],
        "endpoints": [{
            "addresses": [addr.ip().to_string()],
            "conditions": {"ready": c.ready, "serving": c.serving, "terminating": c.terminating},
            "targetRef": {"kind": "Pod", "name": node, "namespace": ns},
        }]
    })
}

/// Where a path points: (kind, namespace).
fn route(path: &str) -> Option<(Kind, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", "services"] => Some((Kind::Service, None)),
        ["api", "v1", "namespaces", ns, "services"] => Some((Kind::Service, Some(ns.to_string()))),
        ["apis", "discovery.k8s.io", "v1", "endpointslices"] => Some((Kind::Slice, None)),
        ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"] => {
            Some((Kind::Slice, Some(ns.to_string())))
        }
        _ => None,
    }
}

async fn respond<S: AsyncWrite + Unpin>(sock: &mut S, status: &str, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    state: Arc<Mutex<State>>,
    mut silent: watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    // Bounded: a request head is small.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 64 * 1024 {
            return;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(&buf), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let authorized = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("authorization")
            && h.value == format!("Bearer {TOKEN}").as_bytes()
    });
    if !authorized {
        state.lock().unwrap().requests.push("UNAUTHORIZED".into());
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Unauthorized", "code": 401, "message": "Unauthorized"});
        return respond(&mut sock, "401 Unauthorized", &body).await;
    }
    let target = req.path.unwrap_or("/").to_string();
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let params = query(q);
    let Some((kind, namespace)) = route(path) else {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        return respond(&mut sock, "404 Not Found", &body).await;
    };
    let selector = params.get("labelSelector").cloned().unwrap_or_default();
    let watching = matches!(params.get("watch").map(String::as_str), Some("1" | "true"));
    let matches = |k: Kind, ns: &str, o: &Value| {
        k == kind
            && namespace.as_deref().is_none_or(|n| n == ns)
            && labels_match(&o["metadata"]["labels"], &selector)
    };
    if !watching {
        let body = {
            let mut st = state.lock().unwrap();
            if st.down {
                return; // accepted just before going down: dies unanswered
            }
            st.requests.push(format!("LIST {path}?{q}"));
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((k, ns, _), o)| matches(*k, ns, o))
                .map(|(_, o)| o.clone())
                .collect();
            json!({"kind": kind.list_kind(), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
        };
        return respond(&mut sock, "200 OK", &body).await;
    }

    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut st = state.lock().unwrap();
        if st.down {
            // Accepted just before going down: checked under the same lock as
            // `set_down` clears the watches, so no watch outlives the outage.
            return;
        }
        st.requests.push(format!("WATCH {path}?{q}"));
        if from < st.compacted {
            let _ = tx.send(Frame::Line(event("ERROR", &status_410(from, st.compacted))));
            let _ = tx.send(Frame::End);
        } else {
            for (rv, k, ty, o) in &st.history {
                let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
                if *rv > from && matches(*k, ns, o) {
                    let _ = tx.send(Frame::Line(event(ty, o)));
                }
            }
            if bookmarks {
                let obj = json!({"kind": kind.kind(), "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": st.rv.to_string()}});
                let _ = tx.send(Frame::Line(event("BOOKMARK", &obj)));
            }
            st.watches.push(Watch {
                kind,
                namespace,
                selector,
                tx,
            });
        }
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.recv()) => Some(r),
            _ = silent.wait_for(|s| *s) => None,
        };
        let Some(next) = next else {
            // Partitioned: not another byte, no close, until healed (then it is dropped).
            let _healed = silent.wait_for(|s| !*s).await;
            return;
        };
        match next {
            Ok(Some(Frame::Line(line))) => {
                if sock.write_all(&chunk(&line)).await.is_err() {
                    return;
                }
            }
            // Server-side end of a watch (timeoutSeconds, or after a 410).
            Ok(Some(Frame::End)) | Err(_) => {
                let _ = sock.write_all(b"0\r\n\r\n").await;
                let _ = sock.shutdown().await;
                return;
            }
            // Down: cut mid-stream, no terminating chunk.
            Ok(None) => return,
        }
    }
}
