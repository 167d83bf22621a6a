//! The fixture's wire side: parsing requests (paths, queries, label selectors), answering
//! lists, streaming watches as chunked JSON events, refusing requests without the token.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, watch},
};

use super::{kinds::discovery, objects::status, Frame, Kind, State, Watch, TOKEN};

fn header(headers: &[httparse::Header<'_>], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::to_string)
}

fn status_line(code: u16) -> String {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    format!("{code} {reason}")
}

/// A request about one object (GET, PATCH, DELETE).
struct One<'a> {
    method: &'a str,
    content_type: Option<&'a str>,
    kind: Kind,
    namespace: &'a str,
    name: &'a str,
    params: &'a BTreeMap<String, String>,
    body: &'a [u8],
    log: String,
}

/// Answers a request about one object: `(status code, body)`.
fn one(r: One<'_>, state: &Mutex<State>) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    if st.down {
        return (503, status(503, "ServiceUnavailable", "down"));
    }
    let ns = if r.kind.namespaced() { r.namespace } else { "" };
    let key = (r.kind, ns.to_string(), r.name.to_string());
    match r.method {
        "GET" => {
            st.requests.push(format!("GET {}", r.log));
            match st.objects.get(&key) {
                Some(o) => (200, o.clone()),
                None => {
                    let msg = format!("{} \"{}\" not found", r.kind.plural(), r.name);
                    (404, status(404, "NotFound", &msg))
                }
            }
        }
        "PATCH" => {
            st.requests.push(format!("APPLY {}", r.log));
            if r.content_type != Some("application/apply-patch+yaml") {
                return (
                    415,
                    status(
                        415,
                        "UnsupportedMediaType",
                        "only server-side apply is served",
                    ),
                );
            }
            // kube sends the applied configuration as JSON (a YAML subset).
            let Ok(applied) = serde_json::from_slice::<Value>(r.body) else {
                return (400, status(400, "BadRequest", "body is not JSON"));
            };
            let manager = r.params.get("fieldManager").map_or("", String::as_str);
            let existed = st.objects.contains_key(&key);
            match st.apply(r.kind, ns, r.name, applied, manager) {
                Ok(o) => (if existed { 200 } else { 201 }, o),
                Err(refusal) => refusal,
            }
        }
        "DELETE" => {
            st.requests.push(format!("DELETE {}", r.log));
            let options: Value = serde_json::from_slice(r.body).unwrap_or(Value::Null);
            let uid = options["preconditions"]["uid"].as_str();
            match st.delete(r.kind, ns, r.name, uid) {
                Ok(o) => (200, o),
                Err(refusal) => refusal,
            }
        }
        _ => (
            405,
            status(405, "MethodNotAllowed", "not served by the fixture"),
        ),
    }
}

pub(super) fn labels_match(labels: &Value, selector: &str) -> bool {
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

/// `metadata.name=`/`metadata.namespace=` field selectors (what kube's waits and the
/// watchers of one object send).
pub(super) fn fields_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, want, equal) = match term.split_once("!=") {
            Some((f, v)) => (f, v, false),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((f, v)) => (f, v, true),
                None => return false,
            },
        };
        let got = match field.trim() {
            "metadata.name" => object["metadata"]["name"].as_str(),
            "metadata.namespace" => object["metadata"]["namespace"].as_str(),
            _ => return false,
        };
        (got == Some(want.trim())) == equal
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

pub(super) fn event(kind: &str, object: &Value) -> String {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    s
}

pub(super) fn status_410(rv: u64, compacted: u64) -> Value {
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

/// Where a path points: kind, namespace, object name.
fn route(path: &str, cnpg: bool) -> Option<(Kind, Option<String>, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("apis/{g}/{v}"), rest),
        _ => return None,
    };
    let at = |plural: &str| Kind::find(&prefix, plural, cnpg);
    match rest {
        [plural] => Some((at(plural)?, None, None)),
        ["namespaces", ns, plural] => Some((at(plural)?, Some(ns.to_string()), None)),
        ["namespaces", ns, plural, name] => {
            Some((at(plural)?, Some(ns.to_string()), Some(name.to_string())))
        }
        [plural, name] => Some((at(plural)?, None, Some(name.to_string()))),
        _ => None,
    }
}

async fn respond_text<S: AsyncWrite + Unpin>(sock: &mut S, text: &str) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(text.as_bytes()).await;
    let _ = sock.shutdown().await;
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

pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
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
    let method = req.method.unwrap_or("GET").to_string();
    let content_type = header(req.headers, "content-type");
    let length: usize = header(req.headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let head_len = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |p| p + 4);
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let params = query(q);
    let cnpg = state.lock().unwrap().cnpg;
    // A pod's log (what the simulated kubelet recorded for it), as text.
    if let ["api", "v1", "namespaces", ns, "pods", pod, "log"] =
        path.trim_matches('/').split('/').collect::<Vec<_>>()[..]
    {
        let log = {
            let mut st = state.lock().unwrap();
            st.requests.push(format!("LOG {path}"));
            // One container's log (`?container=`) where the kubelet recorded it apart.
            params
                .get("container")
                .and_then(|c| st.logs.get(&(ns.to_string(), format!("{pod}/{c}"))))
                .or_else(|| st.logs.get(&(ns.to_string(), pod.to_string())))
                .cloned()
        };
        return match log {
            Some(text) => respond_text(&mut sock, &text).await,
            None => {
                let body = status(404, "NotFound", &format!("pods \"{pod}\" not found"));
                respond(&mut sock, "404 Not Found", &body).await
            }
        };
    }
    if method == "GET" {
        if let Some(doc) = discovery(path, cnpg) {
            return respond(&mut sock, "200 OK", &doc).await;
        }
    }
    let Some((kind, namespace, name)) = route(path, cnpg) else {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        return respond(&mut sock, "404 Not Found", &body).await;
    };
    if method != "GET" || name.is_some() {
        // Bounded: bodies of the objects a test writes are small.
        if length > 1024 * 1024 {
            return;
        }
        let mut body = buf[head_len..].to_vec();
        while body.len() < length {
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => body.extend_from_slice(&tmp[..n]),
            }
        }
        let req = One {
            method: &method,
            content_type: content_type.as_deref(),
            kind,
            namespace: namespace.as_deref().unwrap_or_default(),
            name: name.as_deref().unwrap_or_default(),
            params: &params,
            body: &body,
            log: format!("{path}?{q}"),
        };
        let (code, body) = one(req, &state);
        return respond(&mut sock, &status_line(code), &body).await;
    }
    let selector = params.get("labelSelector").cloned().unwrap_or_default();
    let fields = params.get("fieldSelector").cloned().unwrap_or_default();
    let watching = matches!(params.get("watch").map(String::as_str), Some("1" | "true"));
    let matches = |k: Kind, ns: &str, o: &Value| {
        let ns = if k.namespaced() { ns } else { "" };
        k == kind
            && namespace.as_deref().is_none_or(|n| n == ns)
            && labels_match(&o["metadata"]["labels"], &selector)
            && fields_match(o, &fields)
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
                fields,
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
