//! A CA outage that pebble survives: a TCP relay in front of pebble's ACME listener (TLS
//! passes through untouched; pebble builds its URLs from the `Host` the client sent, so they
//! name the relay). Cutting it closes every relayed connection and refuses new ones, as a CA
//! that went away would; pebble keeps its accounts and certificates, so a revocation after
//! the outage is checked against the same pebble that issued the certificate.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{net::TcpListener, task::AbortHandle};

/// The relay; stopped (with every connection) when dropped.
pub(crate) struct Relay {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Relay {
    /// A relay on a free loopback port to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (d, c) = (down.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if d.load(Ordering::SeqCst) {
                    // Refused: closed before a byte of TLS.
                    continue;
                }
                let conn = tokio::spawn(async move {
                    if let Ok(mut ca) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut ca).await;
                    }
                });
                let mut all = c.lock().unwrap();
                all.retain(|h| !h.is_finished());
                all.push(conn.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            down,
            conns,
            accept,
        }
    }

    /// The CA goes away: open connections are closed, new ones refused.
    pub(crate) fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    /// The CA is back.
    pub(crate) fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
