//! Chunked bodies come from clients and nodes: the tracker must never panic, never claim more
//! bytes than it was given, and find the same end however the bytes are split into reads.
#![no_main]

use kanmon_proxy::h1::chunked::ChunkedEnd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let whole = {
        let mut end = ChunkedEnd::default();
        end.feed(body).map(|n| (n, end.is_done()))
    };
    let cut = (split as usize).min(body.len());
    let mut end = ChunkedEnd::default();
    let pieces = end.feed(&body[..cut]).and_then(|a| {
        if end.is_done() {
            return Ok((a, true));
        }
        end.feed(&body[cut..]).map(|b| (a + b, end.is_done()))
    });
    if let Ok((n, _)) = whole {
        assert!(n <= body.len());
    }
    match (whole, pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("split at {cut} changed the outcome: {a:?} vs {b:?}"),
    }
});
