//! The trailer section of a chunked body (state `Trailer*` of `h1::chunked`): whatever bytes
//! follow the last chunk, the tracker must never panic, must find the same end however the
//! bytes are split, must accept no bare LF, bare CR or control byte, must cap the section,
//! and wherever it says the body ends a Go-like lenient parser must end it too — else the
//! node would read the rest as a request the client never sent.
#![no_main]

#[path = "lenient_chunked.rs"]
mod lenient_chunked;

use kanmon_proxy::h1::chunked::ChunkedEnd;
use lenient_chunked::{has_stray_bytes, lenient_end};
use libfuzzer_sys::fuzz_target;

/// Small, so the fuzzer reaches the cap.
const LIMIT: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&split, trailers)) = data.split_first() else { return };
    let mut body = b"3;x=1\r\nabc\r\n0\r\n".to_vec();
    let start = body.len();
    body.extend_from_slice(trailers);
    let whole = {
        let mut end = ChunkedEnd::new(LIMIT);
        end.feed(&body).map(|n| (n, end.is_done()))
    };
    let cut = (split as usize).min(body.len());
    let mut end = ChunkedEnd::new(LIMIT);
    let pieces = end.feed(&body[..cut]).and_then(|a| {
        if end.is_done() {
            return Ok((a, true));
        }
        end.feed(&body[cut..]).map(|b| (a + b, end.is_done()))
    });
    match (whole, pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("split at {cut} changed the outcome: {a:?} vs {b:?}"),
    }
    if let Ok((n, true)) = whole {
        assert!(n <= body.len());
        let section = &body[start..n];
        assert!(!has_stray_bytes(section), "accepted {section:?}");
        assert!(section.len() <= LIMIT + 4, "{} bytes of trailers", section.len());
        assert_eq!(lenient_end(&body), Some(n), "a lenient parser ends {body:?} elsewhere");
    }
});
