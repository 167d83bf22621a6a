//! Where a chunked body (RFC 9112 §7.1) ends, followed byte by byte without decoding it:
//! the proxy forwards chunked bodies verbatim and only needs to know when the message is
//! over, so the connection can carry the next one. Sans-io: bytes in, an end offset out.

/// Why a chunked body cannot be followed (the exchange is cut: 400 or 502 by side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkError(&'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size (`digits` seen so far).
    Size { size: u64, digits: u8 },
    /// Whitespace after the size, before `;` or the line end.
    SizeSpace { size: u64 },
    /// Inside the extensions of a size line, up to CR LF.
    Extension { size: u64 },
    /// After the CR of a size line.
    SizeLf { size: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value.
    TrailerValue,
    /// After the CR of a trailer field line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    /// The body is over.
    Done,
}

/// Follows one chunked body.
///
/// Strict where a lenient peer could read the same bytes differently (the request-smuggling
/// families): every line ends in CR LF (a bare LF or a bare CR is an error, since parsers such
/// as Go's `net/http` end a line at a bare LF), chunk extensions and trailer fields hold no
/// control bytes, trailer lines are `name: value` (no obs-fold, no space before the colon),
/// and a size line's extensions and the whole trailer section are capped like a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedEnd {
    state: State,
    /// Bytes of the current size line's extensions, or of the trailer section so far.
    meta: usize,
    /// Most bytes `meta` may reach.
    limit: usize,
}

/// The cap on extensions and trailers when none is given (the default `max_header_bytes`).
pub const DEFAULT_META_LIMIT: usize = 16 * 1024;

impl Default for ChunkedEnd {
    fn default() -> Self {
        Self::new(DEFAULT_META_LIMIT)
    }
}

/// Hex digits accepted in a chunk size (16 fill a u64).
const MAX_SIZE_DIGITS: u8 = 15;

impl ChunkedEnd {
    /// A tracker whose size-line extensions and trailer section may each hold up to `limit`
    /// bytes (like a head's `max_header_bytes`: trailers are headers that arrive late).
    pub fn new(limit: usize) -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            meta: 0,
            limit,
        }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds the next bytes of the body. Returns how many of them belong to it: all of them
    /// while it goes on, fewer once it ended inside `bytes` (the rest is the next message).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if let State::Data { remaining } = self.state {
                let take = remaining.min((bytes.len() - i) as u64);
                i += take as usize;
                let remaining = remaining - take;
                self.state = if remaining == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining }
                };
                continue;
            }
            if self.state == State::Done {
                return Ok(i);
            }
            self.state = self.step(b)?;
            i += 1;
        }
        Ok(bytes.len())
    }

    /// The state after byte `b` (outside chunk data).
    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        let line_end = |b: u8| match b {
            b'\n' => Err(ChunkError("bare LF")),
            _ => Err(ChunkError("control byte")),
        };
        Ok(match self.state {
            State::Size { size, digits } => match hex(b) {
                Some(d) if digits < MAX_SIZE_DIGITS => State::Size {
                    size: size << 4 | u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return Err(ChunkError("chunk size too large")),
                None if digits == 0 => return Err(ChunkError("chunk size expected")),
                None => self.after_size(size, b)?,
            },
            State::SizeSpace { size } => self.after_size(size, b)?,
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                _ if is_field_byte(b) => {
                    self.count()?;
                    State::Extension { size }
                }
                _ => return line_end(b),
            },
            State::SizeLf { size } => match (b, size) {
                (b'\n', 0) => {
                    self.meta = 0;
                    State::TrailerStart
                }
                (b'\n', remaining) => State::Data { remaining },
                _ => return Err(ChunkError("CR without LF")),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError("chunk data longer than its size")),
            },
            State::DataLf => match b {
                b'\n' => {
                    self.meta = 0;
                    State::Size { size: 0, digits: 0 }
                }
                _ => return Err(ChunkError("CR without LF")),
            },
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b' ' | b'\t' => return Err(ChunkError("obs-fold or space in a trailer")),
                _ if is_token(b) => {
                    self.count()?;
                    State::TrailerName
                }
                _ => return Err(ChunkError("bad trailer field name")),
            },
            State::TrailerName => match b {
                b':' => {
                    self.count()?;
                    State::TrailerValue
                }
                _ if is_token(b) => {
                    self.count()?;
                    State::TrailerName
                }
                _ => return Err(ChunkError("bad trailer field name")),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                _ if is_field_byte(b) => {
                    self.count()?;
                    State::TrailerValue
                }
                _ => return line_end(b),
            },
            State::TrailerLf => match b {
                b'\n' => {
                    self.count()?;
                    State::TrailerStart
                }
                _ => return Err(ChunkError("CR without LF")),
            },
            State::EndLf => match b {
                b'\n' => State::Done,
                _ => return Err(ChunkError("CR without LF")),
            },
            State::Data { .. } | State::Done => self.state,
        })
    }

    /// What may follow a chunk size: whitespace, extensions, the line end.
    fn after_size(&mut self, size: u64, b: u8) -> Result<State, ChunkError> {
        Ok(match b {
            b'\r' => State::SizeLf { size },
            b' ' | b'\t' => State::SizeSpace { size },
            b';' => {
                self.count()?;
                State::Extension { size }
            }
            b'\n' => return Err(ChunkError("bare LF")),
            _ => return Err(ChunkError("bad chunk size")),
        })
    }

    /// One more byte of extensions or trailers.
    fn count(&mut self) -> Result<(), ChunkError> {
        self.meta += 1;
        if self.meta > self.limit {
            return Err(ChunkError("chunk extensions or trailers too large"));
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A byte of a field value or chunk extension (RFC 9110 §5.5: visible ASCII, space, tab,
/// obs-text): never a control byte, never CR or LF.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// A `tchar` of a field name (RFC 9110 §5.6.2).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
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
    }

    /// How Go's `net/http` (the game nodes) reads a chunked body: lines end at a bare LF and
    /// lose trailing whitespace and CRs, extensions are cut at `;`, data is followed by CR LF,
    /// trailers end at the first empty line. Returns where the body ends.
    fn lenient_end(bytes: &[u8]) -> Option<usize> {
        let line = |pos: usize| -> Option<(&[u8], usize)> {
            let n = bytes[pos..].iter().position(|&b| b == b'\n')?;
            let mut l = &bytes[pos..pos + n];
            while let [rest @ .., b' ' | b'\t' | b'\r'] = l {
                l = rest;
            }
            Some((l, pos + n + 1))
        };
        let mut pos = 0;
        loop {
            let (l, next) = line(pos)?;
            let l = l.split(|&b| b == b';').next()?.trim_ascii();
            if l.is_empty() || l.len() > 16 || !l.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let size = u64::from_str_radix(std::str::from_utf8(l).ok()?, 16).ok()?;
            pos = next;
            if size == 0 {
                break;
            }
            let end = pos.checked_add(usize::try_from(size).ok()?)?;
            if bytes.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            pos = end + 2;
        }
        loop {
            let (l, next) = line(pos)?;
            pos = next;
            if l.is_empty() {
                return Some(pos);
            }
        }
    }

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
}
