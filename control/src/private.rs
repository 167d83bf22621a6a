//! Files and directories that hold secrets or tenant data (the state database, database dumps,
//! node logs and configuration, password files): created readable by their owner only from the
//! first byte, never created with the umask's mode and tightened afterwards, which leaves a
//! window in which another local user can open them.

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Mode of private files.
pub const FILE_MODE: u32 = 0o600;
/// Mode of private directories.
pub const DIR_MODE: u32 = 0o700;

/// Creates `path` and its missing parents with mode 0700. An existing directory is tightened
/// to 0700 too: one left by an older version may be group- or world-readable.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    tighten(path, DIR_MODE)
}

/// Opens `path` for writing, truncated, created with mode 0600 (and an existing file
/// tightened to 0600).
pub fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    tighten(path, FILE_MODE)?;
    Ok(file)
}

/// Opens `path` for appending, created with mode 0600 (an existing file tightened to 0600).
pub fn append_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(path)?;
    tighten(path, FILE_MODE)?;
    Ok(file)
}

/// Writes `bytes` into a new private file `path` (replacing its content) and syncs it.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = create_file(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates `path` empty with mode 0600 if it does not exist (an existing file is kept and
/// tightened): for files another program fills in, such as SQLite's database.
pub fn touch(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    tighten(path, FILE_MODE)
}

/// Removes a file this process created and no longer needs; one already gone is fine.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, file = %path.display(), "removing a file failed"),
    }
}

fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_files_and_dirs_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let f = nested.join("secret");
        write_file(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        let loose = dir.path().join("loose");
        std::fs::write(&loose, "y").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        touch(&loose).unwrap();
        assert_eq!(mode(&loose), 0o600);
        assert_eq!(std::fs::read(&loose).unwrap(), b"y", "touch keeps content");
    }
}
