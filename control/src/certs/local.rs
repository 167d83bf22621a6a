//! The local CA as a certificate source: what `kanmon up` uses, offline.

use kanmon_proxy::devcerts::{CertInfo, LocalCa, PemPair};

use super::{CertError, CertSource};

/// Issues from the local CA in the state directory.
pub struct LocalCaSource {
    ca: LocalCa,
}

impl LocalCaSource {
    /// A source over `ca`.
    pub fn new(ca: LocalCa) -> Self {
        Self { ca }
    }
}

#[async_trait::async_trait]
impl CertSource for LocalCaSource {
    async fn obtain(&self, hostname: &str) -> Result<PemPair, CertError> {
        Ok(self.ca.issue_pair(hostname)?)
    }

    /// Nothing to tell: the local CA publishes no revocation list, and removing the files is
    /// all a client of `kanmon up` can notice.
    async fn revoke(&self, _cert_pem: &str) -> Result<(), CertError> {
        Ok(())
    }

    fn accepts(&self, info: &CertInfo) -> bool {
        self.ca.issued(info)
    }
}
