use super::*;
use proptest::prelude::*;

/// Encodes chunks (with an optional extension and trailers) the way a sender would.
fn encode(chunks: &[Vec<u8>], ext: bool, trailers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks.iter().filter(|c| !c.is_empty()) {
        out.extend_from_slice(format!("{:X}", c.len()).as_bytes());
        if ext {
            out.extend_from_slice(b";name=value");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (k, v) in trailers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn a_simple_body_ends_exactly_where_it_should() {
    let body = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    let mut end = ChunkedEnd::default();
    assert_eq!(end.feed(body), Ok(15));
    assert!(end.is_done());
}

#[test]
fn malformed_bodies_are_errors() {
    for bad in [
        &b"x\r\n"[..],
        b"5\r\nhello!\r\n",
        b"5\nhello",
        b"\r\n",
        b"fffffffffffffffff\r\n",
        b"5;x\n",
    ] {
        assert!(ChunkedEnd::default().feed(bad).is_err(), "{bad:?}");
    }
}

/// Each byte string is a whole body except for one defect that a lenient parser (Go's
/// `net/http`) would read differently or that hides bytes from the next hop.
#[test]
fn every_smuggling_shape_is_refused() {
    for bad in [
        // Bare LF / bare CR in each position.
        &b"0\r\nX: y\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
        b"0\r\nX: y\r\n\n",
        b"0\r\n\n",
        b"0\nX: y\r\n\r\n",
        b"0\r\nX: y\rZ\r\n\r\n",
        b"0\r\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\r0\r\n\r\n",
        b"5;a=b\nhello\r\n0\r\n\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"5 \nhello\r\n0\r\n\r\n",
        // Control bytes in extensions and trailers.
        b"5;a=\0\r\nhello\r\n0\r\n\r\n",
        b"5;\x1b\r\nhello\r\n0\r\n\r\n",
        b"0\r\nX: a\0b\r\n\r\n",
        b"0\r\nX: \x7f\r\n\r\n",
        // obs-fold, malformed trailer lines.
        b"0\r\nX: a\r\n b\r\n\r\n",
        b"0\r\n\tX: a\r\n\r\n",
        b"0\r\nX : a\r\n\r\n",
        b"0\r\n: a\r\n\r\n",
        b"0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        // Garbage after a size, overflowing sizes.
        b"5 x\r\nhello\r\n0\r\n\r\n",
        b"5\x00\r\nhello\r\n0\r\n\r\n",
        b"10000000000000000\r\n",
        b"0000000000000000005\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
    ] {
        assert!(
            ChunkedEnd::default().feed(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // What is allowed stays allowed: whitespace before extensions, quoted values,
    // obs-text, several trailers.
    for good in [
        &b"5 ;a=\"b c\"\r\nhello\r\n0\r\n\r\n"[..],
        b"5\t\r\nhello\r\n0;last\r\nX-A: 1\r\nx-b:\t\xe9t\xe9\r\n\r\n",
    ] {
        let mut end = ChunkedEnd::default();
        assert_eq!(
            end.feed(good),
            Ok(good.len()),
            "{}",
            String::from_utf8_lossy(good)
        );
        assert!(end.is_done());
    }
}

#[test]
fn extensions_and_trailers_are_capped() {
    let ext = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(99));
    assert!(ChunkedEnd::new(100).feed(ext.as_bytes()).is_ok());
    let ext = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(100));
    assert!(ChunkedEnd::new(100).feed(ext.as_bytes()).is_err());
    // The cap is per size line for extensions, but for the whole trailer section.
    let many = "1;xxxxxxxxxx\r\na\r\n".repeat(50) + "0\r\n\r\n";
    assert!(ChunkedEnd::new(100).feed(many.as_bytes()).is_ok());
    let trailers = "0\r\n".to_string() + &"x: 12345678\r\n".repeat(10) + "\r\n";
    assert!(ChunkedEnd::new(200).feed(trailers.as_bytes()).is_ok());
    assert!(ChunkedEnd::new(100).feed(trailers.as_bytes()).is_err());
    // Found by fuzzing: whitespace after a size counts towards the cap (it was unbounded),
    // and the trailer cap counts every byte of the section, CRs included.
    let spaces = format!("1{}\r\na\r\n0\r\n\r\n", " ".repeat(101));
    assert!(ChunkedEnd::new(100).feed(spaces.as_bytes()).is_err());
    let spaces = format!("1{};x\r\na\r\n0\r\n\r\n", " ".repeat(98));
    assert!(ChunkedEnd::new(100).feed(spaces.as_bytes()).is_ok());
    let section = "x: 1234567\r\n".repeat(10);
    let trailers = format!("0\r\n{section}\r\n");
    assert!(ChunkedEnd::new(section.len())
        .feed(trailers.as_bytes())
        .is_ok());
    assert!(ChunkedEnd::new(section.len() - 1)
        .feed(trailers.as_bytes())
        .is_err());
}

/// The Go-like reference parser, shared with the differential fuzz targets (one copy).
#[allow(dead_code, unreachable_pub)]
#[path = "../../../fuzz/fuzz_targets/lenient_chunked.rs"]
mod lenient_chunked;
use lenient_chunked::lenient_end;

/// Pieces that build chunked bodies and their near misses.
fn piece() -> impl Strategy<Value = &'static [u8]> {
    prop::sample::select(vec![
        &b"0"[..],
        b"5",
        b"a",
        b"\r\n",
        b"\n",
        b"\r",
        b";",
        b"=",
        b" ",
        b"\t",
        b"\0",
        b"\x1b",
        b"hello",
        b"X: y",
        b":",
        b"GET /smuggled HTTP/1.1",
        b"\"",
        b"\xff",
    ])
}

proptest! {
    /// Whenever the tracker accepts a body, a Go-like lenient parser ends it at the same
    /// byte: the node can never see a request the proxy took for body bytes.
    #[test]
    fn an_accepted_body_ends_where_a_lenient_parser_ends_it(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..4),
        ext in any::<bool>(),
        trailers in proptest::collection::vec(("[a-z]{1,4}", "[a-z ]{0,6}"), 0..3),
        inserts in proptest::collection::vec((any::<prop::sample::Index>(), piece()), 0..4),
        free in proptest::collection::vec(piece(), 0..12),
    ) {
        // A well-formed body with a few pieces put in anywhere, or pieces alone.
        let mut bytes = encode(&chunks, ext, &trailers);
        for (at, p) in &inserts {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, p.iter().copied());
        }
        if !free.is_empty() {
            bytes = free.concat();
        }
        let mut end = ChunkedEnd::default();
        if let Ok(n) = end.feed(&bytes) {
            if end.is_done() {
                prop_assert_eq!(lenient_end(&bytes), Some(n), "{}", String::from_utf8_lossy(&bytes));
            }
        }
    }
}

proptest! {
    /// For any body, any extension/trailer choice, any way of splitting it into reads and
    /// whatever follows it, the end is found exactly at the body's last byte.
    #[test]
    fn the_end_is_found_for_any_chunking(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
        ext in any::<bool>(),
        trailers in proptest::collection::vec(("[a-z]{1,8}", "[a-z0-9 ]{0,12}"), 0..3),
        after in proptest::collection::vec(any::<u8>(), 0..40),
        cuts in proptest::collection::vec(1usize..64, 1..40),
    ) {
        let body = encode(&chunks, ext, &trailers);
        let mut stream = body.clone();
        stream.extend_from_slice(&after);
        let mut end = ChunkedEnd::default();
        let mut consumed = 0;
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < stream.len() && !end.is_done() {
            let n = (*cut.next().unwrap()).min(stream.len() - pos);
            let used = end.feed(&stream[pos..pos + n]).unwrap();
            prop_assert!(used <= n);
            consumed += used;
            pos += n;
        }
        prop_assert!(end.is_done());
        prop_assert_eq!(consumed, body.len());
    }

    /// Arbitrary bytes never panic the tracker.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut end = ChunkedEnd::default();
        if let Ok(n) = end.feed(&bytes) {
            prop_assert!(n <= bytes.len());
        }
    }
}
