//! The request-smuggling property against a Go-like lenient node (the game nodes are Go
//! programs): whatever request kanmon accepts and forwards, a reader with Go `net/http`'s
//! rules reads kanmon's forwarded bytes as the same method, target, host, fields and body
//! framing, ending where kanmon ended it; where both read the client's own bytes they agree.
//! The reader and the property are `proxy/src/h1/head_differential.rs` (one copy, also run as
//! a proptest in CI).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The names `head_differential` reaches kanmon's parser through.
mod head {
    pub use kanmon_proxy::h1::head::*;
}
mod body {
    pub use kanmon_proxy::h1::body::*;
}

#[allow(dead_code)]
#[path = "../../proxy/src/h1/head_differential.rs"]
mod head_differential;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = head_differential::check(data) {
        panic!("{finding}");
    }
});
