//! kanmon-bench: the demo game node, test certificates and the load harness.
//!
//! Other crates' tests start demo nodes in-process with [`node::spawn_node`] and make test
//! certificates with [`certs`], so the proxy can be exercised over real loopback sockets without
//! any external program. The `kanmon-bench` binary wraps the same code for scripts
//! (`benches/compare.sh`).
#![warn(missing_docs)]

pub mod certs;
pub mod compare;
pub mod h2ws;
pub mod loads;
pub mod node;
pub mod ports;
pub mod report;
pub mod spread;
pub mod target;
pub mod tls;
