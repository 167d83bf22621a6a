//! One watch per resource and namespace, on kube's `watcher`, feeding the source's channel.
//!
//! kube's watcher lists, watches from the list's resourceVersion, resumes a closed watch from
//! the last version it saw and relists on a `410 Gone` error event. Around it this adds what
//! the proxy needs:
//! - a list is buffered and handed over whole at `InitDone`, so a relist never shows a
//!   half-empty cluster;
//! - an undecodable event is skipped and reported, and the watch goes on;
//! - any other failure (the API unreachable, a watch that cannot be restarted, a 410 on the
//!   watch request itself, which the watcher would otherwise retry with the same expired
//!   version forever) drops the watcher and starts a fresh one with a full list, after an
//!   exponential backoff for failures that are not expiry.

use std::{fmt::Debug, time::Duration};

use futures_util::StreamExt;
use kube::{
    runtime::watcher::{self, Event},
    Api, Resource, ResourceExt,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::{
    mapping::ObjectKey,
    state::{Input, Object, StreamId},
};

/// First delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest delay between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What a watch task tells the source.
#[derive(Debug)]
pub(super) enum Signal {
    /// Data from the API (which proves it reachable).
    Input(StreamId, Input),
    /// A full list arrived: the stream is in step with the API.
    Listed(StreamId),
    /// An event could not be decoded and was skipped.
    Malformed(StreamId, String),
    /// The resourceVersion expired (410): a fresh list follows at once.
    Expired(StreamId),
    /// The API failed; a fresh list is tried after `retry_in`.
    Failed {
        /// Which watch.
        stream: StreamId,
        /// What went wrong.
        error: String,
        /// The backoff before the next attempt.
        retry_in: Duration,
    },
}

/// How the watch goes on after an error.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Recovery {
    /// Skip the event, keep the watch.
    Skip,
    /// The watcher relists by itself.
    Relisting,
    /// Start over with a fresh list now.
    RestartNow,
    /// Start over with a fresh list after a backoff.
    RestartLater,
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 410)
}

pub(super) fn recovery(error: &watcher::Error) -> Recovery {
    match error {
        // kube decodes an event line that is not a watch event as a Status if it can, and
        // every JSON object can be one (all its fields default): both are a bad line on a
        // healthy stream. (Real API errors inside a watch arrive as ERROR events instead.)
        watcher::Error::WatchFailed(kube::Error::SerdeError(_) | kube::Error::Api(_)) => {
            Recovery::Skip
        }
        watcher::Error::WatchError(status) if status.code == 410 => Recovery::Relisting,
        watcher::Error::WatchStartFailed(e) | watcher::Error::InitialListFailed(e)
            if is_gone(e) =>
        {
            Recovery::RestartNow
        }
        _ => Recovery::RestartLater,
    }
}

/// Exponential backoff with a little jitter (taken from the clock's nanoseconds: many proxies
/// restarting together should not hit the API server in step).
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let spread = (base.as_millis() as u64 / 5).max(1);
        base + Duration::from_millis(u64::from(nanos) % spread)
    }
}

fn key_of<K: Resource>(obj: &K) -> ObjectKey {
    ObjectKey::new(obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Watches `api` until the channel closes, reducing each object with `view`.
pub(super) async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    stream: StreamId,
    view: fn(&K) -> Option<Object>,
    tx: mpsc::Sender<Signal>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut backoff = Backoff::new();
    loop {
        let mut events = watcher::watcher(api.clone(), config.clone()).boxed();
        let mut listing: Option<Vec<Object>> = None;
        let delay = loop {
            let signal = match events.next().await {
                // The watcher's stream does not end; treat it as a failure if it ever does.
                None => {
                    break Some(backoff.next_delay());
                }
                Some(Ok(Event::Init)) => {
                    listing = Some(Vec::new());
                    continue;
                }
                Some(Ok(Event::InitApply(obj))) => {
                    if let (Some(list), Some(o)) = (listing.as_mut(), view(&obj)) {
                        list.push(o);
                    }
                    continue;
                }
                Some(Ok(Event::InitDone)) => {
                    backoff.reset();
                    let objects = listing.take().unwrap_or_default();
                    if tx
                        .send(Signal::Input(
                            stream.clone(),
                            Input::Replace(stream.clone(), objects),
                        ))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    Signal::Listed(stream.clone())
                }
                Some(Ok(Event::Apply(obj))) => match view(&obj) {
                    Some(o) => Signal::Input(stream.clone(), Input::Apply(o)),
                    None => Signal::Input(stream.clone(), Input::Delete(stream.kind, key_of(&obj))),
                },
                Some(Ok(Event::Delete(obj))) => {
                    Signal::Input(stream.clone(), Input::Delete(stream.kind, key_of(&obj)))
                }
                Some(Err(e)) => match recovery(&e) {
                    Recovery::Skip => Signal::Malformed(stream.clone(), e.to_string()),
                    Recovery::Relisting => Signal::Expired(stream.clone()),
                    Recovery::RestartNow => {
                        if tx.send(Signal::Expired(stream.clone())).await.is_err() {
                            return;
                        }
                        break None;
                    }
                    Recovery::RestartLater => {
                        let retry_in = backoff.next_delay();
                        let failed = Signal::Failed {
                            stream: stream.clone(),
                            error: e.to_string(),
                            retry_in,
                        };
                        if tx.send(failed).await.is_err() {
                            return;
                        }
                        break Some(retry_in);
                    }
                },
            };
            if tx.send(signal).await.is_err() {
                return;
            }
        };
        drop(events);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= BACKOFF_MIN && first < BACKOFF_MIN * 2, "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
        }
        assert!(
            last >= BACKOFF_MAX && last <= BACKOFF_MAX + BACKOFF_MAX / 5,
            "{last:?}"
        );
        b.reset();
        assert!(b.next_delay() < BACKOFF_MIN * 2);
    }

    fn status(code: u16) -> Box<kube::core::Status> {
        let mut s = kube::core::Status::failure("x", "Expired");
        s.code = code;
        Box::new(s)
    }

    #[test]
    fn errors_are_classified() {
        let serde = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(
            recovery(&watcher::Error::WatchFailed(kube::Error::SerdeError(serde))),
            Recovery::Skip
        );
        assert_eq!(
            recovery(&watcher::Error::WatchFailed(kube::Error::Api(status(0)))),
            Recovery::Skip
        );
        assert_eq!(
            recovery(&watcher::Error::WatchError(status(410))),
            Recovery::Relisting
        );
        assert_eq!(
            recovery(&watcher::Error::WatchStartFailed(kube::Error::Api(status(
                410
            )))),
            Recovery::RestartNow
        );
        assert_eq!(
            recovery(&watcher::Error::InitialListFailed(kube::Error::Api(
                status(500)
            ))),
            Recovery::RestartLater
        );
        assert_eq!(
            recovery(&watcher::Error::NoResourceVersion),
            Recovery::RestartLater
        );
    }
}
