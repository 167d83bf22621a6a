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
        }
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
        if self == Self::HeadersTooLarge || self == Self::Misdirected {
            resp.insert_header("connection", "close")?;
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}
