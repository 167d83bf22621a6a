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
    /// After the size: an extension or whitespace up to CR LF.
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
    /// Inside a trailer field line.
    Trailer,
    /// After the CR of a trailer line; `empty` if the line was empty (the end).
    TrailerLf { empty: bool },
    /// The body is over.
    Done,
}

/// Follows one chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedEnd {
    state: State,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

/// Hex digits accepted in a chunk size (16 fill a u64).
const MAX_SIZE_DIGITS: u8 = 15;

impl ChunkedEnd {
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
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Data { remaining } => {
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
                State::Size { size, digits } => match hex(b) {
                    Some(d) if digits < MAX_SIZE_DIGITS => State::Size {
                        size: size << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(ChunkError("chunk size too large")),
                    None if digits == 0 => return Err(ChunkError("chunk size expected")),
                    None if b == b'\r' => State::SizeLf { size },
                    None if b == b';' || b == b' ' || b == b'\t' => State::Extension { size },
                    None => return Err(ChunkError("bad chunk size")),
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkError("bare LF in chunk size line")),
                    _ => State::Extension { size },
                },
                State::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', remaining) => State::Data { remaining },
                    _ => return Err(ChunkError("CR without LF")),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ChunkError("chunk data longer than its size")),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(ChunkError("CR without LF")),
                },
                State::TrailerStart => match b {
                    b'\r' => State::TrailerLf { empty: true },
                    _ => State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf { empty: false },
                    _ => State::Trailer,
                },
                State::TrailerLf { empty } => match b {
                    b'\n' if empty => State::Done,
                    b'\n' => State::TrailerStart,
                    _ => return Err(ChunkError("CR without LF")),
                },
            };
            i += 1;
        }
        Ok(bytes.len())
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
