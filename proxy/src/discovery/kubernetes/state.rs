//! The source's view of the cluster, without I/O: Services and EndpointSlices in, per
//! deployment changes out.
//!
//! Inputs only mark instances dirty; [`Store::flush`] recomputes just those and compares them
//! with what was last published, so a burst of events (a rolling update touching one slice ten
//! times) becomes one publish, and an event that changes nothing routing cares about (a
//! resourceVersion bump, a new annotation) publishes nothing. A deployment is only removed when
//! the API says its Service is gone; a Service that stops mapping (a bad label, no `http` port)
//! keeps its last good spec and is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kanmon_router::DeploymentSpec;

use super::mapping::{deployment, MappingError, ObjectKey, ServiceView, SliceView};

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

/// The result of a flush.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// True on the first flush after every stream has listed: publish the whole table at once.
    pub initial: bool,
    /// Changes to the table, per deployment.
    pub changes: Vec<Change>,
    /// Services that could not be mapped (their last good spec stays).
    pub errors: Vec<MappingError>,
}

/// The cluster as the watches have reported it.
#[derive(Debug)]
pub struct Store {
    max_connections: Option<u64>,
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
}

fn claim_key(view: &ServiceView) -> String {
    view.instance.to_ascii_lowercase()
}

impl Store {
    /// A store that publishes once every one of `streams` has listed.
    pub fn new(streams: impl IntoIterator<Item = StreamId>, max_connections: Option<u64>) -> Self {
        Self {
            max_connections,
            pending: streams.into_iter().collect(),
            initialized: false,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            claims: HashMap::new(),
            dirty: BTreeSet::new(),
            published: BTreeMap::new(),
        }
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
            Input::Delete(Kind::Slices, key) => self.delete_slice(&key),
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
            Kind::Services => self.services.keys().filter(keep).cloned().collect(),
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
        if self.services.get(&key) == Some(&view) {
            return;
        }
        self.delete_service(&key);
        let instance = claim_key(&view);
        self.claims
            .entry(instance.clone())
            .or_default()
            .insert(key.clone());
        self.dirty.insert(instance);
        self.services.insert(key, view);
    }

    fn delete_service(&mut self, key: &ObjectKey) {
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
        flush
    }

    fn flush_one(&mut self, instance: String, flush: &mut Flush) {
        let owners = self.claims.get(&instance);
        let Some(winner) = owners.and_then(|o| o.first()) else {
            if self.published.remove(&instance).is_some() {
                flush.changes.push(Change::Remove(instance));
            }
            return;
        };
        for loser in owners.into_iter().flatten().skip(1) {
            flush.errors.push(MappingError::Conflict {
                instance: instance.clone(),
                winner: winner.to_string(),
                loser: loser.to_string(),
            });
        }
        let Some(service) = self.services.get(winner) else {
            return;
        };
        let slices = self
            .slices_of
            .get(winner)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k));
        match deployment(service, slices, self.max_connections) {
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
