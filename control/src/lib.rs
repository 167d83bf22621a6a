//! The kanmon control plane: deployment lifecycle, operations queue, store, drivers, HTTP API
//! and the `kanmon` CLI client.
//!
//! The lifecycle rules live in [`domain`] as sans-io state machines (inputs in, intents out);
//! [`store`] keeps them durable in SQLite, [`driver`] carries intents to nodes and the proxy,
//! [`api`] serves them over HTTP and [`cli`] talks to that API.
#![warn(missing_docs)]

pub mod api;
pub mod billing;
pub mod bootstrap;
pub mod certs;
pub mod cli;
pub mod domain;
pub mod driver;
pub mod k8s;
pub mod metrics;
pub mod notify;
pub mod private;
pub mod runtime;
pub mod store;
pub mod up;
