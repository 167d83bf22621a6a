//! Moves an accepted connection onto the I/O driver of the thread that serves it.
//!
//! With per-thread runtimes (`server.work_stealing = false`, the default) pingora accepts every
//! connection on one runtime — so the socket is registered with that runtime's I/O driver — and
//! then hands the connection to a random runtime. Every readiness event of such a connection
//! then crosses threads: the accepting thread's driver wakes, and wakes the serving thread
//! through an eventfd (strace: one extra `write` per request). Registering the socket again
//! with the serving thread's own driver keeps every event on one thread, as in an NGINX worker.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use pingora::protocols::{l4::stream::Stream as L4Stream, GetSocketDigest, SocketDigest};

/// Re-registers `stream` with the current runtime's I/O driver (call it from the task that
/// will serve the connection). On failure before anything changed, the original comes back.
pub fn onto_current_runtime(stream: L4Stream) -> Result<L4Stream, Rehome> {
    // A second descriptor for the same socket: the original can then be dropped, which
    // deregisters it from the accepting runtime's driver, while the socket stays open.
    let fd = stream.as_raw_fd();
    // SAFETY: `fd` belongs to `stream`, which is alive (and keeps it open) until after the
    // duplicate has been made; the borrow does not outlive this statement.
    #[allow(unsafe_code)]
    let duplicate = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
    let duplicate = match duplicate {
        Ok(fd) => fd,
        Err(error) => {
            return Err(Rehome::Kept {
                stream: Box::new(stream),
                error,
            })
        }
    };
    drop(stream);
    let socket = std::net::TcpStream::from(duplicate);
    // The duplicate shares the original's file status flags, non-blocking included.
    let socket = tokio::net::TcpStream::from_std(socket).map_err(Rehome::Lost)?;
    let mut stream = L4Stream::from(socket);
    stream.set_socket_digest(SocketDigest::from_raw_fd(stream.as_raw_fd()));
    Ok(stream)
}

/// Why a connection could not be moved.
#[derive(Debug)]
pub enum Rehome {
    /// Nothing changed: serve the connection where it is.
    Kept {
        /// The connection, as it was.
        stream: Box<L4Stream>,
        /// Why it was not moved.
        error: io::Error,
    },
    /// The original was already released: the connection is lost.
    Lost(io::Error),
}
