//! Session tickets come from clients, key files from operators: any ticket is refused or
//! opened, never a panic, and what the edge seals opens to the same bytes; any key-file text
//! is keys or an error.
#![no_main]

use std::{path::Path, sync::OnceLock};

use kanmon_proxy::tls::ticket_keys::TicketKeys;
use libfuzzer_sys::fuzz_target;
use prometheus::IntCounter;
use rustls::server::ProducesTickets;

fn counter() -> IntCounter {
    IntCounter::new("errors", "errors").unwrap()
}

fn keys() -> &'static TicketKeys {
    static KEYS: OnceLock<TicketKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let text = format!("{}\n{}\n", "a5".repeat(32), "5a".repeat(32));
        TicketKeys::from_text(Path::new("fuzz"), &text, counter()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TicketKeys::from_text(Path::new("fuzz"), text, counter());
    }
    let keys = keys();
    // Forging a ticket means forging a Poly1305 tag: arbitrary bytes never open.
    assert_eq!(keys.decrypt(data), None);
    let sealed = keys.encrypt(data).unwrap();
    assert_eq!(keys.decrypt(&sealed).as_deref(), Some(data));
});
