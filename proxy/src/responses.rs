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
    /// The request body arrived slower than `limits.min_body_rate`.
    RequestTimeout,
    /// The client may not reach this deployment's console (its allow-list).
    ConsoleForbidden,
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
            Self::RequestTimeout => 408,
            Self::ConsoleForbidden => 403,
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
            Self::RequestTimeout => "request_timeout",
            Self::ConsoleForbidden => "console_forbidden",
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
            Self::RequestTimeout => "request body too slow\n",
            Self::ConsoleForbidden => {
                "the console of this deployment is not open to your network (ask its owner to add it to the console allow-list)\n"
            }
        }
    }

    /// Whether the connection must close after this answer: the client's byte stream can no
    /// longer be trusted (431, 400) or it is talking to the wrong deployment (421).
    pub fn closes(self) -> bool {
        matches!(
            self,
            Self::HeadersTooLarge | Self::Misdirected | Self::BadRequest | Self::RequestTimeout
        )
    }

    /// The headers of the answer besides `content-length`; `close` adds `connection: close`
    /// (always there when [`Refusal::closes`]). One list for both HTTP paths.
    fn headers(self, close: bool) -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            Some(("content-type", "text/plain; charset=utf-8")),
            Some(("cache-control", "no-store")),
            (self.status() == 503).then_some(("retry-after", "1")),
            (close || self.closes()).then_some(("connection", "close")),
        ]
        .into_iter()
        .flatten()
    }

    /// Appends the whole HTTP/1.1 response to `out` (for kanmon's HTTP/1.1 lane).
    pub fn write_h1(self, close: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        let body = self.body();
        let reason = http::StatusCode::from_u16(self.status())
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let _infallible = write!(out, "HTTP/1.1 {} {reason}\r\n", self.status());
        for (name, value) in self.headers(close) {
            let _infallible = write!(out, "{name}: {value}\r\n");
        }
        let _infallible = write!(out, "content-length: {}\r\n\r\n{body}", body.len());
    }

    /// Writes the response and ends it (for pingora's h2 sessions).
    pub async fn send(self, session: &mut Session) -> Result<()> {
        let body = Bytes::from_static(self.body().as_bytes());
        let mut resp = ResponseHeader::build(self.status(), Some(4))?;
        for (name, value) in self.headers(false) {
            resp.insert_header(name, value)?;
        }
        resp.insert_header("content-length", body.len().to_string())?;
        if self.closes() {
            session.set_keepalive(None);
        }
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h1_answers_carry_their_headers_and_close_when_they_must() {
        let text = |r: Refusal, close: bool| {
            let mut out = Vec::new();
            r.write_h1(close, &mut out);
            String::from_utf8(out).unwrap()
        };
        let busy = text(Refusal::NoReadyNode, false);
        assert!(
            busy.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{busy}"
        );
        assert!(busy.contains("\r\nretry-after: 1\r\n"), "{busy}");
        assert!(!busy.contains("connection: close"), "{busy}");
        assert!(
            busy.ends_with("\r\n\r\nno node available, retry shortly\n"),
            "{busy}"
        );
        let body_len = "no node available, retry shortly\n".len();
        assert!(
            busy.contains(&format!("content-length: {body_len}\r\n")),
            "{busy}"
        );
        assert!(text(Refusal::NoReadyNode, true).contains("connection: close\r\n"));
        let wrong = text(Refusal::Misdirected, false);
        assert!(
            wrong.starts_with("HTTP/1.1 421 Misdirected Request\r\n"),
            "{wrong}"
        );
        assert!(
            wrong.contains("connection: close\r\n"),
            "421 always closes: {wrong}"
        );
        assert!(!wrong.contains("retry-after"), "{wrong}");
    }
}
