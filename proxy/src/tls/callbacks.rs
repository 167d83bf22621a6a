//! Carries the SNI of a finished handshake to the HTTP layer.
//!
//! rustls has already lower-cased the name; we split it into the deployment it names once per
//! connection so every request on the connection can compare its `Host` against it.

use std::{any::Any, sync::Arc};

use kanmon_router::ConsoleNames;
use pingora::{listeners::TlsAccept, protocols::tls::TlsRef};

/// The deployment a TLS connection's SNI names. Stored in pingora's `SslDigest` extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniTarget {
    /// Instance label (lower-case, not yet checked against the table).
    pub instance: Box<str>,
    /// Zone label.
    pub zone: Box<str>,
    /// The name is the deployment's console name (`kanmon_router::console`).
    pub console: bool,
}

impl SniTarget {
    /// The target as the router's type, to compare a request's `Host` against.
    pub fn target(&self) -> kanmon_router::Target<'_> {
        kanmon_router::Target {
            instance: &self.instance,
            zone: &self.zone,
            console: self.console,
        }
    }
}

/// pingora TLS callbacks that record the SNI target.
pub struct SniCallbacks {
    base_domain: String,
    console: ConsoleNames,
}

impl SniCallbacks {
    /// Callbacks for hostnames under `base_domain`, console names following `console`.
    pub fn new(base_domain: &str, console: ConsoleNames) -> Self {
        Self {
            base_domain: base_domain.to_ascii_lowercase(),
            console,
        }
    }
}

#[async_trait::async_trait]
impl TlsAccept for SniCallbacks {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let sni = tls.server_name()?;
        let target = self.console.target(sni, &self.base_domain)?;
        Some(Arc::new(SniTarget {
            instance: target.instance.to_ascii_lowercase().into(),
            zone: target.zone.to_ascii_lowercase().into(),
            console: target.console,
        }))
    }
}
