//! The set-up the Kubernetes tests share: the wire fixture with its simulated cluster, and a
//! bounded wait for a condition on it.

use std::{sync::Arc, time::Duration};

use kanmon_testkit::k8s::{
    sim::{SimCluster, SimOpts},
    ApiFixture,
};

/// How long a condition on the simulated cluster may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// The fixture and its simulated cluster, whose deleted pods keep running for `grace`.
pub async fn cluster(grace: Duration) -> (Arc<ApiFixture>, SimCluster) {
    let api = Arc::new(ApiFixture::start().await);
    let sim = SimCluster::start(
        &api,
        SimOpts {
            grace,
            ..SimOpts::default()
        },
    );
    (api, sim)
}

/// Waits (bounded by [`WAIT`]) until `check` holds.
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let ok = tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "timed out waiting for {what}");
}
