//! Builders (per deployment) and the record of each build: its status, the image reference a
//! success yields, and its bounded log.

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{Store, StoreError};
use crate::domain::{
    build::{BuildSource, Builder},
    Timestamp,
};

/// A builder as stored, with who made it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBuilder {
    /// The deployment it builds for.
    pub instance: String,
    /// The builder itself.
    pub builder: Builder,
    /// The user who created it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

/// Where a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Started, not finished (or interrupted by a restart of the control plane).
    Running,
    /// Finished with an artifact.
    Succeeded,
    /// Finished without one.
    Failed,
}

impl BuildStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "running" => Ok(Self::Running),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::Invalid {
                what: "build",
                reason: format!("unknown status {other:?}"),
            }),
        }
    }
}

/// One build. Its id is the id of the `build` operation that ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildRecord {
    /// The build (and operation) id.
    pub id: u64,
    /// The deployment.
    pub instance: String,
    /// The builder used.
    pub builder: String,
    /// The version compiled against.
    pub version: String,
    /// Where it stands.
    pub status: BuildStatus,
    /// On success: the image reference `deploy` can use.
    pub image: Option<String>,
    /// On success: the artifact's SHA-256 (hex).
    pub digest: Option<String>,
    /// On failure: why.
    pub error: Option<String>,
    /// The build's output (bounded by the runner).
    pub log: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
}

fn invalid(reason: String) -> StoreError {
    StoreError::Invalid {
        what: "builder",
        reason,
    }
}

fn builder_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, String, String, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_builder(
    (instance, name, source, version, created_by, created_at): (
        String,
        String,
        String,
        String,
        String,
        i64,
    ),
) -> Result<StoredBuilder, StoreError> {
    let source = BuildSource::parse(&source).map_err(|e| invalid(e.to_string()))?;
    let version = version
        .parse()
        .map_err(|e| invalid(format!("version {version:?}: {e}")))?;
    Ok(StoredBuilder {
        instance,
        builder: Builder {
            name,
            source,
            version,
        },
        created_by,
        created_at: Timestamp(created_at as u64),
    })
}

fn build_row(r: &Row<'_>) -> rusqlite::Result<(BuildRecord, String)> {
    Ok((
        BuildRecord {
            id: r.get::<_, i64>(0)? as u64,
            instance: r.get(1)?,
            builder: r.get(2)?,
            version: r.get(3)?,
            status: BuildStatus::Running,
            image: r.get(5)?,
            digest: r.get(6)?,
            error: r.get(7)?,
            log: r.get(8)?,
            started_at: Timestamp(r.get::<_, i64>(9)? as u64),
            finished_at: r.get::<_, Option<i64>>(10)?.map(|t| Timestamp(t as u64)),
        },
        r.get(4)?,
    ))
}

const BUILD_COLUMNS: &str =
    "id, instance, builder, version, status, image, digest, error, log, started_at, finished_at";

impl Store {
    /// Adds a builder to a deployment, refusing a name it already has. The builder was checked
    /// by [`Builder::new`] (name, source, version).
    pub fn insert_builder(&self, b: &StoredBuilder) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO builders (instance, name, source, version, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                b.instance,
                b.builder.name,
                b.builder.source.as_text(),
                b.builder.version.to_string(),
                b.created_by,
                b.created_at.0 as i64
            ],
        )?;
        if n == 0 {
            return Err(StoreError::BuilderExists(b.builder.name.clone()));
        }
        Ok(())
    }

    /// A deployment's builders, by name.
    pub fn builders(&self, instance: &str) -> Result<Vec<StoredBuilder>, StoreError> {
        let rows: Vec<_> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT instance, name, source, version, created_by, created_at FROM builders
                 WHERE instance = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![instance], builder_row)?;
            rows.collect::<Result<_, _>>()?
        };
        rows.into_iter().map(decode_builder).collect()
    }

    /// One builder of a deployment.
    pub fn builder(&self, instance: &str, name: &str) -> Result<Option<StoredBuilder>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT instance, name, source, version, created_by, created_at FROM builders
                 WHERE instance = ?1 AND name = ?2",
                params![instance, name],
                builder_row,
            )
            .optional()?;
        row.map(decode_builder).transpose()
    }

    /// Removes a builder; whether there was one. Its past builds (and their images) stay.
    pub fn delete_builder(&self, instance: &str, name: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM builders WHERE instance = ?1 AND name = ?2",
            params![instance, name],
        )?;
        Ok(n > 0)
    }

    /// Records a build (new, or its outcome: the same id again replaces the row).
    pub fn save_build(&self, b: &BuildRecord) -> Result<(), StoreError> {
        self.conn().execute(
            &format!(
                "INSERT OR REPLACE INTO builds ({BUILD_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                b.id as i64,
                b.instance,
                b.builder,
                b.version,
                b.status.as_str(),
                b.image,
                b.digest,
                b.error,
                b.log,
                b.started_at.0 as i64,
                b.finished_at.map(|t| t.0 as i64)
            ],
        )?;
        Ok(())
    }

    /// One build of a deployment.
    pub fn build(&self, instance: &str, id: u64) -> Result<Option<BuildRecord>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {BUILD_COLUMNS} FROM builds WHERE instance = ?1 AND id = ?2"),
                params![instance, id as i64],
                build_row,
            )
            .optional()?;
        row.map(with_status).transpose()
    }

    /// A deployment's builds, newest first (at most `limit`).
    pub fn builds(&self, instance: &str, limit: u32) -> Result<Vec<BuildRecord>, StoreError> {
        let rows: Vec<_> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE instance = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![instance, limit], build_row)?;
            rows.collect::<Result<_, _>>()?
        };
        rows.into_iter().map(with_status).collect()
    }
}

impl Store {
    /// Marks every build still `running` as failed with `error`, finished `at`: only a
    /// control-plane start calls this, when no build can be running (their runners died with
    /// the process that ran them). Returns `(instance, id)` of each.
    pub fn fail_running_builds(
        &self,
        error: &str,
        at: Timestamp,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.conn();
        let found: Vec<(String, u64)> = {
            let mut stmt = conn
                .prepare("SELECT instance, id FROM builds WHERE status = 'running' ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect::<Result<_, _>>()?
        };
        conn.execute(
            "UPDATE builds SET status = 'failed', error = ?1, finished_at = ?2
             WHERE status = 'running'",
            params![error, at.0 as i64],
        )?;
        Ok(found)
    }

    /// `(id, image)` of a builder's successful builds that still have their artifact.
    pub fn build_artifacts(
        &self,
        instance: &str,
        builder: &str,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, image FROM builds WHERE instance = ?1 AND builder = ?2
             AND status = 'succeeded' AND image IS NOT NULL ORDER BY id",
        )?;
        let rows = stmt.query_map(params![instance, builder], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that build `id`'s artifact was removed by the cleanup: its image is cleared
    /// (a deploy of it would find nothing) and `note` says why.
    pub fn forget_build_artifact(
        &self,
        instance: &str,
        id: u64,
        note: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE builds SET image = NULL, error = ?3 WHERE instance = ?1 AND id = ?2",
            params![instance, id as i64, note],
        )?;
        Ok(())
    }
}

fn with_status((mut b, status): (BuildRecord, String)) -> Result<BuildRecord, StoreError> {
    b.status = BuildStatus::parse(&status)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(instance: &str, name: &str) -> StoredBuilder {
        StoredBuilder {
            instance: instance.into(),
            builder: Builder {
                name: name.into(),
                source: BuildSource::parse("/srv/game").unwrap(),
                version: "3.37.0".parse().unwrap(),
            },
            created_by: "alice".into(),
            created_at: Timestamp(7),
        }
    }

    #[test]
    fn builders_are_per_deployment_and_unique_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        {
            let s = Store::open(&path).unwrap();
            s.insert_builder(&builder("a", "main")).unwrap();
            s.insert_builder(&builder("b", "main")).unwrap();
            assert!(matches!(
                s.insert_builder(&builder("a", "main")),
                Err(StoreError::BuilderExists(_))
            ));
            s.insert_builder(&builder("a", "alt")).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let names: Vec<_> = s
            .builders("a")
            .unwrap()
            .into_iter()
            .map(|b| b.builder.name)
            .collect();
        assert_eq!(names, ["alt", "main"]);
        assert_eq!(s.builder("a", "main").unwrap(), Some(builder("a", "main")));
        assert!(s.delete_builder("a", "main").unwrap());
        assert!(!s.delete_builder("a", "main").unwrap());
        assert_eq!(s.builder("a", "main").unwrap(), None);
        assert_eq!(s.builders("b").unwrap().len(), 1, "b's builder untouched");
    }

    #[test]
    fn builds_record_their_outcome_and_stay_with_their_deployment() {
        let s = Store::in_memory().unwrap();
        let mut b = BuildRecord {
            id: 4,
            instance: "a".into(),
            builder: "main".into(),
            version: "3.37.0".into(),
            status: BuildStatus::Running,
            image: None,
            digest: None,
            error: None,
            log: String::new(),
            started_at: Timestamp(1),
            finished_at: None,
        };
        s.save_build(&b).unwrap();
        b.status = BuildStatus::Succeeded;
        b.image = Some("/data/images/main-0123".into());
        b.log = "built\n".into();
        b.finished_at = Some(Timestamp(2));
        s.save_build(&b).unwrap();
        assert_eq!(s.build("a", 4).unwrap(), Some(b.clone()));
        assert_eq!(
            s.build("other", 4).unwrap(),
            None,
            "ids do not cross tenants"
        );
        assert_eq!(s.builds("a", 10).unwrap(), [b]);
    }

    #[test]
    fn a_restart_fails_running_builds_and_cleanup_forgets_artifacts() {
        let s = Store::in_memory().unwrap();
        let record = |id, status, image: Option<&str>| BuildRecord {
            id,
            instance: "a".into(),
            builder: "main".into(),
            version: "3.37.0".into(),
            status,
            image: image.map(str::to_string),
            digest: None,
            error: None,
            log: "half a log".into(),
            started_at: Timestamp(1),
            finished_at: None,
        };
        s.save_build(&record(1, BuildStatus::Succeeded, Some("/i/1")))
            .unwrap();
        s.save_build(&record(2, BuildStatus::Running, None))
            .unwrap();
        s.save_build(&record(3, BuildStatus::Succeeded, Some("/i/3")))
            .unwrap();
        assert_eq!(
            s.fail_running_builds("interrupted by a restart", Timestamp(9))
                .unwrap(),
            [("a".to_string(), 2)]
        );
        let b = s.build("a", 2).unwrap().unwrap();
        assert_eq!(b.status, BuildStatus::Failed);
        assert_eq!(b.error.as_deref(), Some("interrupted by a restart"));
        assert_eq!(b.finished_at, Some(Timestamp(9)));
        assert_eq!(b.log, "half a log", "the log so far stays");
        assert!(s
            .fail_running_builds("x", Timestamp(10))
            .unwrap()
            .is_empty());
        assert_eq!(
            s.build_artifacts("a", "main").unwrap(),
            [(1, "/i/1".to_string()), (3, "/i/3".to_string())]
        );
        s.forget_build_artifact("a", 1, "removed").unwrap();
        assert_eq!(
            s.build_artifacts("a", "main").unwrap(),
            [(3, "/i/3".to_string())]
        );
        assert_eq!(
            s.build("a", 1).unwrap().unwrap().status,
            BuildStatus::Succeeded
        );
    }

    #[test]
    fn a_hand_edited_builder_is_an_error_not_a_panic() {
        let s = Store::in_memory().unwrap();
        s.conn()
            .execute(
                "INSERT INTO builders VALUES ('a', 'x', 'ext::sh', '3.37.0', 'u', 0)",
                [],
            )
            .unwrap();
        assert!(matches!(s.builders("a"), Err(StoreError::Invalid { .. })));
    }
}
