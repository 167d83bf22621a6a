//! The support team's interventions: one allowed downgrade for one deployment, and on-request
//! zones enabled per organization. Both are platform-admin actions (the API checks that and
//! audits them); the rules live in the domain and the settings' zone catalog.

use kanmon_router::{Version, Zone};

use super::{now, Runtime, RuntimeError};
use crate::{
    domain::{Deployment, DomainError},
    store::ZoneGrant,
};

impl Runtime {
    /// Allows the next deploy of `instance` to the older version `to`.
    pub fn allow_downgrade(
        &self,
        instance: &str,
        to: Version,
        who: &str,
    ) -> Result<Deployment, RuntimeError> {
        let catalog = self.inner.settings.catalog.clone();
        let (_, dep) = self.with(instance, false, |ctl| {
            ctl.deployment.allow_downgrade(&catalog, to, who, now())?;
            Ok(Vec::new())
        })?;
        Ok(dep)
    }

    /// The zone catalog as `org` sees it: on-request zones it was given count as offered.
    pub fn zones_for(&self, org: &str) -> Result<Vec<(Zone, bool)>, RuntimeError> {
        let enabled = self.inner.store.zone_grants(org)?;
        Ok(self
            .inner
            .settings
            .zones
            .iter()
            .map(|(z, on_request)| {
                let given = enabled.iter().any(|g| g.zone == z.as_str());
                (z.clone(), *on_request && !given)
            })
            .collect())
    }

    /// Gives `org` the on-request zone `zone`.
    pub fn enable_zone(&self, org: &str, zone: &str, who: &str) -> Result<ZoneGrant, RuntimeError> {
        let zone = self.on_request_zone(zone)?;
        let grant = ZoneGrant {
            org: org.to_string(),
            zone: zone.as_str().to_string(),
            enabled_by: who.to_string(),
            enabled_at: now(),
        };
        self.inner.store.enable_zone(&grant)?;
        Ok(grant)
    }

    /// Takes the on-request zone back from `org` (its deployments there keep running); whether
    /// it had been enabled.
    pub fn disable_zone(&self, org: &str, zone: &str) -> Result<bool, RuntimeError> {
        let zone = self.on_request_zone(zone)?;
        Ok(self.inner.store.disable_zone(org, zone.as_str())?)
    }

    fn on_request_zone(&self, zone: &str) -> Result<Zone, RuntimeError> {
        let parsed = Zone::parse(zone).map_err(DomainError::from)?;
        match self.inner.settings.zones.iter().find(|(z, _)| *z == parsed) {
            None => Err(DomainError::UnknownZone(zone.to_string()).into()),
            Some((_, false)) => Err(DomainError::ZoneOffered(zone.to_string()).into()),
            Some((z, true)) => Ok(z.clone()),
        }
    }
}
