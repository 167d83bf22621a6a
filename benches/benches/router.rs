//! Router micro-benchmarks: pick latency in a 10,000-deployment table, publishing the whole
//! table, a per-deployment update, and the fleet model of the README (10,000 deployments,
//! 40,000 nodes, 100 endpoint changes a second): table memory per deployment, the cost of one
//! update, and pick latency while the churn goes on.
//! Run: `cargo bench -p kanmon-bench --bench router` (`-- fleet` for the fleet model alone).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kanmon_router::{DeploymentSpec, HealthTable, InstanceName, NodeSpec, NodeState, Zone};

const DEPLOYMENTS: usize = 10_000;

fn spec(i: usize, nodes: usize) -> DeploymentSpec {
    DeploymentSpec {
        instance: InstanceName::parse(&format!("dep{i}")).unwrap(),
        zone: Zone::parse("us-east1").unwrap(),
        nodes: (0..nodes)
            .map(|n| NodeSpec {
                id: format!("dep{i}-{n}"),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + (n % 50_000) as u16)),
                grpc: None,
                console: None,
                state: if n % 7 == 3 {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                },
            })
            .collect(),
        fallback_to_draining: false,
        max_connections: None,
        console_allow: Vec::new(),
    }
}

/// A table of 10,000 two-node deployments plus one deployment of `big` nodes named "target".
fn table(big: usize) -> HealthTable {
    let t = HealthTable::new();
    let mut specs: Vec<_> = (0..DEPLOYMENTS - 1).map(|i| spec(i, 2)).collect();
    let mut target = spec(0, big);
    target.instance = InstanceName::parse("target").unwrap();
    specs.push(target);
    t.publish_all(specs);
    t
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for nodes in [2usize, 16, 1024] {
        let t = table(nodes);
        let mut now = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(nodes), &nodes, |b, _| {
            b.iter(|| {
                now += 1;
                black_box(
                    t.pick(black_box("target"), black_box("us-east1"), now)
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn publish(c: &mut Criterion) {
    let t = table(2);
    let specs: Vec<_> = (0..DEPLOYMENTS).map(|i| spec(i, 2)).collect();
    c.bench_function("publish_all_10k", |b| {
        b.iter_batched(
            || specs.clone(),
            |s| t.publish_all(s),
            criterion::BatchSize::LargeInput,
        )
    });
    let one = spec(4242, 2);
    c.bench_function("publish_deployment_in_10k", |b| {
        b.iter_batched(
            || one.clone(),
            |s| t.publish_deployment(s),
            criterion::BatchSize::SmallInput,
        )
    });
}

/// The floor a pick is compared with: one lookup in a plain `HashMap` of 10,000 entries plus
/// one atomic increment (what any router must do at least), measured in the same run.
fn baseline(c: &mut Criterion) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let map: std::collections::HashMap<String, AtomicU64> = (0..DEPLOYMENTS)
        .map(|i| (format!("dep{i}"), AtomicU64::new(0)))
        .collect();
    c.bench_function("baseline/hashmap_get_and_increment", |b| {
        b.iter(|| {
            map.get(black_box("dep4242"))
                .map(|a| a.fetch_add(1, Ordering::Relaxed))
        })
    });
}

/// Nodes per deployment in the fleet model (10,000 × 4 = 40,000 nodes).
const FLEET_NODES: usize = 4;
/// Endpoint changes per second in the fleet model.
const CHURN_PER_S: u64 = 100;

/// Deployment `i` of the fleet with node `changed` (of 4) draining, as one endpoint change.
fn fleet_spec(i: usize, changed: usize) -> DeploymentSpec {
    let mut s = spec(i, FLEET_NODES);
    for (n, node) in s.nodes.iter_mut().enumerate() {
        node.state = if n == changed % FLEET_NODES {
            NodeState::Draining
        } else {
            NodeState::Ready
        };
    }
    s
}

fn fleet_table() -> HealthTable {
    let t = HealthTable::new();
    t.publish_all((0..DEPLOYMENTS).map(|i| fleet_spec(i, 0)).collect());
    t
}

/// The fleet model. Memory is printed (criterion times, it does not weigh): the bytes the
/// published table holds, counted by the allocator, per deployment and per node.
fn fleet(c: &mut Criterion) {
    let t = HealthTable::new();
    // The specs are made inside the window too: what the table keeps of them (names moved
    // in) counts, and what it drops is subtracted again.
    let info = allocation_counter::measure(|| {
        t.publish_all((0..DEPLOYMENTS).map(|i| fleet_spec(i, 0)).collect());
    });
    let bytes = info.bytes_current.max(0) as f64;
    eprintln!(
        "fleet: {DEPLOYMENTS} deployments / {} nodes: table holds {:.1} MiB, {:.0} B per \
         deployment, {:.0} B per node (peak while publishing {:.1} MiB)",
        DEPLOYMENTS * FLEET_NODES,
        bytes / 1048576.0,
        bytes / DEPLOYMENTS as f64,
        bytes / (DEPLOYMENTS * FLEET_NODES) as f64,
        info.bytes_max as f64 / 1048576.0
    );
    drop(t);

    let t = fleet_table();
    let mut k = 0usize;
    c.bench_function("fleet/endpoint_change_in_10k_deployments_40k_nodes", |b| {
        b.iter_batched(
            || {
                k += 1;
                fleet_spec((k * 7919) % DEPLOYMENTS, k)
            },
            |s| t.publish_deployment(s),
            criterion::BatchSize::SmallInput,
        )
    });

    let names: Vec<String> = (0..DEPLOYMENTS).map(|i| format!("dep{i}")).collect();
    let mut now = 0u64;
    let mut i = 0usize;
    let mut pick_any = |t: &HealthTable| {
        now += 1;
        i = (i + 4243) % DEPLOYMENTS;
        black_box(t.pick(black_box(&names[i]), "us-east1", now).unwrap());
    };
    c.bench_function("fleet/pick_quiet", |b| b.iter(|| pick_any(&t)));

    // 100 endpoint changes a second from another thread (the discovery task) while picking.
    let t = std::sync::Arc::new(t);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = 0usize;
            // Bounded: stops with the flag, and after an hour at the latest.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && k < 360_000 {
                k += 1;
                t.publish_deployment(fleet_spec((k * 104_729) % DEPLOYMENTS, k));
                std::thread::sleep(std::time::Duration::from_millis(1000 / CHURN_PER_S));
            }
            k
        })
    };
    c.bench_function("fleet/pick_under_100_changes_per_s", |b| {
        b.iter(|| pick_any(&t))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let changes = churn.join().unwrap_or(0);
    eprintln!("fleet: {changes} endpoint changes published while picking");
}

criterion_group!(benches, baseline, pick, publish, fleet);
criterion_main!(benches);
