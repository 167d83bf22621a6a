//! Revocation as the last step of a deployment's `delete` operation: tried once at once, so
//! its outcome is on the delete's record; a CA that cannot be reached does not hold the
//! delete up. The certificate then stays on disk (its PEM is what a revocation sends) and the
//! keeper's passes retry it with the usual backoff once the deployment is gone (see
//! [`CertKeeper::reconcile`]), across restarts too, since the files are the state.

use std::time::{Duration, SystemTime};

use super::{CertError, CertKeeper, Want};
use crate::runtime::Revocation;

/// How long a revocation on delete waits for the CA (its HTTP client has no timeout of its
/// own): a CA that accepts connections but never answers is an outage like any other. Cut
/// short while the CA works, the files stay and the retry may find the certificate revoked
/// already, which counts as done.
pub(super) const REVOKE_WAIT: Duration = Duration::from_secs(30);

impl CertKeeper {
    /// Revokes and removes `w`'s certificate now, at time `now`: the outcome for the delete
    /// operation. A failure is counted and backs off like any other (the warning says when
    /// the keeper tries again), and the outcome says when that is.
    pub async fn revoke_now(&self, w: &Want, now: SystemTime) -> Revocation {
        self.revoke_within(w, now, REVOKE_WAIT).await
    }

    /// [`CertKeeper::revoke_now`], waiting at most `wait` for the CA.
    async fn revoke_within(&self, w: &Want, now: SystemTime, wait: Duration) -> Revocation {
        // Unreadable counts as there: the retirement below meets the same error and defers.
        let had = !matches!(self.shared.sink.current(&w.hostname).await, Ok(None));
        let tried = tokio::time::timeout(wait, self.retire(w))
            .await
            .unwrap_or_else(|_| {
                let waited = humantime::format_duration(wait);
                Err(CertError::Acme(format!(
                    "the CA did not answer within {waited}"
                )))
            });
        match tried {
            Ok(()) if had => Revocation::Revoked,
            Ok(()) => Revocation::None,
            Err(e) => {
                self.failed(w, &e, now);
                let failures = self
                    .state()
                    .failing
                    .get(&w.hostname)
                    .map_or(1, |r| r.failures);
                Revocation::Retrying {
                    error: e.to_string(),
                    retry_in: self.shared.retry.delay(failures),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kanmon_proxy::devcerts::{CertInfo, PemPair};
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};

    use super::*;
    use crate::{
        certs::{CertSource, RetryPolicy},
        metrics::certs::CertMetrics,
    };

    /// Issues at once; a revocation never gets an answer.
    struct Silent;

    #[async_trait::async_trait]
    impl CertSource for Silent {
        async fn obtain(&self, hostname: &str) -> Result<PemPair, CertError> {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = CertificateParams::new(vec![hostname.to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            Ok(PemPair {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        }
        async fn revoke(&self, _cert_pem: &str) -> Result<(), CertError> {
            std::future::pending().await
        }
        fn accepts(&self, _info: &CertInfo) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_ca_that_never_answers_defers_the_revocation_and_keeps_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = CertMetrics::new().unwrap();
        let keeper = CertKeeper::new(
            Arc::new(crate::certs::DirSink::new(dir.path().to_path_buf())),
            Arc::new(Silent),
            metrics.clone(),
            RetryPolicy::default(),
        );
        let w = Want {
            instance: "alpha".into(),
            hostname: "alpha.us-east1.kanmon.test".into(),
            live: false,
        };
        let now = SystemTime::now();
        keeper.issue(&w, now).await.unwrap();
        let wait = Duration::from_millis(100);
        let outcome = keeper.revoke_within(&w, now, wait).await;
        assert_eq!(
            outcome,
            Revocation::Retrying {
                error: "ACME: the CA did not answer within 100ms".into(),
                retry_in: RetryPolicy::default().base,
            }
        );
        let crt = dir.path().join(format!("{}.crt", w.hostname));
        assert!(crt.exists(), "kept to retry");
        assert!(dir.path().join(format!("{}.key", w.hostname)).exists());
        assert_eq!(metrics.failures("alpha"), 1);
        // Backing off: the keeper's next pass leaves it alone for the first delay (bounded:
        // a pass that tried would wait for ever).
        let pass = keeper.reconcile(std::slice::from_ref(&w), now);
        let due = tokio::time::timeout(Duration::from_secs(10), pass).await;
        assert_eq!(due.expect("the pass did not ask the CA"), []);
        assert!(crt.exists());
    }
}
