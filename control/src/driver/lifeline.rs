//! Child processes (nodes, database servers) that never outlive the process that started
//! them, however it ends: a clean stop, a panic, or `kill -9`.
//!
//! Each child is started with `PR_SET_PDEATHSIG`: the kernel signals it when its parent goes.
//! The "parent" is the *thread* that forked, not the process, so every child is forked by
//! the one [`Launcher`] thread of its owner, which lives exactly as long as the owner (a tokio
//! worker or blocking thread may end long before the process does — `block_in_place` hands
//! workers over, idle blocking threads exit after 10 s — and would take its children with it).

use std::{
    os::unix::process::CommandExt,
    sync::{mpsc, Mutex},
};

use nix::sys::signal::Signal;

type Request<C, R> = (C, mpsc::Sender<std::io::Result<R>>);

/// One thread that forks every child of its owner (see the module docs); it ends when the
/// launcher is dropped, and the children still running get their signal then.
pub(crate) struct Launcher<C: Send + 'static, R: Send + 'static> {
    requests: Mutex<mpsc::Sender<Request<C, R>>>,
}

impl<C: Send + 'static, R: Send + 'static> std::fmt::Debug for Launcher<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher").finish_non_exhaustive()
    }
}

impl<C: Send + 'static, R: Send + 'static> Launcher<C, R> {
    /// A thread named `name` that turns each command into a child with `spawn`.
    pub(crate) fn new(
        name: &str,
        mut spawn: impl FnMut(C) -> std::io::Result<R> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request<C, R>>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for (cmd, reply) in rx {
                    if reply.send(spawn(cmd)).is_err() {
                        // The caller is gone; the child is dropped (and, if it is set to,
                        // killed) here rather than left unowned.
                        tracing::warn!("a started child had nobody to take it");
                    }
                }
            })?;
        Ok(Self {
            requests: Mutex::new(tx),
        })
    }

    /// Starts `cmd` on the launcher thread. Blocks for the fork and exec only.
    pub(crate) fn spawn(&self, cmd: C) -> std::io::Result<R> {
        let gone = || std::io::Error::other("the launcher thread is gone");
        let (tx, rx) = mpsc::channel();
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((cmd, tx))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

/// Makes the child get `signal` when the forking thread ends, and refuse to start if that
/// already happened. Set after std has switched the child's uid/gid (which would clear it); it
/// survives the exec of a program that is not set-user-ID.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(cmd: &mut std::process::Command, signal: Signal) {
    let parent = nix::unistd::getpid();
    // SAFETY: the hook runs in the forked child before exec and only makes two system calls
    // (prctl, getppid) and builds an error from an errno: it allocates nothing and takes no
    // lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)?;
            if nix::unistd::getppid() != parent {
                // The parent died between fork and prctl: nobody would stop this child.
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}
