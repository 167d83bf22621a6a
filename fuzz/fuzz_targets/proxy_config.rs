//! The proxy config is operator input: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = kanmon_proxy::ProxyConfig::parse(text, std::path::Path::new("fuzz.toml"));
});
