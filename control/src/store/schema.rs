//! Schema and migrations, versioned with SQLite's `user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE deployments (
    instance TEXT PRIMARY KEY,
    org      TEXT NOT NULL,
    title    TEXT NOT NULL,
    deleted  INTEGER NOT NULL DEFAULT 0,
    body     TEXT NOT NULL
);
CREATE TABLE operations (
    id       INTEGER PRIMARY KEY,
    instance TEXT NOT NULL,
    status   TEXT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX operations_by_instance ON operations (instance, id);
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    who      TEXT NOT NULL,
    action   TEXT NOT NULL,
    instance TEXT,
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX audit_by_instance ON audit (instance, id);
CREATE TABLE users (
    name       TEXT PRIMARY KEY,
    service    INTEGER NOT NULL,
    admin      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users (name)
);
CREATE TABLE grants (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    user  TEXT NOT NULL REFERENCES users (name),
    body  TEXT NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE zone_grants (
    org        TEXT NOT NULL,
    zone       TEXT NOT NULL,
    enabled_by TEXT NOT NULL,
    enabled_at INTEGER NOT NULL,
    PRIMARY KEY (org, zone)
);
"#,
    r#"
CREATE TABLE meters (
    instance TEXT PRIMARY KEY,
    body     TEXT NOT NULL
);
CREATE TABLE usage_days (
    instance  TEXT NOT NULL,
    day       INTEGER NOT NULL,
    node_cpus INTEGER NOT NULL,
    db_cpus   INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    PRIMARY KEY (instance, day)
);
"#,
    r#"
CREATE TABLE subscriptions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    org      TEXT NOT NULL,
    instance TEXT,
    body     TEXT NOT NULL,
    secret   TEXT NOT NULL
);
CREATE INDEX subscriptions_by_org ON subscriptions (org);
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    op           INTEGER NOT NULL,
    event        TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    UNIQUE (subscription, op)
);
CREATE INDEX deliveries_due ON deliveries (state, next_at);
CREATE TABLE delivery_attempts (
    delivery INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    status   INTEGER,
    error    TEXT,
    PRIMARY KEY (delivery, attempt)
);
"#,
    r#"
CREATE TABLE builders (
    instance   TEXT NOT NULL,
    name       TEXT NOT NULL,
    source     TEXT NOT NULL,
    version    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (instance, name)
);
CREATE TABLE builds (
    id          INTEGER PRIMARY KEY,
    instance    TEXT NOT NULL,
    builder     TEXT NOT NULL,
    version     TEXT NOT NULL,
    status      TEXT NOT NULL,
    image       TEXT,
    digest      TEXT,
    error       TEXT,
    log         TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX builds_by_instance ON builds (instance, id);
"#,
];

/// Brings the schema up to date. WAL mode lets readers (the API) run while a step is written;
/// `synchronous = FULL` because the operations log must survive a power cut, not just a crash.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn.execute_batch(&format!("BEGIN; {sql}; COMMIT;"))?;
        conn.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    Ok(())
}
