//! How much of a byte stream is still the current message's body. Sans-io: the lane feeds
//! every chunk it reads and forwards exactly the part that belongs to the message; what is
//! left over is the next message (a pipelined request) or a node out of step.

use super::{
    chunked::{ChunkError, ChunkedEnd},
    head::Framing,
};

/// Progress through one message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Over (or never had one).
    Done,
    /// This many bytes to go.
    Length(u64),
    /// Chunked, followed to its end.
    Chunked(ChunkedEnd),
    /// Everything until the sender closes.
    UntilClose,
}

impl Body {
    /// The body a message with `framing` has ahead of it; a chunked one may carry up to
    /// `trailer_limit` bytes of trailers (and of extensions per size line).
    pub fn new(framing: Framing, trailer_limit: usize) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(ChunkedEnd::new(trailer_limit)),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        *self == Self::Done
    }

    /// Takes the body's part of `bytes` (a prefix); returns its length.
    pub fn take(&mut self, bytes: &[u8]) -> Result<usize, ChunkError> {
        let used = match self {
            Self::Done => 0,
            Self::UntilClose => bytes.len(),
            Self::Length(remaining) => {
                let used = (*remaining).min(bytes.len() as u64);
                *remaining -= used;
                used as usize
            }
            Self::Chunked(end) => end.feed(bytes)?,
        };
        let finished = match self {
            Self::Length(0) => true,
            Self::Chunked(end) => end.is_done(),
            _ => false,
        };
        if finished {
            *self = Self::Done;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_body_takes_exactly_its_bytes_across_reads() {
        let mut body = Body::new(Framing::Length(5), 1024);
        assert_eq!(body.take(b"abc"), Ok(3));
        assert!(!body.is_done());
        assert_eq!(body.take(b"deGET /"), Ok(2));
        assert!(body.is_done());
        assert_eq!(body.take(b"more"), Ok(0));
    }

    #[test]
    fn empty_chunked_and_until_close_bodies() {
        assert!(Body::new(Framing::Empty, 1024).is_done());
        assert!(Body::new(Framing::Length(0), 1024).is_done());
        let mut chunked = Body::new(Framing::Chunked, 1024);
        assert_eq!(chunked.take(b"3\r\nabc\r\n0\r\n\r\nX"), Ok(13));
        assert!(chunked.is_done());
        let mut until_close = Body::new(Framing::UntilClose, 1024);
        assert_eq!(until_close.take(b"anything"), Ok(8));
        assert!(!until_close.is_done());
        assert!(Body::new(Framing::Chunked, 1024).take(b"zz\r\n").is_err());
    }
}
