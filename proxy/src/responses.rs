//! Responses the proxy writes itself (404, 421, 431, 503), with short bodies and the headers
//! clients need (`Retry-After` on 503).

use bytes::Bytes;
use pingora::{http::ResponseHeader, proxy::Session, Result};

/// A status the proxy answers on its own, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The hostname names no deployment.
    UnknownHost,
    /// `Host` names another deployment than the TLS connection's SNI.
    Misdirected,
    /// The request header block is over the limit.
    HeadersTooLarge,
    /// The deployment has no ready node.
    NoReadyNode,
    /// The deployment is at its connection limit.
    AtCapacity,
    /// No node could be reached, or it broke the exchange.
    BadGateway,
    /// The node did not answer within `upstream.response_timeout`.
    GatewayTimeout,
    /// The request head (or chunked body) is malformed.
    BadRequest,
}

impl Refusal {
    /// The status code sent.
    pub fn status(self) -> u16 {
        match self {
            Self::UnknownHost => 404,
            Self::Misdirected => 421,
            Self::HeadersTooLarge => 431,
            Self::NoReadyNode | Self::AtCapacity => 503,
            Self::BadGateway => 502,
            Self::GatewayTimeout => 504,
            Self::BadRequest => 400,
        }
    }

    /// The `reason` label of `kanmon_rejected_requests_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownHost => "unknown_host",
            Self::Misdirected => "misdirected",
            Self::HeadersTooLarge => "headers_too_large",
            Self::NoReadyNode => "no_ready_node",
            Self::AtCapacity => "at_capacity",
            Self::BadGateway => "bad_gateway",
            Self::GatewayTimeout => "gateway_timeout",
            Self::BadRequest => "bad_request",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Self::UnknownHost => "unknown deployment\n",
            Self::Misdirected => "this connection is for another deployment\n",
            Self::HeadersTooLarge => "request headers too large\n",
            Self::NoReadyNode => "no node available, retry shortly\n",
            Self::AtCapacity => "deployment at its connection limit, retry shortly\n",
            Self::BadGateway => "node unreachable\n",
            Self::GatewayTimeout => "node did not answer in time\n",
            Self::BadRequest => "malformed request\n",
        }
    }

    /// Whether the connection must close after this answer: the client's byte stream can no
    /// longer be trusted (431, 400) or it is talking to the wrong deployment (421).
    pub fn closes(self) -> bool {
        matches!(
            self,
            Self::HeadersTooLarge | Self::Misdirected | Self::BadRequest
        )
    }

    /// Appends the whole HTTP/1.1 response to `out`; `close` adds `connection: close`
    /// (always there when [`Refusal::closes`]).
    pub fn write_h1(self, close: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        let body = self.body();
        let _infallible = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\n",
            self.status(),
            http::StatusCode::from_u16(self.status())
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
            body.len()
        );
        if self.status() == 503 {
            out.extend_from_slice(b"retry-after: 1\r\n");
        }
        if close || self.closes() {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
    }

    /// Writes the response and ends it.
    pub async fn send(self, session: &mut Session) -> Result<()> {
        let body = Bytes::from_static(self.body().as_bytes());
        let mut resp = ResponseHeader::build(self.status(), Some(4))?;
        resp.insert_header("content-type", "text/plain; charset=utf-8")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        if self.status() == 503 {
            resp.insert_header("retry-after", "1")?;
        }
        if self.closes() {
            resp.insert_header("connection", "close")?;
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}
