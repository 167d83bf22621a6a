//! The billing sampler: every `Settings::billing_interval` it samples each deployment's node
//! and database CPUs into its [`Meter`], and at 00:00 UTC it settles the day that ended. The
//! day/maximum rules are plain functions in [`crate::domain::billing`]; this is only the clock
//! and the store around them.

use std::time::Duration;

use crate::{
    domain::{
        billing::{next_midnight, Tier},
        Timestamp,
    },
    runtime::{now, Runtime},
    store::StoreError,
};

/// Samples (when `sample` holds) and settles every live deployment's meter at `at`.
pub fn tick(rt: &Runtime, at: Timestamp, sample: bool) -> Result<(), StoreError> {
    let store = rt.store();
    for dep in rt.deployments().into_iter().filter(|d| !d.deleted) {
        let name = dep.instance.as_str();
        let mut meter = store.meter(name)?;
        let settled = if sample {
            let tier = Tier {
                node_cpus: dep.spec.node_cpus,
                db_cpus: dep.spec.db_cpus,
            };
            meter.sample(at, tier)
        } else {
            let settled = meter.settle(at);
            if settled.is_empty() {
                continue;
            }
            settled
        };
        store.save_meter(name, &meter, &settled)?;
    }
    Ok(())
}

/// Runs the sampler until the process ends: a sample at start and every `interval`, and a
/// settlement at each UTC midnight between samples.
pub async fn run(rt: Runtime) {
    let interval = rt.settings().billing_interval;
    let mut next_sample = now();
    loop {
        let t = now();
        let sample = t >= next_sample;
        if sample {
            next_sample = t.after(interval);
        }
        if let Err(e) = tick(&rt, t, sample) {
            tracing::error!(error = %e, "billing sample failed");
        }
        let wake = next_sample.min(next_midnight(t));
        tokio::time::sleep(Duration::from_millis(wake.0.saturating_sub(now().0).max(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kanmon_router::{InstanceName, Zone};

    use super::*;
    use crate::{
        domain::{billing::DAY_MS, CreateDeployment, DeploymentType, OpKind, OpStatus},
        driver::{LoopbackDriver, NullPublisher, ProcessDriver},
        runtime::Settings,
        store::Store,
    };

    async fn scale(rt: &Runtime, node_cpus: u32) {
        let op = rt
            .submit(
                "alpha",
                OpKind::Scale {
                    node_cpus,
                    db_cpus: 2,
                },
                "ann",
            )
            .unwrap();
        for _ in 0..500 {
            if rt.store().op(op.id).unwrap().unwrap().status.is_final() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = rt.store().op(op.id).unwrap().unwrap();
        assert_eq!(done.status, OpStatus::Completed, "{done:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ticks_charge_each_day_its_highest_sample_and_carry_gaps() {
        let mut settings = Settings::default();
        settings.timings.grace = Duration::from_millis(10);
        let rt = Runtime::start(
            Arc::new(Store::in_memory().unwrap()),
            settings,
            Arc::new(ProcessDriver::new(Arc::new(LoopbackDriver::new()))),
            Arc::new(NullPublisher),
        )
        .unwrap();
        let req = CreateDeployment {
            org: "acme".into(),
            title: "rpg".into(),
            instance: InstanceName::parse("alpha").unwrap(),
            zone: Zone::parse("us-east1").unwrap(),
            kind: DeploymentType::Production,
            version: "3.35.0".parse().unwrap(),
            node_cpus: 1,
            db_cpus: 2,
            delete_protection: None,
        };
        rt.create(req, "ann").unwrap();
        let day = 20_000;
        let at = |h: u64| Timestamp(day * DAY_MS + h * 3_600_000);
        tick(&rt, at(10), true).unwrap();
        scale(&rt, 3).await;
        tick(&rt, at(12), true).unwrap();
        scale(&rt, 1).await;
        tick(&rt, at(20), true).unwrap();
        tick(&rt, at(23), false).unwrap();
        assert!(rt.store().usage("alpha", 0, u64::MAX).unwrap().is_empty());
        // The control plane slept through two days: they carry the last sample.
        tick(&rt, at(72), false).unwrap();
        let got: Vec<(u64, u32, u32, u32)> = rt
            .store()
            .usage("alpha", 0, u64::MAX)
            .unwrap()
            .iter()
            .map(|d| (d.day, d.tier.node_cpus, d.tier.db_cpus, d.samples))
            .collect();
        assert_eq!(
            got,
            [(day, 3, 2, 3), (day + 1, 1, 2, 0), (day + 2, 1, 2, 0)]
        );
    }
}
