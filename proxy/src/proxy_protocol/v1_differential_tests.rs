//! The version 1 (text) parser against a reading of the spec's words (haproxy's
//! proxy-protocol.txt §2.1), written apart from it: `PROXY`, one space, `TCP4`, `TCP6` or
//! `UNKNOWN`; for `UNKNOWN` anything up to the CRLF is ignored; else exactly four more fields
//! each after one space: addresses "in their canonical format" (IPv4: four decimal numbers
//! 0–255 without leading zeros; IPv6: colon-separated hex groups, one `::` at most) and ports
//! 0–65535 in decimal without leading zeros; the line ends at the first CRLF, 107 bytes at
//! most with it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::{
    parse::{parse, Parsed, V1_MAX_LEN, V1_SIGNATURE},
    Addresses, Versions,
};

/// What the spec says a receiver makes of the bytes.
#[derive(Debug, PartialEq, Eq)]
enum Reading {
    NeedMore,
    Header(Option<Addresses>, usize),
    Refused,
}

fn spec_reading(bytes: &[u8]) -> Reading {
    if !bytes.starts_with(V1_SIGNATURE) {
        return Reading::Refused;
    }
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX_LEN {
            Reading::Refused
        } else {
            Reading::NeedMore
        };
    };
    let line = &bytes[V1_SIGNATURE.len()..end];
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields[0] == b"UNKNOWN" {
        return Reading::Header(None, end + 2);
    }
    let [proto, src, dst, sport, dport] = fields[..] else {
        return Reading::Refused;
    };
    let ip = |text: &[u8]| -> Option<IpAddr> {
        match proto {
            b"TCP4" => spec_v4(text).map(IpAddr::V4),
            b"TCP6" => spec_v6(text).map(IpAddr::V6),
            _ => None,
        }
    };
    match (ip(src), ip(dst), spec_port(sport), spec_port(dport)) {
        (Some(s), Some(d), Some(sp), Some(dp)) => Reading::Header(
            Some(Addresses {
                source: SocketAddr::new(s, sp),
                destination: SocketAddr::new(d, dp),
            }),
            end + 2,
        ),
        _ => Reading::Refused,
    }
}

/// A decimal number without leading zeros, at most `max`.
fn spec_decimal(text: &[u8], max: u32) -> Option<u32> {
    if text.is_empty() || text.len() > 5 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if text.len() > 1 && text[0] == b'0' {
        return None;
    }
    let n = text.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    (n <= max).then_some(n)
}

fn spec_port(text: &[u8]) -> Option<u16> {
    spec_decimal(text, 65535).and_then(|n| u16::try_from(n).ok())
}

fn spec_v4(text: &[u8]) -> Option<Ipv4Addr> {
    let parts: Vec<&[u8]> = text.split(|&b| b == b'.').collect();
    let [a, b, c, d] = parts[..] else { return None };
    let octet = |p: &[u8]| spec_decimal(p, 255).and_then(|n| u8::try_from(n).ok());
    Some(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?))
}

/// Hex groups of 1–4 digits separated by colons, at most one `::`, 128 bits in all; the last
/// 32 bits may be written as an IPv4 address (`::ffff:192.0.2.1`), which is how haproxy's
/// own sender (`inet_ntop`) writes a mapped address.
fn spec_v6(text: &[u8]) -> Option<Ipv6Addr> {
    let text = std::str::from_utf8(text).ok()?;
    if let Some((head, last)) = text.rsplit_once(':').filter(|(_, l)| l.contains('.')) {
        let [a, b, c, d] = spec_v4(last.as_bytes())?.octets();
        let hex = format!(
            "{head}:{:x}:{:x}",
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d])
        );
        return spec_v6(hex.as_bytes());
    }
    let group = |g: &str| -> Option<u16> {
        if g.is_empty() || g.len() > 4 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(g, 16).ok()
    };
    let groups = |s: &str| -> Option<Vec<u16>> {
        if s.is_empty() {
            return Some(Vec::new());
        }
        s.split(':').map(group).collect()
    };
    let mut all = [0u16; 8];
    match text.split_once("::") {
        None => {
            let g = groups(text)?;
            if g.len() != 8 {
                return None;
            }
            all.copy_from_slice(&g);
        }
        Some((head, tail)) => {
            let (h, t) = (groups(head)?, groups(tail)?);
            if tail.contains("::") || h.len() + t.len() > 7 {
                return None;
            }
            all[..h.len()].copy_from_slice(&h);
            all[8 - t.len()..].copy_from_slice(&t);
        }
    }
    Some(Ipv6Addr::from(all))
}

fn kanmon_reading(bytes: &[u8]) -> Reading {
    match parse(bytes, Versions::V1AndV2) {
        Ok(Parsed::NeedMore) => Reading::NeedMore,
        Ok(Parsed::Done { header, consumed }) => Reading::Header(header.addresses, consumed),
        Err(_) => Reading::Refused,
    }
}

fn v4() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "192.0.2.1",
        "0.0.0.0",
        "255.255.255.255",
        "10.0.0.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3.00",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "1..3.4",
        "+1.2.3.4",
        "::1",
    ])
}

fn v6() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "::1",
        "::",
        "2001:db8::1",
        "2001:DB8:0:0:0:0:0:1",
        "fe80::1:2",
        "::ffff:1.2.3.4",
        "2001:db8::1%eth0",
        "1::2::3",
        "12345::1",
        "1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::",
        ":1::",
        "192.0.2.1",
    ])
}

fn port() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "0", "1", "443", "56324", "65535", "0443", "00", "65536", "99999", "+1", "-1", "1a", "",
        "123456",
    ])
}

/// A v1 line from the grammar, with spacing, ends and tails varied.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let proto = prop::sample::select(vec!["TCP4", "TCP6", "TCP4", "TCP6", "tcp4", "UDP4", ""]);
    let gap = prop_oneof![10 => Just(" "), 1 => Just("  "), 1 => Just("\t"), 1 => Just("")];
    let end = prop_oneof![8 => Just("\r\n"), 1 => Just("\n"), 1 => Just(" \r\n"), 1 => Just("\r")];
    let addresses = (
        prop_oneof![v4(), v6()],
        prop_oneof![v4(), v6()],
        port(),
        port(),
    );
    let unknown = proptest::collection::vec(any::<u8>(), 0..40);
    (
        proto,
        addresses,
        proptest::collection::vec(gap, 5),
        end,
        proptest::collection::vec(any::<u8>(), 0..8),
        prop::option::weighted(0.2, unknown),
    )
        .prop_map(|(proto, (src, dst, sp, dp), gaps, end, tail, unknown)| {
            let mut out = b"PROXY".to_vec();
            if let Some(garbage) = unknown {
                out.extend_from_slice(b" UNKNOWN");
                out.extend_from_slice(&garbage);
            } else {
                for (gap, field) in gaps.iter().zip([proto, src, dst, sp, dp]) {
                    out.extend_from_slice(gap.as_bytes());
                    out.extend_from_slice(field.as_bytes());
                }
            }
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(&tail);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// The parser accepts exactly the lines the spec allows, with the same addresses and
    /// length, and needs more exactly where the spec's line is not over yet.
    #[test]
    fn v1_reads_as_the_spec_says(bytes in line()) {
        prop_assert_eq!(
            kanmon_reading(&bytes),
            spec_reading(&bytes),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn the_spec_reading_follows_the_spec() {
    let header = |line: &[u8]| matches!(spec_reading(line), Reading::Header(..));
    assert!(header(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"));
    assert!(header(b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n"));
    assert!(header(b"PROXY UNKNOWN \xff\r\n"));
    assert!(header(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"));
    for bad in [
        &b"PROXY TCP4 192.0.2.1 198.51.100.2 0443 443\r\n"[..],
        b"PROXY TCP4 192.0.2.01 198.51.100.2 1 443\r\n",
        b"PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1  198.51.100.2 1 443\r\n",
    ] {
        assert_eq!(
            spec_reading(bad),
            Reading::Refused,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(spec_reading(b"PROXY TCP4 1.2.3.4"), Reading::NeedMore);
}
