//! How the process ends: a graceful shutdown exits as soon as no client connection is left
//! (pingora itself would sleep the whole grace period), and a fast one is bounded.

use std::time::{Duration, Instant};

use pingora::server::{ExecutionPhase, Server};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};

use crate::inflight::Inflight;

/// How long pingora gets to stop its runtimes after a fast shutdown. It stops them at once
/// (no timeout), so this is only reached when something keeps a runtime thread busy.
const FAST_SHUTDOWN_LIMIT: Duration = Duration::from_secs(2);

/// Watches the server's phase; once shutdown has begun (SIGTERM, or the end of an upgrade's
/// hand-over), exits the process as soon as no client connection is open (pingora itself would
/// sleep the whole grace period).
pub(crate) fn exit_when_idle(
    server: &Server,
    inflight: Inflight,
    going_away: tokio::sync::watch::Sender<bool>,
    grace: Duration,
) {
    // WebSockets still open this close to pingora's deadline are told to go away (a 1001
    // Close frame at the next frame boundary), leaving a second for the close handshake.
    let goodbye_at = grace.saturating_sub(Duration::from_secs(1)).max(grace / 2);
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || {
        let mut graceful = false;
        loop {
            match phases.blocking_recv() {
                Ok(
                    ExecutionPhase::GracefulTerminate
                    | ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulUpgradeCloseTimeout,
                ) => graceful = true,
                // Listeners are closed from here on (after SIGTERM, or after an upgrade handed
                // its sockets over), so the count can only go down. A fast shutdown (SIGINT, or
                // an embedding's signal) is left to pingora, so `run_with` returns normally —
                // within a bound (below).
                Ok(ExecutionPhase::ShutdownStarted) if graceful => {
                    let started = Instant::now();
                    while inflight.get() > 0 {
                        if started.elapsed() >= goodbye_at && !*going_away.borrow() {
                            tracing::info!(
                                open = inflight.get(),
                                "grace period ending: closing WebSockets with 1001"
                            );
                            going_away.send_replace(true);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    tracing::info!("graceful shutdown: no client connection left, exiting");
                    std::process::exit(0);
                }
                Ok(ExecutionPhase::ShutdownStarted) => {
                    bound_fast_shutdown(&mut phases);
                    return;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// A fast shutdown drops pingora's runtimes right away, and `run`/`run_with` return once they
/// are gone. But a listener's accept loop may run on another runtime than the one its socket is
/// registered with; when that one goes first, the loop gets "A Tokio 1.x context was found,
/// but it is being shutdown" on every accept, logs it and tries again without ever yielding,
/// so its thread — and the process — never ends (seen on `kanmon up`'s Ctrl-C, about one in
/// four under load). The runtimes get [`FAST_SHUTDOWN_LIMIT`]; past it the process exits
/// itself, with status 0: the shutdown asked for has happened, only a thread is stuck.
fn bound_fast_shutdown(phases: &mut broadcast::Receiver<ExecutionPhase>) {
    let deadline = Instant::now() + FAST_SHUTDOWN_LIMIT;
    while Instant::now() < deadline {
        match phases.try_recv() {
            Ok(ExecutionPhase::Terminated) | Err(TryRecvError::Closed) => return,
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::warn!(
        limit = ?FAST_SHUTDOWN_LIMIT,
        "runtimes still running after a fast shutdown; exiting"
    );
    std::process::exit(0);
}
