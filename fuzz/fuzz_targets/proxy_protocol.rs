//! PROXY protocol headers come first on every connection from the load balancer: whatever the
//! bytes, the parser must never panic, must give the same answer however the bytes are split
//! across reads, must never claim more bytes than it was given, and whatever header it
//! accepts must be written back by the encoder to bytes that parse to the same header.
#![no_main]

use kanmon_proxy::proxy_protocol::{
    encode,
    parse::{parse, Parsed, V1_MAX_LEN, V2_MAX_PAYLOAD},
    Version, Versions,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    for versions in [Versions::V2, Versions::V1AndV2] {
        let whole = parse(input, versions);
        // The same bytes in two reads: the answer after the first, if final, must agree.
        let cut = usize::from(split).min(input.len());
        let pieces = match parse(&input[..cut], versions) {
            Ok(Parsed::NeedMore) => parse(input, versions),
            first => first,
        };
        assert_eq!(pieces, whole, "split at {cut}");
        let Ok(Parsed::Done { header, consumed }) = whole else { continue };
        assert!(consumed <= input.len());
        match header.version {
            Version::V1 => assert!(consumed <= V1_MAX_LEN),
            Version::V2 => assert!(consumed <= 16 + V2_MAX_PAYLOAD),
        }
        // Every strict prefix of a complete header is "need more", never an error.
        for end in [0, consumed / 2, consumed.saturating_sub(1)] {
            if end < consumed {
                assert_eq!(parse(&input[..end], versions), Ok(Parsed::NeedMore), "prefix {end}");
            }
        }
        let again = match header.version {
            Version::V1 => encode::v1(header.addresses),
            Version::V2 => encode::v2(header.addresses, &[]),
        };
        match parse(&again, versions) {
            Ok(Parsed::Done { header: back, consumed }) => {
                assert_eq!(back, header);
                assert_eq!(consumed, again.len());
            }
            other => panic!("re-encoded header does not parse: {other:?}"),
        }
    }
});
