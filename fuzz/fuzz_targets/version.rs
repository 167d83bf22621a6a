//! Versions come from operators and the API: parse without panicking; what parses prints back
//! to the same version.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(v) = text.parse::<kanmon_router::Version>() {
        assert_eq!(v.to_string().parse::<kanmon_router::Version>(), Ok(v));
    }
});
