//! Router micro-benchmarks: pick latency in a 10,000-deployment table, publishing the whole
//! table, and a per-deployment update. Run: `cargo bench -p kanmon-bench --bench router`.

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

criterion_group!(benches, baseline, pick, publish);
criterion_main!(benches);
