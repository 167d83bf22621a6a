//! One HTTP/1.1 request and its response over a pooled keep-alive connection to the node:
//! the rewritten head and the body bytes already read go in one write, the rest of the body
//! is forwarded at the pace the limits ask, interim responses are passed on, and the
//! response head plus its first body bytes leave in one write.

use std::net::IpAddr;

use kanmon_router::ConnectionGuard;
use pingora::protocols::Stream;
use tokio::{io::AsyncReadExt, net::TcpStream, time::timeout};

use crate::bufpool::{self, Lent};

use super::{
    body::Body,
    head::{self, Framing, RequestHead, ResponseHead},
    lane::{Lane, Next, CLIENT_CLOSED, READ_BUF},
    pace::BodyPace,
    pool,
    write::WriteFail,
};
use crate::responses::Refusal;

/// Largest response head accepted from a node.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How waiting for a node's response head ended badly.
enum NodeFailure {
    /// Closed or reset before sending a byte (a reused connection may be retried).
    Closed,
    /// Nothing within `upstream.response_timeout`.
    Timeout,
    /// Something that is not a usable response.
    Broken,
}

impl Lane {
    /// One request and its response. Returns the status the client got and what next.
    pub(super) async fn exchange(
        &self,
        client: &mut Stream,
        buf: &mut Vec<u8>,
        head: &RequestHead,
        guard: ConnectionGuard,
        client_ip: Option<IpAddr>,
        shutting_down: bool,
    ) -> (u16, Next) {
        let settings = self.routes.settings();
        let started = tokio::time::Instant::now();
        // Lent for this exchange only (see `bufpool`).
        let (mut out, mut node_buf) = (Lent::take(), Lent::take());
        // The request as the node gets it: the head plus the body bytes already read.
        head::write_upstream_request(buf, head, client_ip, &mut out);
        let mut body = Body::new(head.body, settings.max_header_bytes);
        let Ok(got) = body.take(&buf[head.len..]) else {
            return self.fail(client, Refusal::BadRequest).await;
        };
        out.extend_from_slice(&buf[head.len..head.len + got]);
        buf.drain(..head.len + got);
        let received = got as u64;
        // Whole request in hand: a kept-alive connection the node had closed can be retried.
        let whole = body.is_done();
        if head.expect_continue && !whole {
            // Answered here, so the client sends its body while the node is picked.
            if !self
                .to_client(client, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
            {
                return (CLIENT_CLOSED, Next::Close);
            }
        }

        let mut guard = Some(guard);
        let mut retried = false;
        let mut fresh_only = false;
        let (mut node, addr, response) = loop {
            let pooled = guard
                .as_ref()
                .map(ConnectionGuard::addr)
                .filter(|_| !fresh_only)
                .and_then(|addr| pool::take(addr, settings.pool_idle_timeout).map(|n| (n, addr)));
            let reused = pooled.is_some();
            let picked = match pooled {
                Some(pooled) => Some(pooled),
                None => self.connect_picked(&mut guard, &mut retried).await,
            };
            let Some((mut node, addr)) = picked else {
                return self.fail(client, Refusal::BadGateway).await;
            };
            match self.to_node(&mut node, &out).await {
                Ok(()) => {}
                Err(WriteFail::Closed(e)) if reused && whole => {
                    tracing::debug!(node = %addr, error = %e, "kept-alive connection closed by the node; retrying on a fresh one");
                    fresh_only = true;
                    continue;
                }
                Err(WriteFail::Closed(e)) => {
                    tracing::warn!(error = %e, "sending a request to the node failed");
                    return self.fail(client, Refusal::BadGateway).await;
                }
                Err(WriteFail::TimedOut) => {
                    return self.fail(client, Refusal::GatewayTimeout).await;
                }
            }
            if !body.is_done() {
                let pace = (started, received);
                match self
                    .forward_body(client, &mut node, buf, &mut body, pace)
                    .await
                {
                    Ok(()) => {}
                    Err(BodySide::Client) => return (CLIENT_CLOSED, Next::Close),
                    Err(BodySide::Malformed) => {
                        return self.fail(client, Refusal::BadRequest).await
                    }
                    Err(BodySide::TooSlow) => {
                        self.cut("slow_body");
                        return self.fail(client, Refusal::RequestTimeout).await;
                    }
                    Err(BodySide::NodeStalled) => {
                        return self.fail(client, Refusal::GatewayTimeout).await
                    }
                    Err(BodySide::Node) => return self.fail(client, Refusal::BadGateway).await,
                }
            }
            match self
                .response_head(client, &mut node, &mut node_buf, head)
                .await
            {
                Ok(response) => break (node, addr, response),
                Err(NodeFailure::Closed) if reused && whole => {
                    tracing::debug!(node = %addr, "kept-alive connection closed by the node; retrying on a fresh one");
                    fresh_only = true;
                }
                Err(NodeFailure::Timeout) => {
                    tracing::warn!(node = %addr, "node did not answer in time");
                    return self.fail(client, Refusal::GatewayTimeout).await;
                }
                Err(_) => {
                    tracing::warn!(node = %addr, "node broke the exchange before its response");
                    return self.fail(client, Refusal::BadGateway).await;
                }
            }
        };

        // The response: head and the body bytes already read leave in one write.
        let close = !head.keep_alive || shutting_down || response.body == Framing::UntilClose;
        let mut rbody = Body::new(response.body, MAX_RESPONSE_HEAD);
        out.clear();
        head::write_client_response(&node_buf, &response, close, &mut out);
        let after_head = &node_buf[response.len..];
        let Ok(used) = rbody.take(after_head) else {
            return self.fail(client, Refusal::BadGateway).await;
        };
        let mut in_step = used == after_head.len();
        out.extend_from_slice(&after_head[..used]);
        if !self.to_client(client, &out).await {
            return (response.status, Next::Close);
        }
        while !rbody.is_done() {
            node_buf.clear();
            let n = match timeout(settings.response_timeout, node.read_buf(&mut *node_buf)).await {
                Ok(Ok(n)) => n,
                // The head is out: all that is left is to cut the connection.
                _ => return (response.status, Next::Close),
            };
            if n == 0 {
                return (response.status, Next::Close);
            }
            let Ok(used) = rbody.take(&node_buf) else {
                return (response.status, Next::Close);
            };
            in_step = used == node_buf.len();
            if !self.to_client(client, &node_buf[..used]).await {
                return (response.status, Next::Close);
            }
        }
        if response.keep_alive && in_step {
            pool::put(addr, node, settings.pool_idle_timeout);
        }
        // The router's count for this node ends with the exchange.
        drop(guard);
        (
            response.status,
            if close { Next::Close } else { Next::KeepAlive },
        )
    }

    /// Forwards the rest of a request body as it arrives, at the pace `limits` asks of the
    /// whole body (`BodyPace`) from `started`, when `received` bytes of it were in.
    async fn forward_body(
        &self,
        client: &mut Stream,
        node: &mut TcpStream,
        buf: &mut Vec<u8>,
        body: &mut Body,
        (started, mut received): (tokio::time::Instant, u64),
    ) -> Result<(), BodySide> {
        let settings = self.routes.settings();
        let pace = BodyPace::new(settings.request_read_timeout, settings.min_body_rate);
        while !body.is_done() {
            if buf.capacity() - buf.len() < READ_BUF / 4 {
                buf.reserve(READ_BUF);
            }
            let due = started + pace.allowed(received);
            match tokio::time::timeout_at(due, client.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => received += n as u64,
                Ok(_) => return Err(BodySide::Client),
                Err(_) => return Err(BodySide::TooSlow),
            }
            let used = body.take(buf).map_err(|_| BodySide::Malformed)?;
            match self.to_node(node, &buf[..used]).await {
                Ok(()) => {}
                Err(WriteFail::Closed(_)) => return Err(BodySide::Node),
                Err(WriteFail::TimedOut) => return Err(BodySide::NodeStalled),
            }
            buf.drain(..used);
        }
        Ok(())
    }

    /// Reads the node's final response head into `buf`, passing interim (1xx) responses on.
    async fn response_head(
        &self,
        client: &mut Stream,
        node: &mut TcpStream,
        buf: &mut Vec<u8>,
        req: &RequestHead,
    ) -> Result<ResponseHead, NodeFailure> {
        let limit = self.routes.settings().response_timeout;
        buf.clear();
        let mut any = false;
        loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(bufpool::SIZE);
            }
            match timeout(limit, node.read_buf(buf)).await {
                Err(_) => return Err(NodeFailure::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) if !any && buf.is_empty() => {
                    return Err(NodeFailure::Closed)
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Err(NodeFailure::Broken),
                Ok(Ok(_)) => any = true,
            }
            loop {
                let response = match head::parse_response(buf, req.is_head, MAX_RESPONSE_HEAD) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "bad response head");
                        return Err(NodeFailure::Broken);
                    }
                };
                match response.status {
                    101 => return Err(NodeFailure::Broken),
                    100..=199 => {
                        // 100 Continue was already sent by the proxy when the client asked.
                        let pass_on = !(response.status == 100 && req.expect_continue);
                        if pass_on && !self.to_client(client, &buf[..response.len]).await {
                            return Err(NodeFailure::Broken);
                        }
                        buf.drain(..response.len);
                    }
                    _ => return Ok(response),
                }
            }
        }
    }
}

/// Which side broke a request body in flight.
enum BodySide {
    Client,
    Node,
    Malformed,
    /// The client sent it slower than `limits.min_body_rate`.
    TooSlow,
    /// The node stopped reading it for `limits.write_timeout`.
    NodeStalled,
}
