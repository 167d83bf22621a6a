//! The first bytes of every TLS connection are peeked to tell a resumed handshake from a full
//! one before it is admitted: whatever the bytes, the classifier must never panic, and once it
//! has decided on a prefix, more bytes must never change its answer (it decides only on what
//! it has seen; the peek stops reading there).
#![no_main]

use kanmon_proxy::tls::client_hello::{classify, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let whole = classify(input);
    let cut = usize::from(split).min(input.len());
    if let Parsed::Done(first) = classify(&input[..cut]) {
        assert_eq!(whole, Parsed::Done(first), "decided at {cut}, changed later");
    }
});
