//! Watching one deployment namespace: kube-runtime watchers over its node pods and its node
//! StatefulSet, folded into a stream of [`Observation`]s.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{stream, Stream, StreamExt};
use k8s_openapi::api::{apps::v1::StatefulSet, core::v1::Pod};
use kube::{
    runtime::{
        watcher::{self, Event},
        WatchStreamExt,
    },
    Api, Client,
};

use super::{
    names::{Role, COMPONENT_LABEL, MANAGED_BY},
    observe::{changes, observe, set_is_current, Observation, PodView},
};

/// A watch failed; the stream keeps going (the watchers back off and re-list).
#[derive(Debug, thiserror::Error)]
#[error("watching {what} in {namespace}: {source}")]
pub struct WatchError {
    /// `pods` or `statefulsets`.
    pub what: &'static str,
    /// The deployment namespace.
    pub namespace: String,
    /// The watcher's error.
    #[source]
    pub source: watcher::Error,
}

/// One input of the [`Tracker`].
#[derive(Debug)]
pub(super) enum Input {
    Pod(Event<Pod>),
    Set(Event<StatefulSet>),
}

/// Holds the last view of every node pod and what has been reported. Observations are held
/// back while the StatefulSet controller has not caught up with the set's spec (see
/// [`set_is_current`]), then released as the difference between the reported and the latest
/// views, so nothing is lost and nothing is reported twice.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    latest: BTreeMap<String, PodView>,
    reported: BTreeMap<String, PodView>,
    /// Pods seen since the pod watcher's (re)list began.
    relisting: Option<BTreeSet<String>>,
    /// Whether the node StatefulSet is current (`None`: not seen yet).
    current: Option<bool>,
}

impl Tracker {
    pub(super) fn handle(&mut self, input: Input) -> Vec<Observation> {
        match input {
            Input::Pod(Event::Apply(p) | Event::InitApply(p)) => {
                if let Some(v) = observe(&p) {
                    if let Some(seen) = &mut self.relisting {
                        seen.insert(v.node.clone());
                    }
                    self.latest.insert(v.node.clone(), v);
                }
            }
            Input::Pod(Event::Delete(p)) => {
                if let Some(v) = observe(&p) {
                    // Only the incarnation that was deleted: its successor may be listed already.
                    if self
                        .latest
                        .get(&v.node)
                        .is_some_and(|l| l.incarnation == v.incarnation)
                    {
                        self.latest.remove(&v.node);
                    }
                }
            }
            Input::Pod(Event::Init) => self.relisting = Some(BTreeSet::new()),
            Input::Pod(Event::InitDone) => {
                // Pods deleted while the watch was down are not in the new list.
                if let Some(seen) = self.relisting.take() {
                    self.latest.retain(|node, _| seen.contains(node));
                }
            }
            Input::Set(Event::Apply(s) | Event::InitApply(s)) => {
                self.current = Some(set_is_current(&s));
            }
            // No set: nothing will create pods from a stale template.
            Input::Set(Event::Delete(_)) => self.current = Some(true),
            Input::Set(Event::Init | Event::InitDone) => {}
        }
        self.flush()
    }

    fn flush(&mut self) -> Vec<Observation> {
        if self.current != Some(true) {
            return Vec::new();
        }
        let nodes: BTreeSet<&String> = self.latest.keys().chain(self.reported.keys()).collect();
        let out = nodes
            .into_iter()
            .flat_map(|n| changes(self.reported.get(n), self.latest.get(n)))
            .collect();
        self.reported = self.latest.clone();
        out
    }
}

/// The observations of the node pods in `namespace`, for as long as the stream is polled. The
/// watchers re-list after errors (with kube-runtime's default back-off); each error is also
/// yielded, for the caller to log and count.
pub fn watch_observations(
    client: Client,
    namespace: &str,
) -> impl Stream<Item = Result<Observation, WatchError>> + Send {
    let selector = format!(
        "app.kubernetes.io/managed-by={MANAGED_BY},{COMPONENT_LABEL}={}",
        Role::Node.as_str()
    );
    let config = watcher::Config::default().labels(&selector);
    let ns = namespace.to_string();
    let pods = watcher::watcher(
        Api::<Pod>::namespaced(client.clone(), namespace),
        config.clone(),
    )
    .default_backoff()
    .map({
        let ns = ns.clone();
        move |r| {
            r.map(Input::Pod).map_err(|source| WatchError {
                what: "pods",
                namespace: ns.clone(),
                source,
            })
        }
    });
    let sets = watcher::watcher(Api::<StatefulSet>::namespaced(client, namespace), config)
        .default_backoff()
        .map(move |r| {
            r.map(Input::Set).map_err(|source| WatchError {
                what: "statefulsets",
                namespace: ns.clone(),
                source,
            })
        });
    stream::select(pods, sets)
        .scan(Tracker::default(), |tracker, input| {
            let out: Vec<Result<Observation, WatchError>> = match input {
                Ok(input) => tracker.handle(input).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            std::future::ready(Some(out))
        })
        .flat_map(stream::iter)
}
