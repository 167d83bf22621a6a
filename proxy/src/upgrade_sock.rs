//! The binary-upgrade socket: where a new `kanmon-proxy --upgrade` waits for the old one's
//! listening sockets. Whoever binds that path receives every listener on `SIGQUIT`, so it
//! must live where only the proxy's user can create files, and the old process checks who
//! owns it before handing anything over.
//!
//! The default is `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`, private to the
//! service) or else a `run/` directory beside the config file, created 0700 — never a
//! shared directory such as `/tmp`, where another user could bind the path first.

use std::{
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// Why the upgrade socket's place cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeSockError {
    /// The path has no directory part.
    #[error("{0}: not a path inside a directory")]
    NoDirectory(PathBuf),
    /// The directory could not be created or inspected.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The directory or socket belongs to another user.
    #[error("{path} is owned by uid {owner}, not by this process's user (uid {me})")]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The proxy's effective uid.
        me: u32,
    },
    /// Other users can create files in the directory.
    #[error("{path} is writable by group or others (mode {mode:o}); make it 0700")]
    Shared {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not a socket (a file, a symlink, a directory).
    #[error("{0} is not a Unix socket")]
    NotASocket(PathBuf),
}

/// The default socket path: in `runtime_dir` (`$RUNTIME_DIRECTORY`) when given, else in
/// `run/` beside the config file at `config`.
pub fn default_path(config: &Path, runtime_dir: Option<&Path>) -> PathBuf {
    match runtime_dir {
        Some(dir) => dir.join("kanmon-proxy-upgrade.sock"),
        None => config
            .parent()
            .unwrap_or(Path::new("."))
            .join("run")
            .join("upgrade.sock"),
    }
}

/// Makes sure the socket's directory exists, belongs to this user and admits nobody else:
/// created 0700 when missing, refused when another user owns it or others may write to it.
pub fn prepare_dir(sock: &Path) -> Result<(), UpgradeSockError> {
    let dir = directory(sock)?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_error(dir, source))?;
    }
    check_dir(dir)
}

/// Checks, just before the hand-over, that the socket at `sock` is one this user bound in a
/// directory only this user can write: otherwise another user's process could be waiting
/// there for the listening sockets.
pub fn check_socket(sock: &Path) -> Result<(), UpgradeSockError> {
    check_dir(directory(sock)?)?;
    // Not followed: a symlink could point anywhere.
    let meta = std::fs::symlink_metadata(sock).map_err(|source| io_error(sock, source))?;
    if !meta.file_type().is_socket() {
        return Err(UpgradeSockError::NotASocket(sock.into()));
    }
    owned_by_us(sock, &meta)
}

fn directory(sock: &Path) -> Result<&Path, UpgradeSockError> {
    match sock.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => Ok(dir),
        _ => Err(UpgradeSockError::NoDirectory(sock.into())),
    }
}

fn check_dir(dir: &Path) -> Result<(), UpgradeSockError> {
    let meta = std::fs::metadata(dir).map_err(|source| io_error(dir, source))?;
    owned_by_us(dir, &meta)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(UpgradeSockError::Shared {
            path: dir.into(),
            mode,
        });
    }
    Ok(())
}

fn owned_by_us(path: &Path, meta: &std::fs::Metadata) -> Result<(), UpgradeSockError> {
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(UpgradeSockError::NotOurs {
            path: path.into(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

fn io_error(path: &Path, source: io::Error) -> UpgradeSockError {
    UpgradeSockError::Io {
        path: path.into(),
        source,
    }
}

/// pingora's signals (SIGQUIT upgrade, SIGTERM graceful, SIGINT fast), except that a SIGQUIT
/// whose socket fails [`check_socket`] is refused (logged, and the proxy keeps serving)
/// instead of sending the listeners to whoever bound it.
pub struct CheckedSignals {
    sock: PathBuf,
}

impl CheckedSignals {
    /// Signals that hand over only to a trusted socket at `sock`.
    pub fn new(sock: PathBuf) -> Self {
        Self { sock }
    }
}

#[async_trait]
impl ShutdownSignalWatch for CheckedSignals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = streams else {
            tracing::error!("cannot listen for signals; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => match check_socket(&self.sock) {
                    Ok(()) => return ShutdownSignal::GracefulUpgrade,
                    Err(error) => tracing::error!(
                        %error,
                        "SIGQUIT: refusing to hand the listening sockets over; still serving"
                    ),
                },
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A uid that is not ours, when this process may give files away (root); else `None`.
    fn other_user(path: &Path) -> Option<u32> {
        let nobody = 65534;
        std::os::unix::fs::chown(path, Some(nobody), None)
            .ok()
            .map(|()| nobody)
    }

    #[test]
    fn the_default_is_the_runtime_directory_or_beside_the_config() {
        assert_eq!(
            default_path(
                Path::new("/etc/kanmon/proxy.toml"),
                Some(Path::new("/run/kanmon"))
            ),
            Path::new("/run/kanmon/kanmon-proxy-upgrade.sock")
        );
        assert_eq!(
            default_path(Path::new("/etc/kanmon/proxy.toml"), None),
            Path::new("/etc/kanmon/run/upgrade.sock")
        );
    }

    #[test]
    fn a_missing_directory_is_created_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("a/run/upgrade.sock");
        prepare_dir(&sock).unwrap();
        let mode = std::fs::metadata(tmp.path().join("a/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // Prepared again: still fine.
        prepare_dir(&sock).unwrap();
    }

    #[test]
    fn a_shared_or_foreign_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for mode in [0o777, 0o770, 0o1777, 0o702] {
            let dir = tmp.path().join(format!("d{mode:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = prepare_dir(&dir.join("upgrade.sock")).unwrap_err();
            assert!(
                matches!(err, UpgradeSockError::Shared { .. }),
                "{mode:o}: {err}"
            );
        }
        let theirs = tmp.path().join("theirs");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&theirs)
            .unwrap();
        if other_user(&theirs).is_some() {
            let err = prepare_dir(&theirs.join("upgrade.sock")).unwrap_err();
            assert!(matches!(err, UpgradeSockError::NotOurs { .. }), "{err}");
        }
    }

    #[test]
    fn only_our_own_socket_gets_the_listeners() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("upgrade.sock");
        assert!(check_socket(&sock).is_err(), "nothing bound yet");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        check_socket(&sock).unwrap();
        // A symlink to our socket, and a plain file, are not sockets.
        let link = tmp.path().join("link.sock");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        assert!(matches!(
            check_socket(&link),
            Err(UpgradeSockError::NotASocket(_))
        ));
        let file = tmp.path().join("file.sock");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            check_socket(&file),
            Err(UpgradeSockError::NotASocket(_))
        ));
        // Another user's socket in our directory.
        if other_user(&sock).is_some() {
            let err = check_socket(&sock).unwrap_err();
            assert!(matches!(err, UpgradeSockError::NotOurs { .. }), "{err}");
        }
        drop(listener);
    }
}
