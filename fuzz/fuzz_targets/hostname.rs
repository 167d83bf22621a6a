//! Hostnames come from clients (SNI, Host): parsing must never panic, and whatever parses must
//! round-trip through the canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (host, base) = text.split_once('\n').unwrap_or((text, "kanmon.test"));
    let _ = kanmon_router::split_host(host, base);
    if let Ok((instance, zone)) = kanmon_router::parse_hostname(host, base) {
        let canonical = kanmon_router::hostname(&instance, &zone, base);
        assert_eq!(kanmon_router::parse_hostname(&canonical, base), Ok((instance, zone)));
    }
});
