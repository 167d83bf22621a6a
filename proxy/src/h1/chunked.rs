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
                // Both line-end bytes count, so the cap is on the section's bytes as sent
                // (found by the `chunked_trailer` fuzz target: CRs went uncounted).
                b'\r' => {
                    self.count()?;
                    State::TrailerLf
                }
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
            // Whitespace before the extensions counts towards the cap too: without it a size
            // line could grow without bound (found by the `chunk_extension` fuzz target).
            b' ' | b'\t' => {
                self.count()?;
                State::SizeSpace { size }
            }
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
#[path = "chunked_tests.rs"]
mod tests;
