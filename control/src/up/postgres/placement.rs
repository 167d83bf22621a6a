//! Where the data directories of one state directory live, and as whom their servers run.
//!
//! Run as any user but root, the servers run as that user with their data directories in the
//! state directory (`{state}/postgres/{instance}`), as they always did.
//!
//! `initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` OS
//! user (Debian's package creates it). That user cannot enter a state directory under `/root`
//! or in a 0700 `mktemp -d`, the most common places to clone into, so the data directories
//! live where it can: `/var/lib/kanmon/postgres/{id}/{instance}` (each 0700, owned by
//! `postgres`; `{id}` is root's, 0711, so `postgres` passes through without listing it). The
//! state directory records that path in `postgres/data-root`, which decides on every later
//! start; `{id}/state-dir` names the state directory back, so a stray `{id}` can be traced
//! to its owner and a copied state directory cannot silently share another's databases.
//! Deleting a deployment removes its data directory. Passwords stay in the state directory.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Uid, User};

use super::{io, DbError};

/// Where root's data directories go, one `{id}` directory per state directory.
pub const ROOT_DATA_BASE: &str = "/var/lib/kanmon/postgres";

/// The file in `{state}/postgres` naming the data root chosen for it.
const RECORD: &str = "data-root";

/// The file in a data root outside the state directory naming that state directory.
const BACK_REFERENCE: &str = "state-dir";

/// The OS user the servers run as when `kanmon up` runs as root.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerUser {
    pub(super) uid: Uid,
    pub(super) gid: Gid,
}

/// Where the data directories of one state directory live, and as whom their servers run.
#[derive(Debug)]
pub(super) struct Placement {
    /// Holds one data directory per deployment.
    pub(super) data_root: PathBuf,
    /// `None`: as the user running `kanmon up`.
    pub(super) user: Option<ServerUser>,
}

/// The placement for `dir` (`{state}/postgres`, canonical): in `dir` unless running as root;
/// as root the recorded data root, chosen and recorded under `base` on first use.
pub(super) fn decide(dir: &Path, base: &Path) -> Result<Placement, DbError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(Placement {
            data_root: dir.to_path_buf(),
            user: None,
        });
    }
    let user = User::from_name("postgres")
        .map_err(|e| DbError::RootSetup(format!("looking up the `postgres` OS user: {e}")))?
        .ok_or_else(|| {
            DbError::RootSetup(
                "there is no `postgres` OS user to run the databases as (Debian's `postgresql` \
                 package creates it)"
                    .into(),
            )
        })?;
    Ok(Placement {
        data_root: recorded_root(dir, base)?,
        user: Some(ServerUser {
            uid: user.uid,
            gid: user.gid,
        }),
    })
}

/// The data root `dir` records (the directory is created again if it went missing); without a
/// record a new one under `base`, recorded, or `dir` itself when it already holds data
/// directories from before data roots were recorded (they keep working where they are).
pub(super) fn recorded_root(dir: &Path, base: &Path) -> Result<PathBuf, DbError> {
    let record = dir.join(RECORD);
    match std::fs::read_to_string(&record) {
        Ok(text) => {
            let root = PathBuf::from(text.trim());
            if !root.is_absolute() {
                return Err(DbError::RootSetup(format!(
                    "{} does not hold an absolute path",
                    record.display()
                )));
            }
            if root != dir {
                claim(&root, dir)?;
            }
            Ok(root)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let root = if holds_data(dir) {
                dir.to_path_buf()
            } else {
                let root = base.join(new_id());
                claim(&root, dir)?;
                root
            };
            write_atomically(&record, &format!("{}\n", root.display()))?;
            tracing::info!(state = %dir.display(), data_root = %root.display(), "database data root recorded");
            Ok(root)
        }
        Err(source) => Err(DbError::Io {
            path: record,
            source,
        }),
    }
}

/// Creates `root` (0711) if missing and makes its back-reference name `dir`, unless another
/// state directory that still exists records it too.
fn claim(root: &Path, dir: &Path) -> Result<(), DbError> {
    if let Some(parent) = root.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io(parent))?;
    }
    match std::fs::DirBuilder::new().mode(0o711).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(DbError::Io {
                path: root.to_path_buf(),
                source,
            })
        }
    }
    let back = root.join(BACK_REFERENCE);
    if let Ok(text) = std::fs::read_to_string(&back) {
        let owner = PathBuf::from(text.trim());
        if owner == dir {
            return Ok(());
        }
        let owner_records =
            std::fs::read_to_string(owner.join(RECORD)).is_ok_and(|r| Path::new(r.trim()) == root);
        if owner_records {
            return Err(DbError::RootSetup(format!(
                "the databases in {} belong to {} as well (a copied state directory?); remove {} \
                 to give this one databases of its own",
                root.display(),
                owner.display(),
                dir.join(RECORD).display()
            )));
        }
        tracing::info!(data_root = %root.display(), from = %owner.display(), to = %dir.display(), "database data root follows its moved state directory");
    }
    write_atomically(&back, &format!("{}\n", dir.display()))
}

/// Whether `dir` holds an initialised data directory.
fn holds_data(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join("PG_VERSION").is_file())
    })
}

fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Writes `text` to `path` through a temporary file and a rename, so a crash leaves the old
/// content or the new, never half of it.
fn write_atomically(path: &Path, text: &str) -> Result<(), DbError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The data root of the state directory's `postgres` directory `dir`: the recorded one, else
/// `dir` itself. For tools and tests that look for a state directory's databases.
pub fn data_root(dir: &Path) -> PathBuf {
    std::fs::read_to_string(dir.join(RECORD))
        .map(|t| PathBuf::from(t.trim()))
        .unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_state_directory_gets_its_own_recorded_root_outside() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (dir, base) = (tmp.path().join("state/postgres"), tmp.path().join("base"));
        std::fs::create_dir_all(&dir).expect("dir");
        let root = recorded_root(&dir, &base).expect("root");
        assert!(root.starts_with(&base), "{}", root.display());
        assert_eq!(data_root(&dir), root);
        let back = std::fs::read_to_string(root.join(BACK_REFERENCE)).expect("back reference");
        assert_eq!(Path::new(back.trim()), dir);
        // Decided once: the next start uses the same root.
        assert_eq!(recorded_root(&dir, &base).expect("again"), root);
        // A second state directory gets another one.
        let other = tmp.path().join("other/postgres");
        std::fs::create_dir_all(&other).expect("other");
        assert_ne!(recorded_root(&other, &base).expect("other root"), root);
    }

    #[test]
    fn existing_data_directories_stay_where_they_are() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("postgres");
        std::fs::create_dir_all(dir.join("demo")).expect("dir");
        std::fs::write(dir.join("demo/PG_VERSION"), "15\n").expect("PG_VERSION");
        let root = recorded_root(&dir, &tmp.path().join("base")).expect("root");
        assert_eq!(root, dir);
        assert_eq!(data_root(&dir), dir);
    }

    #[test]
    fn a_copied_state_directory_does_not_share_databases() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let base = tmp.path().join("base");
        let (a, b) = (tmp.path().join("a/postgres"), tmp.path().join("b/postgres"));
        std::fs::create_dir_all(&a).expect("a");
        let root = recorded_root(&a, &base).expect("root");
        std::fs::create_dir_all(&b).expect("b");
        std::fs::copy(a.join(RECORD), b.join(RECORD)).expect("copy record");
        let err = recorded_root(&b, &base).expect_err("shared root refused");
        assert!(err.to_string().contains("belong to"), "{err}");

        // Moved (the old state directory is gone): the root follows.
        std::fs::remove_dir_all(tmp.path().join("a")).expect("remove a");
        assert_eq!(recorded_root(&b, &base).expect("moved"), root);
        let back = std::fs::read_to_string(root.join(BACK_REFERENCE)).expect("back reference");
        assert_eq!(Path::new(back.trim()), b);
    }
}
