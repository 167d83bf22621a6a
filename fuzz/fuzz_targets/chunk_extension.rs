//! Chunk extensions (state `Extension` of `h1::chunked`): whatever bytes follow a chunk
//! size, the tracker must never panic, must find the same end however the bytes are split,
//! must accept no bare LF, bare CR or control byte on the size line, must cap it, and
//! wherever it says the body ends a Go-like lenient parser must end it too.
#![no_main]

#[path = "lenient_chunked.rs"]
mod lenient_chunked;

use kanmon_proxy::h1::chunked::ChunkedEnd;
use lenient_chunked::{has_stray_bytes, lenient_end};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&split, ext)) = data.split_first() else { return };
    // The extension bytes after a size, then a body that would hide a request if the size
    // line were read differently.
    let mut body = b"5".to_vec();
    body.extend_from_slice(ext);
    body.extend_from_slice(b"\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
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
        let size_line_end = body.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
        let line = &body[..size_line_end];
        assert!(!has_stray_bytes(line), "accepted the size line {line:?}");
        assert!(line.len() <= LIMIT + 20, "{} bytes of size line", line.len());
        assert_eq!(lenient_end(&body), Some(n), "a lenient parser ends {body:?} elsewhere");
    }
});
