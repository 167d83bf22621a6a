//! Edge proxy.
