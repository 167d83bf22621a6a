//! One deployment's slow step (a publisher that blocks, as an fsync on a slow disk or a
//! stuck API call would) must not hold up another deployment's operations.

use std::sync::{Condvar, Mutex};

use kanmon_router::DeploymentSpec;

use super::*;
use crate::driver::PublishError;

/// Blocks every publish of one deployment, once armed, until released (or 60 s pass, so a
/// failing test cannot hang).
struct Gate {
    inner: Arc<dyn NodeStatePublisher>,
    blocked_instance: &'static str,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    armed: bool,
    held: bool,
}

impl Gate {
    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_armed(&self, armed: bool) {
        self.state().armed = armed;
        self.changed.notify_all();
    }

    fn held(&self) -> bool {
        self.state().held
    }
}

impl NodeStatePublisher for Gate {
    fn publish(&self, spec: DeploymentSpec) -> Result<(), PublishError> {
        if spec.instance.as_str() == self.blocked_instance {
            let mut state = self.state();
            if state.armed {
                state.held = true;
                let (mut state, _) = self
                    .changed
                    .wait_timeout_while(state, Duration::from_secs(60), |s| s.armed)
                    .unwrap_or_else(|p| p.into_inner());
                state.held = false;
            }
        }
        self.inner.publish(spec)
    }

    fn remove(&self, instance: &InstanceName) -> Result<(), PublishError> {
        self.inner.remove(instance)
    }

    fn active_connections(&self, instance: &InstanceName, zone: &Zone, node: &str) -> Option<u64> {
        self.inner.active_connections(instance, zone, node)
    }
}

fn named(name: &str) -> CreateDeployment {
    CreateDeployment {
        instance: InstanceName::parse(name).unwrap(),
        ..request(DeploymentType::Development, 1)
    }
}

/// Waits (bounded, generous for a loaded machine) until operation `id` is finished.
async fn settled(rt: &Runtime, id: u64) -> Option<Operation> {
    for _ in 0..1500 {
        let op = rt.store().op(id).unwrap().unwrap();
        if op.status.is_final() {
            return Some(op);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_stuck_publishing_does_not_block_another_deployments_operation() {
    let table = Arc::new(HealthTable::new());
    let gate = Arc::new(Gate {
        inner: edge(&table),
        blocked_instance: "alpha",
        state: Mutex::default(),
        changed: Condvar::new(),
    });
    let rt = Runtime::start(
        Arc::new(Store::in_memory().unwrap()),
        settings(),
        Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
        gate.clone(),
    )
    .unwrap();
    for name in ["alpha", "beta"] {
        let (_, first) = rt.create(named(name), "ann").unwrap();
        let done = settled(&rt, first.id).await.expect("first deploy finishes");
        assert_eq!(done.status, OpStatus::Completed, "{name}");
    }

    gate.set_armed(true);
    let alpha = rt.clone();
    let stuck = tokio::task::spawn_blocking(move || alpha.submit("alpha", OpKind::Reboot, "ann"));
    for _ in 0..1500 {
        if gate.held() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gate.held(), "alpha's reboot never published");

    // While alpha's step waits on its publisher, beta's reboot runs start to finish, and
    // alpha can still be read (its last persisted state).
    let beta = rt.clone();
    let submitted = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || beta.submit("beta", OpKind::Reboot, "ann")),
    )
    .await;
    let outcome = match submitted {
        Ok(joined) => settled(&rt, joined.unwrap().unwrap().id).await,
        Err(_) => None,
    };
    let still_held = gate.held();
    let alpha_readable = rt.deployment("alpha").is_ok();
    gate.set_armed(false);
    let outcome = outcome.expect("beta's reboot did not finish while alpha was publishing");
    assert_eq!(outcome.status, OpStatus::Completed);
    assert!(still_held, "alpha was released before beta finished");
    assert!(alpha_readable);

    let reboot = stuck.await.unwrap().unwrap();
    let done = settled(&rt, reboot.id)
        .await
        .expect("alpha's reboot finishes");
    assert_eq!(done.status, OpStatus::Completed);
}
