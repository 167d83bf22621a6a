//! The certificate Secrets of the edge's namespace (see [`crate::tls::secrets`]) watched into
//! the [`CertStore`], so every replica serves what the control plane issued and none runs an
//! ACME client of its own.
//!
//! One namespace only, the proxy's own unless `discovery.certificate_namespace` names another:
//! Secrets of tenant namespaces are never read (the proxy's Role grants nothing there). The
//! same recovery as the discovery watches ([`super::watch`]): a list is handed over whole at
//! its end, a 410 relists, any other failure is counted and starts over after a backoff. The
//! store keeps every certificate it has meanwhile: a failed watch never drops one; a Secret
//! that is refused or malformed is logged and counted by the store and keeps its previous
//! version in use.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    runtime::watcher::{self, Event},
    Api, Client, ResourceExt,
};

use super::{
    watch::{recovery, Backoff, Recovery},
    SOURCE, WATCH_TIMEOUT_SECS,
};
use crate::{
    discovery::Publisher,
    tls::{
        secrets::{SecretCert, CERTIFICATE_LABEL, HOSTNAME_ANNOTATION, TLS_CRT, TLS_KEY},
        CertStore, LoadReport,
    },
};

/// Where certificates from Secrets go, and which hostnames they may be for.
#[derive(Clone)]
pub struct CertificateSecrets {
    /// The store the TLS listener resolves from.
    pub store: Arc<CertStore>,
    /// Hostnames outside this domain are refused.
    pub base_domain: String,
    /// The namespace to watch; `None`: the client's own (the pod's service account's
    /// namespace in the cluster, the kubeconfig context's outside).
    pub namespace: Option<String>,
}

/// The Secret reduced to what the store validates.
pub fn secret_cert(secret: &Secret) -> SecretCert {
    let data = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .unwrap_or_default()
    };
    SecretCert {
        name: secret.name_any(),
        secret_type: secret.type_.clone(),
        purpose: secret.labels().get(CERTIFICATE_LABEL).cloned(),
        hostname: secret.annotations().get(HOSTNAME_ANNOTATION).cloned(),
        crt: data(TLS_CRT),
        key: data(TLS_KEY),
    }
}

fn log(report: &LoadReport, what: &str) {
    tracing::info!(source = SOURCE, %report, "certificate secrets {what}");
}

impl CertificateSecrets {
    /// Watches until the task is aborted.
    pub(super) async fn run(self, client: Client, publisher: Publisher) {
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        tracing::info!(source = SOURCE, %namespace, "watching certificate secrets");
        let api: Api<Secret> = Api::namespaced(client, &namespace);
        let config = watcher::Config::default()
            .labels(CERTIFICATE_LABEL)
            .timeout(WATCH_TIMEOUT_SECS);
        let what = format!("secrets in {namespace}");
        let mut backoff = Backoff::new();
        loop {
            let mut events = watcher::watcher(api.clone(), config.clone()).boxed();
            let mut listing: Option<Vec<SecretCert>> = None;
            let delay = loop {
                match events.next().await {
                    None => break Some(backoff.next_delay()),
                    Some(Ok(Event::Init)) => listing = Some(Vec::new()),
                    Some(Ok(Event::InitApply(s))) => {
                        if let Some(list) = listing.as_mut() {
                            list.push(secret_cert(&s));
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        backoff.reset();
                        let list = listing.take().unwrap_or_default();
                        log(
                            &self.store.replace_secrets(&list, &self.base_domain),
                            "listed",
                        );
                    }
                    Some(Ok(Event::Apply(s))) => {
                        log(
                            &self.store.put_secret(&secret_cert(&s), &self.base_domain),
                            "changed",
                        );
                    }
                    Some(Ok(Event::Delete(s))) => {
                        self.store.remove_secret(&s.name_any());
                        tracing::info!(source = SOURCE, secret = %s.name_any(), "certificate secret deleted");
                    }
                    Some(Err(e)) => match recovery(&e) {
                        Recovery::Skip => publisher.error(
                            SOURCE,
                            &format_args!("{what}: skipped an undecodable event: {e}"),
                        ),
                        Recovery::Relisting => {
                            tracing::info!(source = SOURCE, %what, "resourceVersion expired (410); relisting");
                        }
                        Recovery::RestartNow => break None,
                        Recovery::RestartLater => {
                            // Counted, not unreadiness: the certificates loaded stay served.
                            publisher.error(SOURCE, &format_args!("{what}: {e}"));
                            break Some(backoff.next_delay());
                        }
                    },
                }
            };
            drop(events);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
        }
    }
}
