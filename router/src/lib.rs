//! The sans-io routing core of kanmon.
//!
//! Everything the proxy decides per connection lives here as plain data and functions:
//! hostnames → deployments, the hot-swapped node health table, power-of-two-choices balancing
//! with passive ejection, and version rules shared with the control plane. No sockets, no
//! tasks, no clocks: time comes in as an argument, so every rule is testable by value.
#![warn(missing_docs)]

pub mod balance;
pub mod console;
pub mod names;
pub mod table;
pub mod version;

pub use balance::{pick_console_in, pick_in, ConnectionGuard, ConsolePickError, PickError};
pub use console::{admits, ConsoleNames, ConsoleRefusal, PatternError, Target};
pub use names::{hostname, parse_hostname, split_host, InstanceName, NameError, Zone};
pub use table::{
    Deployment, DeploymentSpec, DeploymentStats, HealthTable, Node, NodeSpec, NodeState, NodeStats,
    Snapshot,
};
pub use version::{Catalog, Change, Support, Version, VersionError};
