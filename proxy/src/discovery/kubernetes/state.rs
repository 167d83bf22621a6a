//! The source's view of the cluster, without I/O: Services and EndpointSlices in, per
//! deployment changes out.
//!
//! Inputs only mark instances dirty; [`Store::flush`] recomputes just those and compares them
//! with what was last published, so a burst of events (a rolling update touching one slice ten
//! times) becomes one publish, and an event that changes nothing routing cares about (a
//! resourceVersion bump, a new annotation) publishes nothing. A deployment is only removed when
//! the API says its Service is gone; a Service that stops mapping (a bad label, no `http` port)
//! keeps its last good spec and is reported.
//!
//! The [`Policy`] is applied here, at the one place every object passes: a Service outside the
//! namespace that owns its instance never claims it, a second claimant in that namespace never
//! wins, and endpoints outside the allowed networks or of the wrong address type never reach a
//! spec. Each refusal is reported once (in [`Flush::rejections`]), not on every recomputation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kanmon_router::DeploymentSpec;

use super::{
    mapping::{deployment, AddressType, MappingError, ObjectKey, ServiceView, SliceView},
    policy::{Policy, Rejection},
};

/// The two resources the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1/Service`, selected by the kanmon labels.
    Services,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    Slices,
}

impl Kind {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::Slices => "endpointslices",
        }
    }
}

/// One watch: a kind in one namespace, or in all (`None`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// What it watches.
    pub kind: Kind,
    /// Where: one namespace, or all.
    pub namespace: Option<String>,
}

impl StreamId {
    fn covers(&self, key: &ObjectKey) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == key.namespace)
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} in {ns}", self.kind.as_str()),
            None => write!(f, "{} in all namespaces", self.kind.as_str()),
        }
    }
}

/// A watched object, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A Service with the kanmon labels.
    Service(ServiceView),
    /// An EndpointSlice.
    Slice(SliceView),
}

/// What a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A complete (re)list of one stream: objects of its kind and scope not listed are gone.
    Replace(StreamId, Vec<Object>),
    /// An object was added or modified.
    Apply(Object),
    /// An object was deleted.
    Delete(Kind, ObjectKey),
}

/// What to do to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Put this deployment in (replacing the one of the same instance).
    Publish(DeploymentSpec),
    /// Take this instance out.
    Remove(String),
}

/// Something the policy refused, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub reason: Rejection,
    /// The Service or slice concerned.
    pub object: ObjectKey,
    /// What exactly (an address, the instance claimed); never secret.
    pub detail: String,
}

/// Whether the slices of game deployments carry the `serving`/`terminating` conditions
/// (Kubernetes ≥ 1.22, or 1.21 with the `EndpointSliceTerminatingCondition` gate); without them
/// a terminating pod shows only `ready: false` and is unhealthy, never draining.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConditionsSeen {
    /// Some endpoint of a game deployment was seen.
    pub endpoints: bool,
    /// Some such endpoint carried `serving` or `terminating`.
    pub serving_terminating: bool,
}

/// The result of a flush.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// True on the first flush after every stream has listed: publish the whole table at once.
    pub initial: bool,
    /// Changes to the table, per deployment.
    pub changes: Vec<Change>,
    /// Services that could not be mapped (their last good spec stays).
    pub errors: Vec<MappingError>,
    /// What the policy refused since the last flush (each refusal once).
    pub rejections: Vec<Rejected>,
}

/// The cluster as the watches have reported it.
#[derive(Debug)]
pub struct Store {
    max_connections: Option<u64>,
    policy: Policy,
    pending: BTreeSet<StreamId>,
    initialized: bool,
    services: HashMap<ObjectKey, ServiceView>,
    slices: HashMap<ObjectKey, SliceView>,
    /// Slices by the Service they name.
    slices_of: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Services by the (lower-cased) instance label they carry.
    claims: HashMap<String, BTreeSet<ObjectKey>>,
    dirty: BTreeSet<String>,
    published: BTreeMap<String, DeploymentSpec>,
    /// Services refused for their namespace, as last seen (so a relist does not report again).
    refused: HashMap<ObjectKey, ServiceView>,
    /// Services reported as losing a conflict, until they change or go.
    losers: BTreeSet<ObjectKey>,
    /// Per slice, the refusals already reported (address or "" for the whole slice).
    slice_refusals: HashMap<ObjectKey, BTreeSet<(Rejection, String)>>,
    rejections: Vec<Rejected>,
    conditions: ConditionsSeen,
}

fn claim_key(view: &ServiceView) -> String {
    view.instance.to_ascii_lowercase()
}

impl Store {
    /// A store that publishes once every one of `streams` has listed, under `policy`.
    pub fn new(
        streams: impl IntoIterator<Item = StreamId>,
        max_connections: Option<u64>,
        policy: Policy,
    ) -> Self {
        Self {
            max_connections,
            policy,
            pending: streams.into_iter().collect(),
            initialized: false,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            claims: HashMap::new(),
            dirty: BTreeSet::new(),
            published: BTreeMap::new(),
            refused: HashMap::new(),
            losers: BTreeSet::new(),
            slice_refusals: HashMap::new(),
            rejections: Vec::new(),
            conditions: ConditionsSeen::default(),
        }
    }

    /// Whether game deployments' endpoints carry the newer conditions, as seen so far.
    pub fn conditions(&self) -> ConditionsSeen {
        self.conditions
    }

    /// The deployments last handed out by [`Store::flush`], by instance.
    pub fn published(&self) -> &BTreeMap<String, DeploymentSpec> {
        &self.published
    }

    /// Takes one input in; nothing is published until [`Store::flush`].
    pub fn apply(&mut self, input: Input) {
        match input {
            Input::Replace(stream, objects) => self.replace(&stream, objects),
            Input::Apply(Object::Service(view)) => self.put_service(view),
            Input::Apply(Object::Slice(view)) => self.put_slice(view),
            Input::Delete(Kind::Services, key) => self.delete_service(&key),
            Input::Delete(Kind::Slices, key) => {
                self.slice_refusals.remove(&key);
                self.delete_slice(&key);
            }
        }
    }

    fn replace(&mut self, stream: &StreamId, objects: Vec<Object>) {
        let listed: BTreeSet<ObjectKey> = objects
            .iter()
            .map(|o| match o {
                Object::Service(v) => v.key.clone(),
                Object::Slice(v) => v.key.clone(),
            })
            .collect();
        let keep = |k: &&ObjectKey| stream.covers(k) && !listed.contains(*k);
        let gone: Vec<ObjectKey> = match stream.kind {
            Kind::Services => self
                .services
                .keys()
                .chain(self.refused.keys())
                .filter(keep)
                .cloned()
                .collect(),
            Kind::Slices => self.slices.keys().filter(keep).cloned().collect(),
        };
        for key in gone {
            self.apply(Input::Delete(stream.kind, key));
        }
        for object in objects {
            self.apply(Input::Apply(object));
        }
        self.pending.remove(stream);
    }

    fn instance_of(&self, service: &ObjectKey) -> Option<String> {
        self.services.get(service).map(claim_key)
    }

    fn put_service(&mut self, view: ServiceView) {
        let key = view.key.clone();
        if self.services.get(&key) == Some(&view) || self.refused.get(&key) == Some(&view) {
            return;
        }
        self.delete_service(&key);
        let instance = claim_key(&view);
        if !self.policy.owns(&key.namespace, &instance) {
            self.rejections.push(Rejected {
                reason: Rejection::ForeignNamespace,
                object: key.clone(),
                detail: format!(
                    "claims instance {instance}, owned by namespace {}",
                    self.policy.owner_of(&instance)
                ),
            });
            self.refused.insert(key, view);
            return;
        }
        self.claims
            .entry(instance.clone())
            .or_default()
            .insert(key.clone());
        self.dirty.insert(instance);
        self.services.insert(key, view);
    }

    fn delete_service(&mut self, key: &ObjectKey) {
        self.refused.remove(key);
        self.losers.remove(key);
        let Some(old) = self.services.remove(key) else {
            return;
        };
        let instance = claim_key(&old);
        if let Some(set) = self.claims.get_mut(&instance) {
            set.remove(key);
            if set.is_empty() {
                self.claims.remove(&instance);
            }
        }
        self.dirty.insert(instance);
    }

    fn put_slice(&mut self, view: SliceView) {
        if self.slices.get(&view.key) == Some(&view) {
            return;
        }
        let key = view.key.clone();
        self.delete_slice(&key);
        let service = view.service_key();
        self.slices_of
            .entry(service.clone())
            .or_default()
            .insert(key.clone());
        if let Some(instance) = self.instance_of(&service) {
            self.dirty.insert(instance);
        }
        self.slices.insert(key, view);
    }

    fn delete_slice(&mut self, key: &ObjectKey) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        let service = old.service_key();
        if let Some(set) = self.slices_of.get_mut(&service) {
            set.remove(key);
            if set.is_empty() {
                self.slices_of.remove(&service);
            }
        }
        if let Some(instance) = self.instance_of(&service) {
            self.dirty.insert(instance);
        }
    }

    /// Recomputes the dirty deployments. Before every stream has listed once it holds
    /// everything back (a Service listed before its slices would publish with no nodes).
    pub fn flush(&mut self) -> Flush {
        if !self.pending.is_empty() {
            return Flush::default();
        }
        let initial = !self.initialized;
        self.initialized = true;
        let mut flush = Flush {
            initial,
            ..Flush::default()
        };
        for instance in std::mem::take(&mut self.dirty) {
            self.flush_one(instance, &mut flush);
        }
        flush.rejections = std::mem::take(&mut self.rejections);
        flush
    }

    /// The slice as routing may use it, and what the policy refused of it.
    fn admit(&self, slice: &SliceView) -> (SliceView, BTreeSet<(Rejection, String)>) {
        let mut refused = BTreeSet::new();
        if !slice.labelled {
            refused.insert((Rejection::UnlabelledSlice, String::new()));
        }
        let mut admitted = slice.clone();
        if slice.address_type == AddressType::Other {
            if !slice.endpoints.is_empty() {
                refused.insert((
                    Rejection::AddressType,
                    "addressType is not IPv4/IPv6".into(),
                ));
            }
            admitted.endpoints.clear();
            return (admitted, refused);
        }
        admitted.endpoints.retain(|ep| {
            let reason = if !slice.address_type.fits(ep.address) {
                Rejection::AddressType
            } else if !self.policy.admits(ep.address) {
                Rejection::AddressNotAllowed
            } else {
                return true;
            };
            refused.insert((reason, ep.address.to_string()));
            false
        });
        (admitted, refused)
    }

    /// The winner's slices, admitted, with each new refusal reported once.
    fn admitted_slices(&mut self, service: &ObjectKey) -> Vec<SliceView> {
        let keys: Vec<ObjectKey> = self
            .slices_of
            .get(service)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(slice) = self.slices.get(&key) else {
                continue;
            };
            let (admitted, refused) = self.admit(slice);
            for ep in &slice.endpoints {
                self.conditions.endpoints = true;
                let c = ep.conditions;
                self.conditions.serving_terminating |=
                    c.serving.is_some() || c.terminating.is_some();
            }
            let reported = self.slice_refusals.entry(key.clone()).or_default();
            for (reason, detail) in refused.difference(reported) {
                self.rejections.push(Rejected {
                    reason: *reason,
                    object: key.clone(),
                    detail: detail.clone(),
                });
            }
            *reported = refused;
            out.push(admitted);
        }
        out
    }

    fn flush_one(&mut self, instance: String, flush: &mut Flush) {
        let owners = self.claims.get(&instance);
        let Some(winner) = owners.and_then(|o| o.first()) else {
            if self.published.remove(&instance).is_some() {
                flush.changes.push(Change::Remove(instance));
            }
            return;
        };
        let winner = winner.clone();
        let losers: Vec<ObjectKey> = owners.into_iter().flatten().skip(1).cloned().collect();
        for loser in losers {
            if self.losers.insert(loser.clone()) {
                self.rejections.push(Rejected {
                    reason: Rejection::Conflict,
                    object: loser,
                    detail: format!("claims instance {instance}, already served by {winner}"),
                });
            }
        }
        self.losers.remove(&winner);
        let slices = self.admitted_slices(&winner);
        let Some(service) = self.services.get(&winner) else {
            return;
        };
        match deployment(service, &slices, self.max_connections) {
            Ok(spec) => {
                if self.published.get(&instance) != Some(&spec) {
                    self.published.insert(instance, spec.clone());
                    flush.changes.push(Change::Publish(spec));
                }
            }
            Err(e) => flush.errors.push(e),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
