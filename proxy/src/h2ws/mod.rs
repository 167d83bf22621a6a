//! WebSocket over HTTP/2 (RFC 8441): an extended CONNECT (`:method CONNECT`,
//! `:protocol websocket`) on an h2 connection becomes an HTTP/1.1 `Upgrade: websocket` to the
//! node (nodes speak HTTP/1.1), and the stream is tunnelled like an upgraded connection.
//!
//! Why inside pingora's h2 service rather than an h2 server of our own: pingora's server is
//! the `h2` crate, whose `enable_connect_protocol` it takes through `H2Options`, and it hands
//! the stream to `request_filter` like any request (once CONNECT is allowed). So an extended
//! CONNECT meets the same routing policy as every other request ([`crate::policy`]: the
//! `:authority` rule, the router pick and its guard, draining, per-deployment limits), is
//! counted like one (`status="200"` when the node accepted), and then runs the very tunnel an
//! HTTP/1.1 upgrade runs ([`tunnel::websocket`]: gauge, idle limit, write limit, the 1001
//! close at shutdown), over the stream adapted to bytes ([`stream::H2Stream`]). A second h2
//! server for the same connections would have meant a second request path to keep equal.

pub mod stream;

use std::net::IpAddr;

use kanmon_router::ConnectionGuard;
use pingora::{
    http::{RequestHeader, ResponseHeader},
    protocols::http::ServerSession,
    proxy::Session,
    Error, ErrorType, Result,
};
use tokio::sync::watch;

use crate::{
    h1::write::write_within, inflight::Inflight, policy, responses::Refusal, routing::Routes,
    tunnel, wsframe::FrameBoundary,
};

/// Which kind of CONNECT a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Not a CONNECT.
    No,
    /// An RFC 8441 WebSocket.
    WebSocket,
    /// A plain CONNECT or another `:protocol`: not served (405).
    Other,
}

/// What kind of CONNECT `req` is.
pub fn connect_kind(req: &RequestHeader) -> Connect {
    if req.method != http::Method::CONNECT {
        return Connect::No;
    }
    match req.extensions.get::<h2::ext::Protocol>() {
        Some(p) if p.as_str().eq_ignore_ascii_case("websocket") => Connect::WebSocket,
        _ => Connect::Other,
    }
}

/// What an RFC 8441 tunnel needs besides the routing policy: the proxy's connection count
/// (graceful shutdown waits on it) and its going-away signal (the 1001 close).
#[derive(Clone)]
pub struct Tunnels {
    /// Tunnels count themselves here while they live.
    pub connections: Inflight,
    /// Set once the end of a graceful shutdown begins.
    pub going_away: watch::Receiver<bool>,
}

/// Headers of the client's request the edge writes itself on the HTTP/1.1 handshake.
fn edge_owned(name: &str) -> bool {
    [
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "content-length",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// The HTTP/1.1 handshake the node gets for extended CONNECT `req` (RFC 8441 §5: the
/// `:path` and `:authority` become the request target and `Host`; the edge picks the key).
pub fn upgrade_request(req: &RequestHeader, client: Option<IpAddr>, key: &str, out: &mut Vec<u8>) {
    use std::io::Write;
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let _w = write!(out, "GET {target} HTTP/1.1\r\n");
    if let Some(authority) = req.uri.authority() {
        let _w = write!(out, "host: {authority}\r\n");
    }
    let connection = || {
        req.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(http::HeaderValue::as_bytes)
    };
    for (name, value) in &req.headers {
        if edge_owned(name.as_str())
            || !policy::forwardable(name.as_str(), value.as_bytes(), connection(), true)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _w = write!(
        out,
        "upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n"
    );
    for (name, value) in policy::edge_forwarded(client) {
        let _w = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 §4.1).
fn websocket_key() -> Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| Error::explain(ErrorType::InternalError, "no random bytes"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(nonce))
}

/// The headers of a node's 101 that the client's 200 carries: what was negotiated.
fn negotiated(head: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut headers = [httparse::EMPTY_HEADER; crate::h1::head::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    if resp.parse(head).is_err() {
        return Vec::new();
    }
    resp.headers
        .iter()
        .filter(|h| {
            h.name.eq_ignore_ascii_case("sec-websocket-protocol")
                || h.name.eq_ignore_ascii_case("sec-websocket-extensions")
        })
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

/// Serves extended CONNECT `session` on the node `guard` picked: the handshake with the node
/// (a connect failure moves it once to another ready node, as for every request), then
/// `200` and the tunnel until either side ends it. Returns once the response is sent and the
/// tunnel is over (pingora's `request_filter` contract: `true`, answered); `answered` is
/// called with the 200 as soon as it is sent.
pub async fn serve(
    routes: &Routes,
    tunnels: &Tunnels,
    session: &mut Session,
    guard: &mut Option<ConnectionGuard>,
    client: Option<IpAddr>,
    answered: impl FnOnce(u16),
) -> Result<bool> {
    let settings = routes.settings();
    let mut out = Vec::with_capacity(512);
    upgrade_request(session.req_header(), client, &websocket_key()?, &mut out);
    let mut retried = false;
    let Some((mut node, addr)) = tunnel::connect_picked(routes, guard, &mut retried).await else {
        return refuse(routes, session, Refusal::BadGateway).await;
    };
    let answer = tunnel::upgrade_at_node(
        &mut node,
        addr,
        &out,
        settings.write_timeout,
        settings.response_timeout,
    );
    let response = match answer.await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(error = %e, "websocket (h2) upgrade failed at the node");
            return refuse(routes, session, Refusal::BadGateway).await;
        }
    };
    drop(out);
    let ServerSession::H2(h2) = &mut *session.downstream_session else {
        return Error::e_explain(ErrorType::InternalError, "extended CONNECT outside h2");
    };
    if response.status != 101 {
        // The node refused the WebSocket: the client gets its status (the body stays behind:
        // an HTTP/1.1 refusal body has no place on a CONNECT stream's answer).
        let status = if response.status < 200 {
            502
        } else {
            response.status
        };
        let resp = ResponseHeader::build(status, Some(0))?;
        h2.write_response_header(Box::new(resp), true)?;
        return Ok(true);
    }
    let mut resp = ResponseHeader::build(200, Some(2))?;
    for (name, value) in negotiated(&response.bytes[..response.head_len]) {
        resp.insert_header(name, value)?;
    }
    h2.write_response_header(Box::new(resp), false)?;
    // Counted when the answer is out, like an HTTP/1.1 upgrade's 101, not when the tunnel ends.
    answered(200);
    let Some(send) = h2.take_response_body_writer() else {
        return Error::e_explain(ErrorType::InternalError, "no h2 body writer");
    };
    let Some(picked) = guard.as_ref() else {
        return Ok(true);
    };
    let mut client_io = stream::H2Stream::new(h2, send);
    // Bytes after the node's response head are already WebSocket frames for the client.
    let early = &response.bytes[response.head_len..];
    let mut frames = FrameBoundary::default();
    if !early.is_empty() {
        if write_within(&mut client_io, early, settings.write_timeout)
            .await
            .is_err()
        {
            return Ok(true);
        }
        frames.feed(early);
    }
    drop(response);
    let _connection = tunnels.connections.enter();
    tunnel::websocket(
        routes,
        picked,
        client_io,
        node,
        frames,
        tunnels.going_away.clone(),
    )
    .await;
    Ok(true)
}

/// Answers an extended CONNECT that went nowhere (counted like every refusal).
async fn refuse(routes: &Routes, session: &mut Session, r: Refusal) -> Result<bool> {
    routes.refused(r);
    r.send(session).await?;
    Ok(true)
}

/// Answers a CONNECT the edge does not serve (a plain one, or another `:protocol`).
pub async fn not_allowed(session: &mut Session) -> Result<bool> {
    let mut resp = ResponseHeader::build(405, Some(2))?;
    resp.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_gets_an_http1_upgrade_with_the_policy_s_headers() {
        let mut req = RequestHeader::build("CONNECT", b"/ws?token=t", None).unwrap();
        req.set_uri(
            "https://alpha.us-east1.kanmon.test/ws?token=t"
                .parse()
                .unwrap(),
        );
        for (n, v) in [
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "nakama"),
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("origin", "https://game.example"),
        ] {
            req.insert_header(n, v).unwrap();
        }
        let mut out = Vec::new();
        upgrade_request(
            &req,
            Some("127.0.0.9".parse().unwrap()),
            "a2V5a2V5a2V5a2V5a2V5aw==",
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("GET /ws?token=t HTTP/1.1\r\nhost: alpha.us-east1.kanmon.test\r\n"),
            "{text}"
        );
        for line in [
            "sec-websocket-protocol: nakama\r\n",
            "origin: https://game.example\r\n",
            "upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n",
            "sec-websocket-key: a2V5a2V5a2V5a2V5a2V5aw==\r\n",
            "x-forwarded-for: 127.0.0.9\r\nx-forwarded-proto: https\r\n\r\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in {text}");
        }
        assert!(!text.contains("6.6.6.6"), "{text}");
        assert_eq!(text.matches("sec-websocket-version").count(), 1, "{text}");
    }

    #[test]
    fn only_connect_with_the_websocket_protocol_is_served() {
        let req = |method: http::Method, protocol: Option<&'static str>| {
            let mut b = http::Request::builder()
                .method(method)
                .uri("https://a.b/ws");
            if let Some(p) = protocol {
                b = b.extension(h2::ext::Protocol::from_static(p));
            }
            RequestHeader::from(b.body(()).unwrap().into_parts().0)
        };
        assert_eq!(connect_kind(&req(http::Method::GET, None)), Connect::No);
        assert_eq!(
            connect_kind(&req(http::Method::CONNECT, None)),
            Connect::Other
        );
        let ws = req(http::Method::CONNECT, Some("websocket"));
        assert_eq!(connect_kind(&ws), Connect::WebSocket);
        let other = req(http::Method::CONNECT, Some("webtransport"));
        assert_eq!(connect_kind(&other), Connect::Other);
    }
}
