//! kanmon-proxy: the edge proxy of a game-server platform.
//!
//! Game clients reach `{instance}.{zone}.{base_domain}:443` over TLS. The proxy picks the
//! certificate by SNI, routes each new connection or request to a ready node of that
//! deployment through the sans-io router (`kanmon-router`), never to a draining one, proxies
//! HTTP/1.1, HTTP/2, gRPC and WebSockets, and exports Prometheus metrics on an admin listener.
#![warn(missing_docs)]

pub mod accounting;
pub mod admin;
pub mod app;
pub mod bufpool;
pub mod certwatch;
pub mod client_limits;
pub mod clock;
pub mod config;
pub mod devcerts;
pub mod dirwatch;
pub mod discovery;
pub mod edge;
pub mod h1;
pub mod h2ws;
pub mod handshake_gate;
pub mod handshake_queue;
pub mod inflight;
pub mod logging;
pub mod metrics;
pub mod node_series;
pub mod nodes_file;
pub mod policy;
pub mod proxy_protocol;
pub mod rehome;
pub mod responses;
pub mod routing;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod tls;
pub mod tunnel;
pub mod upgrade_sock;
pub mod wsframe;

pub use config::ProxyConfig;
pub use server::{Proxy, RunOptions};
