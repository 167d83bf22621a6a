//! Writing PROXY protocol headers: for sending one to a node, and for tests and the fuzz
//! target to produce what a load balancer would send.

use std::net::{IpAddr, SocketAddr};

use super::{
    parse::{V1_SIGNATURE, V2_SIGNATURE},
    Addresses,
};

/// A version 2 header: PROXY over TCP for `addresses`, LOCAL for `None`, followed by `tlvs`
/// (type, value). Endpoints of different families are both written as IPv6 (IPv4-mapped).
pub fn v2(addresses: Option<Addresses>, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&V2_SIGNATURE);
    let mut payload = Vec::with_capacity(48);
    match addresses {
        None => {
            out.push(0x20);
            out.push(0x00);
        }
        Some(a) => {
            out.push(0x21);
            match (a.source.ip(), a.destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    payload.extend_from_slice(&s.octets());
                    payload.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21);
                    payload.extend_from_slice(&v6(s).octets());
                    payload.extend_from_slice(&v6(d).octets());
                }
            }
            payload.extend_from_slice(&a.source.port().to_be_bytes());
            payload.extend_from_slice(&a.destination.port().to_be_bytes());
        }
    }
    for (kind, value) in tlvs {
        payload.push(*kind);
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(&value[..usize::from(len)]);
    }
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload[..usize::from(len)]);
    out
}

/// A version 1 line: `TCP4`/`TCP6` for `addresses` (mixed families as IPv6), `UNKNOWN` for
/// `None`.
pub fn v1(addresses: Option<Addresses>) -> Vec<u8> {
    let mut line = String::from_utf8_lossy(V1_SIGNATURE).into_owned();
    match addresses {
        None => line.push_str("UNKNOWN"),
        Some(Addresses {
            source: SocketAddr::V4(s),
            destination: SocketAddr::V4(d),
        }) => line.push_str(&format!(
            "TCP4 {} {} {} {}",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        )),
        Some(a) => line.push_str(&format!(
            "TCP6 {} {} {} {}",
            v6(a.source.ip()),
            v6(a.destination.ip()),
            a.source.port(),
            a.destination.port()
        )),
    }
    line.push_str("\r\n");
    line.into_bytes()
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
