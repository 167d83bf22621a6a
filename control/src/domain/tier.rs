//! What a CPU tier buys: the PostgreSQL settings of a database with `db_cpus` CPUs and the CPUs
//! each node may use. Pure functions, so both drivers (local `kanmon up`, Kubernetes) size a
//! tier the same way and the numbers are unit-tested in one place.

use super::deployment::{node_count, DeploymentType};

/// Memory a database or node gets per CPU when nothing else says (the Kubernetes driver's
/// `memory_per_cpu_mib` default): the PostgreSQL settings are fractions of it.
pub const DEFAULT_MEMORY_PER_CPU_MIB: u32 = 1024;

/// What a changed setting needs before the server uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Apply {
    /// A configuration reload (SIGHUP, `pg_reload_conf()`).
    Reload,
    /// A server restart (`postmaster` context: the value sizes shared memory or process slots).
    Restart,
}

/// One PostgreSQL setting of a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSetting {
    /// The parameter name.
    pub name: &'static str,
    /// Its value as `postgresql.conf` spells it (`128MB`, `40`).
    pub value: String,
    /// What a change of it needs.
    pub apply: Apply,
}

/// The PostgreSQL settings of a database with `db_cpus` CPUs and `memory_mib` of memory, in a
/// fixed order. Connections grow with CPUs (20 + 20 per CPU: Nakama keeps a pool per node);
/// `shared_buffers` is a quarter of memory and `effective_cache_size` three quarters (the
/// usual PostgreSQL guidance); `work_mem` is what is left after shared buffers split over the
/// connections, a quarter of it (sorts may use several at once), at least 4 MB; the worker
/// processes follow the CPUs (at least PostgreSQL's own default of 8).
pub fn postgres_settings(db_cpus: u32, memory_mib: u64) -> Vec<PgSetting> {
    let cpus = u64::from(db_cpus.max(1));
    let memory = memory_mib.max(256);
    let connections = 20 + 20 * cpus;
    let shared = memory / 4;
    let work = ((memory - shared) / connections / 4).max(4);
    let setting = |name, value: String, apply| PgSetting { name, value, apply };
    vec![
        setting("max_connections", connections.to_string(), Apply::Restart),
        setting("shared_buffers", format!("{shared}MB"), Apply::Restart),
        setting(
            "max_worker_processes",
            (cpus + 6).max(8).to_string(),
            Apply::Restart,
        ),
        setting("max_parallel_workers", cpus.to_string(), Apply::Reload),
        setting("work_mem", format!("{work}MB"), Apply::Reload),
        setting(
            "effective_cache_size",
            format!("{}MB", memory * 3 / 4),
            Apply::Reload,
        ),
    ]
}

/// The settings of a `db_cpus` tier with [`DEFAULT_MEMORY_PER_CPU_MIB`] per CPU.
pub fn postgres_tier(db_cpus: u32) -> Vec<PgSetting> {
    postgres_settings(
        db_cpus,
        u64::from(db_cpus.max(1)) * u64::from(DEFAULT_MEMORY_PER_CPU_MIB),
    )
}

/// What moving a running server from `old` to `new` settings needs: nothing, a reload, or a
/// restart (when any changed setting needs one). A setting that appears or disappears counts
/// as changed.
pub fn apply_needed(old: &[PgSetting], new: &[PgSetting]) -> Option<Apply> {
    let changed = |a: &PgSetting, others: &[PgSetting]| {
        !others
            .iter()
            .any(|b| b.name == a.name && b.value == a.value)
    };
    new.iter()
        .filter(|s| changed(s, old))
        .chain(old.iter().filter(|s| changed(s, new)))
        .map(|s| s.apply)
        .max()
}

/// The CPUs each node of a deployment may use: its node CPUs split over its nodes (a production
/// deployment runs one node per CPU, so each gets one; a development node gets them all).
pub fn cpus_per_node(kind: DeploymentType, node_cpus: u32) -> u32 {
    (node_cpus / node_count(kind, node_cpus).max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value<'a>(s: &'a [PgSetting], name: &str) -> &'a str {
        &s.iter().find(|s| s.name == name).expect(name).value
    }

    #[test]
    fn one_and_two_cpus() {
        let one = postgres_tier(1);
        assert_eq!(value(&one, "max_connections"), "40");
        assert_eq!(value(&one, "shared_buffers"), "256MB");
        assert_eq!(value(&one, "effective_cache_size"), "768MB");
        assert_eq!(value(&one, "work_mem"), "4MB");
        assert_eq!(value(&one, "max_worker_processes"), "8");
        let four = postgres_tier(4);
        assert_eq!(value(&four, "max_connections"), "100");
        assert_eq!(value(&four, "shared_buffers"), "1024MB");
        assert_eq!(value(&four, "effective_cache_size"), "3072MB");
        assert_eq!(value(&four, "work_mem"), "7MB");
        assert_eq!(value(&four, "max_worker_processes"), "10");
        assert_eq!(value(&four, "max_parallel_workers"), "4");
    }

    #[test]
    fn what_a_change_needs() {
        let one = postgres_tier(1);
        assert_eq!(apply_needed(&one, &one), None);
        assert_eq!(apply_needed(&one, &postgres_tier(2)), Some(Apply::Restart));
        let mut reload_only = one.clone();
        reload_only
            .iter_mut()
            .filter(|s| s.name == "work_mem")
            .for_each(|s| s.value = "64MB".into());
        assert_eq!(apply_needed(&one, &reload_only), Some(Apply::Reload));
        assert_eq!(apply_needed(&[], &one), Some(Apply::Restart));
    }

    #[test]
    fn node_cpus_split_over_the_nodes() {
        assert_eq!(cpus_per_node(DeploymentType::Development, 1), 1);
        assert_eq!(cpus_per_node(DeploymentType::Development, 4), 4);
        assert_eq!(cpus_per_node(DeploymentType::Production, 1), 1);
        assert_eq!(cpus_per_node(DeploymentType::Production, 2), 1);
        assert_eq!(cpus_per_node(DeploymentType::Production, 0), 1);
    }

    fn mb(v: &str) -> u64 {
        v.trim_end_matches("MB").parse().expect("MB value")
    }

    proptest! {
        /// More CPUs never buy less of anything, and shared buffers plus the connections'
        /// work memory fit in the tier's memory.
        #[test]
        fn a_bigger_tier_gets_no_less(cpus in 1u32..64, more in 1u32..64) {
            let (a, b) = (postgres_tier(cpus), postgres_tier(cpus + more));
            for (x, y) in a.iter().zip(&b) {
                prop_assert_eq!(x.name, y.name);
                let (x, y) = (mb(&x.value), mb(&y.value));
                prop_assert!(x <= y, "{} {} > {}", a[0].name, x, y);
            }
            let memory = u64::from(cpus) * u64::from(DEFAULT_MEMORY_PER_CPU_MIB);
            let used = mb(value(&a, "shared_buffers"))
                + mb(value(&a, "work_mem")) * mb(value(&a, "max_connections"));
            prop_assert!(used <= memory, "{used} MB of {memory} MB");
        }
    }
}
