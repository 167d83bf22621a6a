//! The nodes file is re-read on every change: any bytes must give specs or an error, never a
//! panic, and accepted specs render back to an equivalent file.
#![no_main]

use kanmon_proxy::nodes_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(specs) = nodes_file::parse(text, None) {
        let rendered = nodes_file::render(&specs).expect("valid specs render");
        assert_eq!(nodes_file::parse(&rendered, None).expect("rendered file parses"), specs);
    }
});
