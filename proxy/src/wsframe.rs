//! WebSocket frame boundaries in a byte stream (RFC 6455 §5.2), followed without buffering.
//!
//! The tunnel copies node → client bytes verbatim. To say goodbye properly at the end of a
//! graceful shutdown it must insert a Close frame (1001, going away) — and only between two
//! frames, never inside one. This tracker reads just enough of each frame header to know
//! where the frame ends. Sans-io: bytes in, a boundary flag out.

/// The Close frame a server sends when it goes away: FIN + opcode 8, unmasked, 2-byte
/// payload holding status 1001.
pub const CLOSE_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// Where the stream is relative to frame boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a frame header: `have` of its bytes seen so far (0 = at a boundary).
    Header { buf: [u8; 14], have: usize },
    /// Inside a payload with this many bytes to go.
    Payload { remaining: u64 },
}

/// Tracks frame boundaries of one direction of a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBoundary {
    state: State,
}

impl Default for FrameBoundary {
    fn default() -> Self {
        Self {
            state: State::Header {
                buf: [0; 14],
                have: 0,
            },
        }
    }
}

/// Length of a frame header given at least its first two bytes.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Payload length from a complete header.
fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
        n => u64::from(n),
    }
}

impl FrameBoundary {
    /// Whether everything fed so far ends exactly at the end of a frame.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0, .. })
    }

    /// Follows `bytes`, the next part of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Payload { remaining } => {
                    let n = (*remaining).min(bytes.len() as u64);
                    *remaining -= n;
                    bytes = &bytes[n as usize..];
                    if *remaining == 0 {
                        self.state = Self::default().state;
                    }
                }
                State::Header { buf, have } => {
                    let need = if *have < 2 { 2 } else { header_len(buf[1]) };
                    let take = (need - *have).min(bytes.len());
                    buf[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have >= 2 && *have == header_len(buf[1]) {
                        let len = payload_len(&buf[..*have]);
                        self.state = if len == 0 {
                            Self::default().state
                        } else {
                            State::Payload { remaining: len }
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes one frame with a payload of `len` bytes.
    fn frame(len: usize, masked: bool, opcode: u8) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match len {
            0..=125 => f.push(mask_bit | len as u8),
            126..=65535 => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend((0..len).map(|i| i as u8));
        f
    }

    #[test]
    fn close_frame_is_a_whole_frame() {
        let mut t = FrameBoundary::default();
        t.feed(&CLOSE_GOING_AWAY[..3]);
        assert!(!t.at_boundary());
        t.feed(&CLOSE_GOING_AWAY[3..]);
        assert!(t.at_boundary());
    }

    #[test]
    fn header_split_anywhere() {
        let f = frame(70_000, true, 2);
        for cut in 1..14 {
            let mut t = FrameBoundary::default();
            t.feed(&f[..cut]);
            assert!(!t.at_boundary(), "cut {cut}");
            t.feed(&f[cut..]);
            assert!(t.at_boundary(), "cut {cut}");
        }
    }

    proptest! {
        #[test]
        fn boundaries_are_exactly_the_frame_ends(
            frames in prop::collection::vec((0usize..70_000, any::<bool>(), prop_oneof![Just(1u8), Just(2), Just(9), Just(10)]), 1..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            let mut ends = std::collections::BTreeSet::new();
            for (len, masked, op) in frames {
                stream.extend(frame(len, masked, op));
                ends.insert(stream.len());
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.extend(ends.iter().copied());
            points.push(0);
            points.sort_unstable();
            points.dedup();
            let mut t = FrameBoundary::default();
            let mut fed = 0;
            for p in points {
                t.feed(&stream[fed..p]);
                fed = p;
                prop_assert_eq!(t.at_boundary(), p == 0 || ends.contains(&p), "after {} bytes", p);
            }
        }
    }
}
