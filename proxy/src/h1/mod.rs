//! kanmon's own HTTP/1.1 path.
//!
//! HTTP/1.1 is what game clients speak for their API calls and WebSocket upgrades, so it is
//! the hot path. pingora's HTTP/1 proxy spends most of a small request on machinery we do not
//! need here (a header map per message, a task per pooled upstream connection, filters), and
//! its upgrade path can drop a WebSocket right after the `101` (pingora #946). After the TLS
//! handshake, connections that chose HTTP/1.1 (or no ALPN) are served by this module; those
//! that chose h2 (gRPC among them) go to pingora.
//!
//! The parsing and framing logic (`head`, `response`, `chunked`, `body`) is sans-io and tested on its
//! own; `lane` is the connection loop, `exchange` one request and its response, `upgrade` a
//! WebSocket handshake before the tunnel; `pool` keeps connections to nodes. What every
//! request passes (routing, forwarding headers, accounting) is `crate::policy`, shared with h2.

pub mod body;
pub mod chunked;
mod exchange;
pub mod head;
#[cfg(test)]
mod head_differential;
#[cfg(test)]
mod head_differential_tests;
pub mod lane;
pub mod pace;
pub mod pool;
pub mod response;
mod upgrade;
pub mod write;

pub use lane::Lane;
