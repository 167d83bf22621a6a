//! HTTP-01 (RFC 8555 §8.3): the edge answers an ACME server's validation of a hostname on an
//! optional plain-HTTP listener (`listen.http`), for CAs that do not offer TLS-ALPN-01.
//!
//! The control plane hands the key authorization over the way it hands over certificates: a
//! file `<hostname>.http-01` in `cert_dir` (hot reloaded with them, removed once the order is
//! decided). The listener answers `GET /.well-known/acme-challenge/<token>` with it only when
//! the request's `Host` names a hostname with a pending challenge and `<token>` is that
//! challenge's token; every other request gets a 404 with a fixed body. No redirect to https:
//! nothing this listener sends depends on what a client wrote, no game client is ever invited
//! onto plain HTTP, and a port-80 scan learns nothing about which deployments exist.

use std::{collections::HashMap, path::Path, sync::Arc};

use async_trait::async_trait;
use http::Response;
use pingora::{apps::http_app::ServeHttp, protocols::http::ServerSession};

use super::CertStore;

/// The extension of a key-authorization file in `cert_dir`.
pub const HTTP01_EXTENSION: &str = "http-01";

/// Where validators ask.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// A key authorization is `token.thumbprint`, both base64url; far shorter than this.
const MAX_KEY_AUTHORIZATION: usize = 512;

/// Pending HTTP-01 challenges: hostname → key authorization.
pub type Challenges = HashMap<String, String>;

/// Why a key-authorization file was not taken.
#[derive(Debug, thiserror::Error)]
#[error("{path}: not an ACME key authorization (token.thumbprint, base64url)")]
pub struct BadKeyAuthorization {
    /// The file.
    pub path: std::path::PathBuf,
}

/// Reads a key-authorization file: `token.thumbprint`, base64url characters only.
pub fn read_key_authorization(path: &Path) -> Result<String, BadKeyAuthorization> {
    let bad = || BadKeyAuthorization { path: path.into() };
    let text = std::fs::read_to_string(path).map_err(|_| bad())?;
    let text = text.trim();
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match text.split_once('.') {
        Some((token, print)) if text.len() <= MAX_KEY_AUTHORIZATION && b64(token) && b64(print) => {
            Ok(text.to_string())
        }
        _ => Err(bad()),
    }
}

/// The answer to a request for `path` with `Host` `host` (port, if any, ignored; case-
/// insensitive): the key authorization, or `None` (a 404).
pub fn answer<'a>(challenges: &'a Challenges, host: &str, path: &str) -> Option<&'a str> {
    let token = path.strip_prefix(CHALLENGE_PATH)?;
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let auth = challenges.get(&host.to_ascii_lowercase())?;
    let (want, _) = auth.split_once('.')?;
    (want == token).then_some(auth.as_str())
}

/// The plain-HTTP listener's application.
pub struct Http01App {
    certs: Arc<CertStore>,
}

impl Http01App {
    /// Answers the challenges `certs` loaded.
    pub fn new(certs: Arc<CertStore>) -> Self {
        Self { certs }
    }
}

fn reply(status: u16, body: &[u8]) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body.to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for Http01App {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
            .unwrap_or_default();
        let challenges = self.certs.http_challenges();
        match (req.method == http::Method::GET)
            .then(|| answer(&challenges, host, req.uri.path()))
            .flatten()
        {
            Some(auth) => reply(200, auth.as_bytes()),
            None => reply(404, b"not found\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Challenges {
        Challenges::from([(
            "alpha.us-east1.kanmon.test".to_string(),
            "tok-EN_1.thumb".to_string(),
        )])
    }

    #[test]
    fn only_the_pending_token_of_the_named_host_is_answered() {
        let c = pending();
        let path = "/.well-known/acme-challenge/tok-EN_1";
        assert_eq!(
            answer(&c, "alpha.us-east1.kanmon.test", path),
            Some("tok-EN_1.thumb")
        );
        assert_eq!(
            answer(&c, "ALPHA.us-east1.kanmon.test:80", path),
            Some("tok-EN_1.thumb")
        );
        assert_eq!(answer(&c, "beta.us-east1.kanmon.test", path), None);
        assert_eq!(
            answer(
                &c,
                "alpha.us-east1.kanmon.test",
                "/.well-known/acme-challenge/other"
            ),
            None
        );
        assert_eq!(answer(&c, "alpha.us-east1.kanmon.test", "/"), None);
        assert_eq!(answer(&c, "alpha.us-east1.kanmon.test", "/ws"), None);
    }

    #[test]
    fn key_authorization_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.http-01");
        for (text, ok) in [
            ("tok.print\n", true),
            ("tok", false),
            (".print", false),
            ("tok.pr int", false),
            ("../x.y/z", false),
        ] {
            std::fs::write(&file, text).unwrap();
            assert_eq!(read_key_authorization(&file).is_ok(), ok, "{text:?}");
        }
        std::fs::write(&file, format!("t.{}", "a".repeat(600))).unwrap();
        assert!(read_key_authorization(&file).is_err());
    }
}
