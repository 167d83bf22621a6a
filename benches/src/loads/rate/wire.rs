//! The header `ws-rate` puts at the front of each message: which step and connection sent
//! it, its sequence number and its scheduled send time, so a reply is timed from its
//! schedule without any state shared between sender and reader.

/// Bytes of the header (a message is at least this long).
pub(super) const HEADER: usize = 18;
const MAGIC: u8 = b'K';

/// What a message carries about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) step: u8,
    pub(super) conn: u32,
    pub(super) seq: u32,
    /// Nanoseconds after the run's base instant the message was due.
    pub(super) scheduled_ns: u64,
}

impl Header {
    /// Writes the header over the first [`HEADER`] bytes of `buf` (at least that long).
    pub(super) fn encode(&self, buf: &mut [u8]) {
        buf[0] = MAGIC;
        buf[1] = self.step;
        buf[2..6].copy_from_slice(&self.conn.to_le_bytes());
        buf[6..10].copy_from_slice(&self.seq.to_le_bytes());
        buf[10..18].copy_from_slice(&self.scheduled_ns.to_le_bytes());
    }
}

/// The header of a received message; `None` for anything else.
pub(super) fn decode(data: &[u8]) -> Option<Header> {
    if data.len() < HEADER || data[0] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&data[10..18]);
    Some(Header {
        step: data[1],
        conn: u32_at(2),
        seq: u32_at(6),
        scheduled_ns: u64::from_le_bytes(ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_and_junk_does_not() {
        let h = Header {
            step: 3,
            conn: 70_000,
            seq: 12,
            scheduled_ns: 1_234_567_890_123,
        };
        let mut buf = vec![0u8; 64];
        h.encode(&mut buf);
        assert_eq!(decode(&buf), Some(h));
        assert_eq!(decode(&buf[..HEADER - 1]), None);
        buf[0] = b'x';
        assert_eq!(decode(&buf), None);
    }
}
