//! Carries the SNI of a finished handshake to the HTTP layer.
//!
//! rustls has already lower-cased the name; we split it into the deployment it names once per
//! connection so every request on the connection can compare its `Host` against it.

use std::{any::Any, sync::Arc};

use kanmon_router::split_host;
use pingora::{listeners::TlsAccept, protocols::tls::TlsRef};

/// The deployment a TLS connection's SNI names. Stored in pingora's `SslDigest` extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniTarget {
    /// Instance label (lower-case, not yet checked against the table).
    pub instance: Box<str>,
    /// Zone label.
    pub zone: Box<str>,
}

/// pingora TLS callbacks that record the SNI target.
pub struct SniCallbacks {
    base_domain: String,
}

impl SniCallbacks {
    /// Callbacks for hostnames under `base_domain`.
    pub fn new(base_domain: &str) -> Self {
        Self {
            base_domain: base_domain.to_ascii_lowercase(),
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
        let (instance, zone) = split_host(sni, &self.base_domain)?;
        Some(Arc::new(SniTarget {
            instance: instance.to_ascii_lowercase().into(),
            zone: zone.to_ascii_lowercase().into(),
        }))
    }
}
