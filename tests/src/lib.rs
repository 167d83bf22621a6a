//! End-to-end tests live in `tests/`; this library only exists so the crate has a target.
