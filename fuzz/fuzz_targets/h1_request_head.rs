//! Request heads come straight from clients: parsing must never panic, every offset it hands
//! back must lie inside the input, and the head rewritten for the node must stay within the
//! proxy's own line limit and parse again with the same framing (so the node sees the message
//! the proxy checked).
#![no_main]

use kanmon_proxy::h1::head::{parse_request, write_upstream_request, MAX_HEADERS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_request(data, 16 * 1024) else { return };
    assert!(head.len <= data.len());
    if let Some(host) = &head.host {
        assert!(host.start <= host.end && host.end <= data.len());
    }
    let mut out = Vec::new();
    write_upstream_request(data, &head, Some([127, 0, 0, 1].into()), &mut out);
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let complete = httparse::Request::new(&mut lines).parse(&out);
    assert!(
        matches!(complete, Ok(httparse::Status::Complete(n)) if n == out.len()),
        "the rewritten head is one whole head within {MAX_HEADERS} lines: {complete:?}"
    );
    // The proxy itself accepts 3 lines fewer from a client (room for its own).
    if parse_request(&out, 1 << 20) == Err(kanmon_proxy::h1::head::HeadError::TooLarge) {
        return;
    }
    let again = parse_request(&out, 1 << 20)
        .expect("the rewritten head parses")
        .expect("the rewritten head is complete");
    assert_eq!(again.body, head.body);
    assert_eq!(again.websocket, head.websocket);
    assert_eq!(again.is_head, head.is_head);
});
