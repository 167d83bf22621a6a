//! Properties of the parser: what the encoder writes parses back to the same header, a
//! header split across any number of reads gives what it gives whole, and no input panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::{
    encode,
    parse::{parse, ParseError, Parsed, V1_MAX_LEN, V2_MAX_PAYLOAD, V2_SIGNATURE},
    Addresses, Header, Version, Versions,
};

fn addresses() -> impl Strategy<Value = Option<Addresses>> {
    let v4 = (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(s, d, sp, dp)| Addresses {
            source: SocketAddr::new(Ipv4Addr::from(s).into(), sp),
            destination: SocketAddr::new(Ipv4Addr::from(d).into(), dp),
        });
    let v6 = (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(s, d, sp, dp)| Addresses {
            source: SocketAddr::new(Ipv6Addr::from(s).into(), sp),
            destination: SocketAddr::new(Ipv6Addr::from(d).into(), dp),
        });
    prop_oneof![Just(None), v4.prop_map(Some), v6.prop_map(Some)]
}

fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    proptest::collection::vec(
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)),
        0..6,
    )
}

/// What a reader sees when the input arrives in pieces cut at `cuts`: it parses what it has
/// after each piece and stops at the first answer that is not "need more".
fn parse_in_pieces(input: &[u8], cuts: &[usize], versions: Versions) -> Result<Parsed, ParseError> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    ends.push(input.len());
    ends.sort_unstable();
    for end in ends {
        match parse(&input[..end], versions)? {
            Parsed::NeedMore => continue,
            done => return Ok(done),
        }
    }
    Ok(Parsed::NeedMore)
}

fn done(version: Version, addresses: Option<Addresses>, consumed: usize) -> Parsed {
    Parsed::Done {
        header: Header { version, addresses },
        consumed,
    }
}

proptest! {
    #[test]
    fn v2_round_trips(addrs in addresses(), tlvs in tlvs(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
        let borrowed: Vec<(u8, &[u8])> = tlvs.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        let header = encode::v2(addrs, &borrowed);
        let mut input = header.clone();
        input.extend_from_slice(&tail);
        for versions in [Versions::V2, Versions::V1AndV2] {
            prop_assert_eq!(parse(&input, versions), Ok(done(Version::V2, addrs, header.len())));
        }
    }

    #[test]
    fn v1_round_trips(addrs in addresses(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
        let header = encode::v1(addrs);
        prop_assert!(header.len() <= V1_MAX_LEN);
        let mut input = header.clone();
        input.extend_from_slice(&tail);
        prop_assert_eq!(parse(&input, Versions::V1AndV2), Ok(done(Version::V1, addrs, header.len())));
        prop_assert_eq!(parse(&input, Versions::V2), Err(ParseError::V1Disabled));
    }

    #[test]
    fn any_split_gives_the_same_result(
        addrs in addresses(),
        v1 in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut input = if v1 { encode::v1(addrs) } else { encode::v2(addrs, &[(0x04, b"noop")]) };
        input.extend_from_slice(&tail);
        let whole = parse(&input, Versions::V1AndV2);
        let complete = matches!(whole, Ok(Parsed::Done { .. }));
        prop_assert!(complete, "{:?}", whole);
        prop_assert_eq!(parse_in_pieces(&input, &cuts, Versions::V1AndV2), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        prefix in prop_oneof![Just(Vec::new()), Just(V2_SIGNATURE.to_vec()), Just(b"PROXY ".to_vec())],
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut input = prefix;
        input.extend_from_slice(&bytes);
        for versions in [Versions::V2, Versions::V1AndV2] {
            let whole = parse(&input, versions);
            if let Ok(Parsed::Done { consumed, .. }) = whole {
                prop_assert!(consumed <= input.len());
            }
            prop_assert_eq!(parse_in_pieces(&input, &cuts, versions), whole);
        }
    }
}

#[test]
fn a_tls_client_hello_is_a_missing_header() {
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    assert_eq!(parse(&hello, Versions::V1AndV2), Err(ParseError::Missing));
    assert!(!super::parse::looks_like_header(&hello));
    assert!(super::parse::looks_like_header(b"\r\n\r"));
    assert!(super::parse::looks_like_header(b"PRO"));
}

#[test]
fn signatures_are_checked_byte_by_byte() {
    assert_eq!(
        parse(b"\r\n\r\n\0\r\nQUIX\n", Versions::V2),
        Err(ParseError::BadSignature)
    );
    assert_eq!(
        parse(b"PROXZ", Versions::V1AndV2),
        Err(ParseError::BadSignature)
    );
    assert_eq!(parse(b"\r\n\r\n", Versions::V2), Ok(Parsed::NeedMore));
    assert_eq!(parse(b"PROX", Versions::V2), Ok(Parsed::NeedMore));
}

fn v2_raw(ver_cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, fam]);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn v2_fields_follow_the_spec() {
    let inet = [1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 1, 187];
    let client = SocketAddr::new(IpAddr::from([1, 2, 3, 4]), 80);
    let ok = parse(&v2_raw(0x21, 0x11, &inet), Versions::V2).unwrap();
    assert!(
        matches!(ok, Parsed::Done { header: Header { addresses: Some(a), .. }, consumed: 28 } if a.source == client)
    );
    // LOCAL ignores whatever follows; UNSPEC and AF_UNIX carry no usable address.
    assert_eq!(
        parse(&v2_raw(0x20, 0x11, &[9; 5]), Versions::V2),
        Ok(done(Version::V2, None, 21))
    );
    assert_eq!(
        parse(&v2_raw(0x21, 0x00, &[]), Versions::V2),
        Ok(done(Version::V2, None, 16))
    );
    assert_eq!(
        parse(&v2_raw(0x21, 0x31, &[0; 216]), Versions::V2),
        Ok(done(Version::V2, None, 232))
    );
    let malformed =
        |input: Vec<u8>| matches!(parse(&input, Versions::V2), Err(ParseError::Malformed(_)));
    assert!(
        malformed(v2_raw(0x11, 0x11, &inet)),
        "version 1 in a v2 header"
    );
    assert!(malformed(v2_raw(0x22, 0x11, &inet)), "command 2");
    assert!(malformed(v2_raw(0x21, 0x41, &inet)), "family 4");
    assert!(malformed(v2_raw(0x21, 0x12, &inet)), "UDP");
    assert!(
        malformed(v2_raw(0x21, 0x11, &inet[..11])),
        "short addresses"
    );
    assert!(malformed(v2_raw(0x21, 0x21, &inet)), "IPv6 needs 36 bytes");
    assert!(
        malformed(v2_raw(0x21, 0x31, &[0; 100])),
        "AF_UNIX needs 216 bytes"
    );
    let mut bad_tlv = inet.to_vec();
    bad_tlv.extend_from_slice(&[0x04, 0x00, 0x09, 1, 2]);
    assert!(malformed(v2_raw(0x21, 0x11, &bad_tlv)), "TLV past the end");
    let mut header = v2_raw(0x21, 0x11, &inet);
    header[14..16].copy_from_slice(&((V2_MAX_PAYLOAD + 1) as u16).to_be_bytes());
    assert_eq!(
        parse(&header[..16], Versions::V2),
        Err(ParseError::Oversized),
        "refused before the payload arrives"
    );
}

#[test]
fn v1_fields_follow_the_spec() {
    let ok = parse(
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nrest",
        Versions::V1AndV2,
    );
    let source = SocketAddr::new(IpAddr::from([192, 0, 2, 1]), 56324);
    assert!(
        matches!(ok, Ok(Parsed::Done { header: Header { addresses: Some(a), .. }, consumed: 45 }) if a.source == source)
    );
    assert_eq!(
        parse(b"PROXY UNKNOWN whatever\r\n", Versions::V1AndV2),
        Ok(done(Version::V1, None, 24))
    );
    for bad in [
        &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
        b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
    ] {
        assert!(
            matches!(parse(bad, Versions::V1AndV2), Err(ParseError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX_LEN, b'x');
    assert_eq!(parse(&long, Versions::V1AndV2), Err(ParseError::Oversized));
    assert_eq!(
        parse(&long[..V1_MAX_LEN - 1], Versions::V1AndV2),
        Ok(Parsed::NeedMore)
    );
}

#[test]
fn only_trusted_peers_are_expected_to_send_a_header() {
    use crate::config::{Listen, ProxyProtocolMode};
    let mut listen = Listen {
        proxy_protocol: ProxyProtocolMode::V2,
        trusted_proxies: vec!["10.1.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
        ..Listen::default()
    };
    let policy = super::Policy::new(&listen);
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(policy.expects_header(ip("10.1.2.3")), Some(Versions::V2));
    assert_eq!(
        policy.expects_header(ip("::ffff:10.1.2.3")),
        Some(Versions::V2),
        "an IPv4 balancer on a dual-stack socket"
    );
    assert_eq!(policy.expects_header(ip("fd00::1")), Some(Versions::V2));
    assert_eq!(policy.expects_header(ip("10.2.0.1")), None);
    assert_eq!(policy.expects_header(None), None);
    listen.proxy_protocol = ProxyProtocolMode::Off;
    let off = super::Policy::new(&listen);
    assert!(!off.enabled());
    assert_eq!(off.expects_header(ip("10.1.2.3")), None);
}

#[test]
fn v1_ports_have_no_leading_zeros() {
    // haproxy's proxy-protocol.txt §2.1: ports are decimal "without leading zeros"; a reader
    // that took `0443` as 443 would disagree with one that refuses it.
    for bad in [
        &b"PROXY TCP4 192.0.2.1 198.51.100.2 0443 443\r\n"[..],
        b"PROXY TCP4 192.0.2.1 198.51.100.2 443 00\r\n",
        b"PROXY TCP6 ::1 ::1 01 2\r\n",
    ] {
        assert_eq!(
            parse(bad, Versions::V1AndV2),
            Err(ParseError::Malformed("v1 port has a leading zero")),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let zero = parse(
        b"PROXY TCP4 192.0.2.1 198.51.100.2 0 443\r\n",
        Versions::V1AndV2,
    );
    assert!(
        matches!(zero, Ok(Parsed::Done { header: Header { addresses: Some(a), .. }, .. }) if a.source.port() == 0),
        "port 0 itself is written without a leading zero: {zero:?}"
    );
}

#[test]
fn v1_unknown_ignores_the_rest_of_its_line_whatever_its_bytes() {
    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN \xff\xfe\x00\x01 not text\r\n",
        b"PROXY UNKNOWN TCP4 \xc3( 1.2.3.4 1 2\r\n",
        b"PROXY UNKNOWN \r\r\n",
    ] {
        assert_eq!(
            parse(line, Versions::V1AndV2),
            Ok(done(Version::V1, None, line.len())),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // Only the word UNKNOWN itself: a protocol merely starting with it is still refused.
    assert!(parse(b"PROXY UNKNOWNX \xff\r\n", Versions::V1AndV2).is_err());
}
