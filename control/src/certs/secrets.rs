//! Certificates as `kubernetes.io/tls` Secrets in the edge's namespace, one per hostname, the
//! contract of `kanmon_proxy::tls::secrets`: every edge replica watches them and serves the
//! same certificate, and none runs an ACME client of its own. Written by server-side apply
//! under the driver's field manager (one call replaces certificate and key together), read
//! back by name, deleted by name. Errors name the Secret, never its data.

use std::collections::BTreeMap;

use k8s_openapi::{api::core::v1::Secret, ByteString};
use kanmon_proxy::{
    devcerts::PemPair,
    tls::secrets::{
        secret_name, Purpose, CERTIFICATE_LABEL, HOSTNAME_ANNOTATION, SECRET_TYPE, TLS_CRT, TLS_KEY,
    },
};
use kube::{
    api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams},
    Client,
};

use super::{sink::CertSink, CertError};
use crate::k8s::{FIELD_MANAGER, MANAGED_BY};

/// The Secrets of one namespace (the edge's).
#[derive(Clone)]
pub struct SecretSink {
    api: Api<Secret>,
    namespace: String,
}

impl std::fmt::Debug for SecretSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSink")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The Secret holding `pair` for `hostname`.
pub fn certificate_secret(purpose: Purpose, hostname: &str, pair: &PemPair) -> Secret {
    let data = [(TLS_CRT, &pair.cert_pem), (TLS_KEY, &pair.key_pem)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(purpose, hostname)),
            labels: Some(BTreeMap::from([
                (CERTIFICATE_LABEL.to_string(), purpose.label().to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                HOSTNAME_ANNOTATION.to_string(),
                hostname.to_ascii_lowercase(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

impl SecretSink {
    /// A sink writing into `namespace` through `client`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    fn err(&self, what: &str, name: &str, e: kube::Error) -> CertError {
        CertError::Kube(format!("{what} Secret {}/{name}: {e}", self.namespace))
    }

    async fn apply(
        &self,
        purpose: Purpose,
        hostname: &str,
        pair: &PemPair,
    ) -> Result<(), CertError> {
        let secret = certificate_secret(purpose, hostname, pair);
        let name = secret_name(purpose, hostname);
        self.api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|e| self.err("applying", &name, e))?;
        Ok(())
    }

    async fn delete(&self, purpose: Purpose, hostname: &str) -> Result<(), CertError> {
        let name = secret_name(purpose, hostname);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.err("deleting", &name, e)),
        }
    }
}

#[async_trait::async_trait]
impl CertSink for SecretSink {
    async fn put(&self, hostname: &str, pair: &PemPair) -> Result<(), CertError> {
        self.apply(Purpose::Serving, hostname, pair).await
    }

    async fn current(&self, hostname: &str) -> Result<Option<String>, CertError> {
        let name = secret_name(Purpose::Serving, hostname);
        let secret = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| self.err("reading", &name, e))?;
        let crt = secret
            .and_then(|s| s.data)
            .and_then(|mut d| d.remove(TLS_CRT))
            .and_then(|b| String::from_utf8(b.0).ok());
        Ok(crt)
    }

    async fn remove(&self, hostname: &str) -> Result<(), CertError> {
        self.delete(Purpose::Serving, hostname).await
    }

    async fn put_challenge(&self, hostname: &str, pair: &PemPair) -> Result<(), CertError> {
        self.apply(Purpose::AcmeChallenge, hostname, pair).await
    }

    async fn remove_challenge(&self, hostname: &str) {
        if let Err(e) = self.delete(Purpose::AcmeChallenge, hostname).await {
            tracing::warn!(error = %e, "challenge certificate not removed");
        }
    }
}
