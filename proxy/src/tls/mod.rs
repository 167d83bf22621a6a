//! TLS: per-hostname certificates chosen by SNI, hot reloaded from a directory.

pub mod acme;
#[cfg(test)]
mod acme_tests;
pub mod callbacks;
pub mod client_hello;
pub mod config;
pub mod http01;
pub mod secrets;
#[cfg(test)]
mod secrets_tests;
pub mod store;
pub mod ticket_keys;
pub mod tickets;

pub use callbacks::{SniCallbacks, SniTarget};
pub use store::{CertStore, LoadReport};
