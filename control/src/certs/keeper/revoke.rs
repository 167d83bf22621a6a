//! Revocation as the last step of a deployment's `delete` operation: tried once at once, so
//! its outcome is on the delete's record; a CA that cannot be reached does not hold the
//! delete up. The certificate then stays on disk (its PEM is what a revocation sends) and the
//! keeper's passes retry it with the usual backoff once the deployment is gone (see
//! [`CertKeeper::reconcile`]), across restarts too, since the files are the state.

use std::time::SystemTime;

use super::{crt_path, CertKeeper, Want};
use crate::runtime::Revocation;

impl CertKeeper {
    /// Revokes and removes `w`'s certificate now, at time `now`: the outcome for the delete
    /// operation. A failure is counted and backs off like any other (the warning says when
    /// the keeper tries again), and the outcome says when that is.
    pub async fn revoke_now(&self, w: &Want, now: SystemTime) -> Revocation {
        let had = crt_path(&self.shared.dir, &w.hostname).exists();
        match self.retire(w).await {
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
