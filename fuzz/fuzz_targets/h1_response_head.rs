//! Response heads come from nodes (which may be broken or hostile): parsing must never panic,
//! and the head rewritten for the client must parse again with the same status and framing.
#![no_main]

use kanmon_proxy::h1::head::{parse_response, write_client_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let is_head = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(Some(head)) = parse_response(data, is_head, 64 * 1024) else { return };
    assert!(head.len <= data.len());
    let mut out = Vec::new();
    write_client_response(data, &head, false, &mut out);
    let again = parse_response(&out, is_head, 1 << 20)
        .expect("the rewritten head parses")
        .expect("the rewritten head is complete");
    assert_eq!(again.status, head.status);
    assert_eq!(again.body, head.body);
});
