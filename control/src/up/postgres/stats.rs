//! The load of each deployment's database, for the control plane's metrics: CPU of the
//! server's processes (read from `/proc` at scrape time) and query load and top queries from
//! `pg_stat_statements` (read on an interval over one loopback connection per server, kept
//! open between samples).
//!
//! Every server is started with the extension preloaded and utility statements untracked
//! (their text is not normalised: `ALTER USER … PASSWORD '…'` would be kept as typed); the
//! sampler creates the extension in the deployment's database when it connects, so databases
//! initialised before this existed get it too, and turns tracking off for its own session so
//! that sampling is not counted as load.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio_postgres::NoTls;

use super::{Databases, ServerInfo, DATABASE, SUPERUSER};
use crate::metrics::{
    database::{top_queries, QueryLoad, StatementRow, TopQuery, DEFAULT_TOP_QUERIES},
    procfs, DatabaseSample, DatabaseSource,
};

/// `-c` settings of every server.
pub(super) const SERVER_SETTINGS: [&str; 2] = [
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track_utility=off",
];

/// Run once per connection, before any sample.
const SETUP: &str = "SET pg_stat_statements.track = 'none'; \
                     CREATE EXTENSION IF NOT EXISTS pg_stat_statements";

/// Per statement: entries of the same `queryid` (other users or databases) are summed.
const STATEMENTS: &str = "SELECT queryid, sum(calls)::int8, sum(total_exec_time)::float8, \
                          min(query) FROM pg_stat_statements WHERE queryid IS NOT NULL \
                          GROUP BY queryid";

/// The shortest interval between samples (tokio's interval refuses zero).
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long connecting, setting up or one sample may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How the databases are sampled.
#[derive(Debug, Clone)]
pub struct StatsConfig {
    /// Time between samples of `pg_stat_statements`.
    pub interval: Duration,
    /// Queries exported per deployment (by total execution time).
    pub top_queries: usize,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            top_queries: DEFAULT_TOP_QUERIES,
        }
    }
}

/// Why one sample of one database failed.
#[derive(Debug, thiserror::Error)]
enum StatsError {
    #[error("connecting: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("setting up pg_stat_statements: {0}")]
    Setup(#[source] tokio_postgres::Error),
    #[error("reading pg_stat_statements: {0}")]
    Read(#[source] tokio_postgres::Error),
    #[error("no answer within {TIMEOUT:?}")]
    Timeout,
}

#[derive(Debug, Default)]
struct Sampled {
    load: QueryLoad,
    top: Vec<TopQuery>,
}

/// The sampled load of every running database.
#[derive(Debug)]
pub struct DatabaseStats {
    databases: Arc<Databases>,
    config: StatsConfig,
    sampled: Mutex<HashMap<String, Sampled>>,
}

struct Connection {
    port: u16,
    client: tokio_postgres::Client,
}

impl DatabaseStats {
    /// Statistics of `databases`, sampled as `config` says once [`DatabaseStats::run`] runs.
    pub fn new(databases: Arc<Databases>, config: StatsConfig) -> Arc<Self> {
        Arc::new(Self {
            databases,
            config,
            sampled: Mutex::new(HashMap::new()),
        })
    }

    fn sampled(&self) -> MutexGuard<'_, HashMap<String, Sampled>> {
        self.sampled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Samples every database each interval, until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut connections = HashMap::new();
        let mut tick = tokio::time::interval(self.config.interval.max(MIN_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(&mut connections).await;
        }
    }

    async fn sample(&self, connections: &mut HashMap<String, Connection>) {
        let servers = self.databases.servers();
        let running = |name: &str, port: Option<u16>| {
            servers
                .iter()
                .any(|s| s.instance == name && port.is_none_or(|p| p == s.port))
        };
        // A server that stopped (or came back on another port) is forgotten.
        connections.retain(|name, c| running(name, Some(c.port)) && !c.client.is_closed());
        self.sampled().retain(|name, _| running(name, None));
        for server in &servers {
            match self.read(server, connections).await {
                Ok(rows) => {
                    let mut sampled = self.sampled();
                    let s = sampled.entry(server.instance.clone()).or_default();
                    s.load.update(&rows);
                    s.top = top_queries(&rows, self.config.top_queries);
                }
                Err(e) => {
                    connections.remove(&server.instance);
                    tracing::warn!(deployment = %server.instance, error = %e, "sampling the database failed");
                }
            }
        }
    }

    async fn read(
        &self,
        server: &ServerInfo,
        connections: &mut HashMap<String, Connection>,
    ) -> Result<Vec<StatementRow>, StatsError> {
        if !connections.contains_key(&server.instance) {
            let c = connect(server).await?;
            connections.insert(server.instance.clone(), c);
        }
        let Some(c) = connections.get(&server.instance) else {
            return Ok(Vec::new());
        };
        let rows = tokio::time::timeout(TIMEOUT, c.client.query(STATEMENTS, &[]))
            .await
            .map_err(|_| StatsError::Timeout)?
            .map_err(StatsError::Read)?;
        rows.iter()
            .map(|r| {
                Ok(StatementRow {
                    queryid: r.try_get(0).map_err(StatsError::Read)?,
                    calls: u64::try_from(r.try_get::<_, i64>(1).map_err(StatsError::Read)?)
                        .unwrap_or(0),
                    total_ms: r.try_get(2).map_err(StatsError::Read)?,
                    query: r
                        .try_get::<_, Option<String>>(3)
                        .map_err(StatsError::Read)?
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}

async fn connect(server: &ServerInfo) -> Result<Connection, StatsError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(server.port)
        .user(SUPERUSER)
        .password(&server.password)
        .dbname(DATABASE)
        .application_name("kanmon-stats")
        .connect_timeout(TIMEOUT);
    let (client, connection) = tokio::time::timeout(TIMEOUT, cfg.connect(NoTls))
        .await
        .map_err(|_| StatsError::Timeout)?
        .map_err(StatsError::Connect)?;
    let instance = server.instance.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(deployment = %instance, error = %e, "statistics connection ended");
        }
    });
    tokio::time::timeout(TIMEOUT, client.batch_execute(SETUP))
        .await
        .map_err(|_| StatsError::Timeout)?
        .map_err(StatsError::Setup)?;
    Ok(Connection {
        port: server.port,
        client,
    })
}

impl DatabaseSource for DatabaseStats {
    fn samples(&self) -> Vec<DatabaseSample> {
        let servers = self.databases.servers();
        if servers.is_empty() {
            return Vec::new();
        }
        let procs = procfs::all_stats();
        let sampled = self.sampled();
        servers
            .into_iter()
            .map(|s| {
                let q = sampled.get(&s.instance);
                DatabaseSample {
                    cpu_seconds: procfs::tree_cpu_seconds(s.pid, &procs),
                    calls: q.map_or(0, |q| q.load.calls()),
                    query_seconds: q.map_or(0.0, |q| q.load.seconds()),
                    top: q.map(|q| q.top.clone()).unwrap_or_default(),
                    deployment: s.instance,
                }
            })
            .collect()
    }
}
