//! Where a load goes: the URL the client believes it talks to (SNI, `Host`, path) and the
//! loopback address actually dialed.
//!
//! Benchmarks run on shared machines whose only legitimate targets are local, so every address
//! is checked here, once, and anything outside 127.0.0.0/8 or `::1` is refused.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::spread::{Spread, SpreadError};
use crate::tls;

/// Why a target could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The URL did not parse or has an unsupported scheme.
    #[error("bad url {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The address to dial is not a loopback address.
    #[error("refusing to connect to {0}: only loopback addresses (127.0.0.0/8, ::1) are allowed")]
    NotLoopback(SocketAddr),
    /// The address to dial did not resolve.
    #[error("cannot resolve {addr:?} (pass --connect 127.0.0.1:PORT)")]
    Resolve {
        /// The address given.
        addr: String,
        /// The resolver error, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// A secure scheme without `--ca`.
    #[error("{0} needs --ca PATH (the test CA certificate)")]
    MissingCa(String),
    /// The CA could not be loaded.
    #[error("loading the CA")]
    Tls(#[from] tls::TlsError),
    /// `--spread` does not fit the URL.
    #[error(transparent)]
    Spread(#[from] SpreadError),
}

/// Why one connection attempt failed; the kind is what load reports count.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// TLS handshake failed.
    #[error("tls: {0}")]
    Tls(#[source] io::Error),
}

/// A parsed, checked load target.
#[derive(Clone)]
pub struct Target {
    /// The URL as given (`wss://alpha.us-east1.kanmon.test:8443/ws`).
    pub url: String,
    /// Host part of the URL: SNI and `Host` header.
    pub host: String,
    /// Path and query (`/ws?token=...`).
    pub path: String,
    /// The loopback address dialed.
    pub connect: SocketAddr,
    /// `ws`, `wss`, `http` or `https`, and the port: with the path, what a spread
    /// connection's URL is rebuilt from.
    scheme: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// With `--spread`: the deployments this target's WebSockets go to in turn (shared by
    /// clones, so a load's clients together still take each deployment in turn).
    spread: Option<Arc<Spread>>,
    /// WebSockets as RFC 8441 streams over these shared h2 connections (`--h2`).
    h2: Option<Arc<crate::h2ws::H2Pool>>,
    /// The deployment's server key, presented on every WebSocket (nodes started by kanmon
    /// refuse `/ws` without it); never printed.
    server_key: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("connect", &self.connect)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// Parses `url` (`ws`, `wss`, `http` or `https`), resolves `connect` (or the URL's own
    /// host:port when `None`) and refuses non-loopback addresses.
    pub async fn new(
        url: &str,
        connect: Option<&str>,
        ca: Option<&Path>,
    ) -> Result<Self, TargetError> {
        let bad = |reason: &str| TargetError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let (scheme, secure) = match uri.scheme_str() {
            Some(s @ ("wss" | "https")) => (s, true),
            Some(s @ ("ws" | "http")) => (s, false),
            _ => return Err(bad("scheme must be ws, wss, http or https")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let connect = match connect {
            Some(c) => resolve_loopback(c).await?,
            None => resolve_loopback(&format!("{host}:{port}")).await?,
        };
        let tls = if secure {
            let ca = ca.ok_or_else(|| TargetError::MissingCa(url.to_owned()))?;
            let config = tls::client_config(ca)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| bad("host is not a valid server name"))?;
            Some((TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Self {
            url: url.to_owned(),
            host,
            path,
            connect,
            scheme: scheme.to_owned(),
            port,
            tls,
            spread: None,
            h2: None,
            server_key: None,
        })
    }

    /// Spreads this target's WebSockets over `count` deployments named after the URL's host
    /// (see [`crate::spread`]): each connection dials the next one's hostname as SNI and
    /// `Host`, through the same `connect` address.
    pub fn with_spread(mut self, count: usize) -> Result<Self, TargetError> {
        self.spread = Some(Arc::new(Spread::new(&self.host, count)?));
        Ok(self)
    }

    /// The deployments WebSockets are spread over, if any.
    pub fn spread(&self) -> Option<&Spread> {
        self.spread.as_deref()
    }

    /// The hostname the next WebSocket goes to: `None` for the URL's own, or with a spread the
    /// next deployment's.
    pub fn next_host(&self) -> Option<String> {
        self.spread.as_ref().map(|s| s.next_host())
    }

    /// The URL with `host` in place of the URL's own host.
    pub fn url_for(&self, host: &str) -> String {
        format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
    }

    /// Presents `key` as the server key on every WebSocket (HTTP Basic username on
    /// HTTP/1.1, `?server_key=` on RFC 8441 streams).
    pub fn with_server_key(mut self, key: String) -> Self {
        self.server_key = Some(key);
        self
    }

    /// The `Authorization` value for the server key, if one is set.
    pub fn basic_auth(&self) -> Option<String> {
        use base64::Engine;
        let key = self.server_key.as_ref()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        Some(format!("Basic {b64}"))
    }

    /// The request path with the server key as `server_key=` (for RFC 8441 streams).
    pub fn path_with_key(&self) -> String {
        match &self.server_key {
            None => self.path.clone(),
            Some(k) => {
                let sep = if self.path.contains('?') { '&' } else { '?' };
                format!("{}{sep}{}={k}", self.path, crate::node::SERVER_KEY_PARAM)
            }
        }
    }

    /// The same target with WebSockets opened as RFC 8441 streams over `connections` shared
    /// h2 connections (TLS with ALPN `h2`).
    pub fn over_h2(mut self, connections: usize) -> Self {
        if let Some((connector, name)) = &self.tls {
            let mut config = ClientConfig::clone(connector.config());
            config.alpn_protocols = vec![b"h2".to_vec()];
            self.tls = Some((TlsConnector::from(Arc::new(config)), name.clone()));
        }
        self.h2 = Some(Arc::new(crate::h2ws::H2Pool::new(connections)));
        self
    }

    /// The shared h2 connections, when WebSockets go over h2.
    pub fn h2(&self) -> Option<&crate::h2ws::H2Pool> {
        self.h2.as_deref()
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The same target seen by one client that keeps its TLS sessions: its connections after
    /// the first resume with the session tickets the server sent (a game client reconnecting).
    /// Each client gets its own cache, as each device has its own: a shared one would hand one
    /// client's single-use tickets to the next.
    pub fn with_own_sessions(&self) -> Self {
        let mut own = self.clone();
        if let Some((connector, name)) = &self.tls {
            let mut config = ClientConfig::clone(connector.config());
            config.resumption = Resumption::in_memory_sessions(4);
            own.tls = Some((TlsConnector::from(Arc::new(config)), name.clone()));
        }
        own
    }

    /// One TCP connection to the loopback address, with TLS (SNI = URL host) when secure.
    pub async fn dial(&self) -> Result<Stream, DialError> {
        self.dial_as(None).await
    }

    /// [`Target::dial`] with `host` (from [`Target::next_host`]) as SNI instead of the URL's.
    pub async fn dial_as(&self, host: Option<&str>) -> Result<Stream, DialError> {
        let tcp = TcpStream::connect(self.connect)
            .await
            .map_err(DialError::Connect)?;
        tcp.set_nodelay(true).map_err(DialError::Connect)?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((connector, name)) => {
                let name = match host {
                    None => name.clone(),
                    // Spread names were all checked when the spread was made.
                    Some(h) => ServerName::try_from(h.to_owned()).map_err(|e| {
                        DialError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e))
                    })?,
                };
                let s = connector.connect(name, tcp).await.map_err(DialError::Tls)?;
                Ok(Stream::Tls(Box::new(s)))
            }
        }
    }
}

/// Resolves `addr` (`127.0.0.1:8443`, `[::1]:8443`, `localhost:8443`) and checks that every
/// resulting address is loopback.
pub async fn resolve_loopback(addr: &str) -> Result<SocketAddr, TargetError> {
    let resolved: Vec<SocketAddr> = match addr.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => tokio::net::lookup_host(addr)
            .await
            .map_err(|e| TargetError::Resolve {
                addr: addr.to_owned(),
                source: Some(e),
            })?
            .collect(),
    };
    if let Some(bad) = resolved.iter().find(|a| !a.ip().is_loopback()) {
        return Err(TargetError::NotLoopback(*bad));
    }
    resolved
        .first()
        .copied()
        .ok_or_else(|| TargetError::Resolve {
            addr: addr.to_owned(),
            source: None,
        })
}

/// A client connection, plain or TLS, usable by tungstenite and hyper alike.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP (`ws://`, `http://`).
    Plain(TcpStream),
    /// TLS over TCP (`wss://`, `https://`).
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the TLS handshake resumed an earlier session (plain streams: no).
    pub fn resumed(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Shared handle to a target, as load tasks hold it.
pub type SharedTarget = Arc<Target>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_non_loopback() {
        assert!(matches!(
            resolve_loopback("10.0.0.1:443").await,
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            resolve_loopback("[2001:db8::1]:443").await,
            Err(TargetError::NotLoopback(_))
        ));
        assert!(resolve_loopback("127.0.0.2:8443").await.is_ok());
        assert!(resolve_loopback("[::1]:8443").await.is_ok());
    }

    #[tokio::test]
    async fn url_host_is_sni_and_connect_overrides_dialing() {
        let t = Target::new(
            "ws://alpha.us-east1.kanmon.test:8443/ws?token=x",
            Some("127.0.0.1:9"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(t.host, "alpha.us-east1.kanmon.test");
        assert_eq!(t.path, "/ws?token=x");
        assert_eq!(t.connect, "127.0.0.1:9".parse().unwrap());
        assert!(Target::new("wss://a.b/ws", Some("127.0.0.1:9"), None)
            .await
            .is_err());
        assert!(Target::new("ws://a.b/ws", Some("192.168.1.1:80"), None)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_spread_target_gives_each_connection_the_next_deployment() {
        let url = "ws://alpha.us-east1.kanmon.test:8443/ws?token=x";
        let plain = Target::new(url, Some("127.0.0.1:9"), None).await.unwrap();
        assert_eq!(plain.next_host(), None, "without --spread: the URL's host");
        let t = plain.with_spread(2).unwrap();
        let first = t.next_host().unwrap();
        assert_eq!(
            t.url_for(&first),
            "ws://alpha-0.us-east1.kanmon.test:8443/ws?token=x"
        );
        // Clones (one per client with --resume) share the turn.
        let clone = t.clone();
        assert_eq!(
            clone.next_host().as_deref(),
            Some("alpha-1.us-east1.kanmon.test")
        );
        assert_eq!(
            t.next_host().as_deref(),
            Some("alpha-0.us-east1.kanmon.test")
        );
        let ip = Target::new("ws://127.0.0.1:8443/ws", None, None)
            .await
            .unwrap();
        assert!(matches!(
            ip.with_spread(3),
            Err(TargetError::Spread(SpreadError::Name { .. }))
        ));
    }
}
