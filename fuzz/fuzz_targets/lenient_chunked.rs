//! How a lenient peer (Go's `net/http`, the game nodes) reads a chunked body, for the
//! differential fuzz targets: lines end at a bare LF and lose trailing whitespace and CRs,
//! extensions are cut at `;`, data is followed by CR LF, trailers end at the first empty
//! line. Returns where the body ends.

pub fn lenient_end(bytes: &[u8]) -> Option<usize> {
    let line = |pos: usize| -> Option<(&[u8], usize)> {
        let n = bytes.get(pos..)?.iter().position(|&b| b == b'\n')?;
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
        if bytes.get(end..end.checked_add(2)?)? != b"\r\n" {
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

/// Whether `bytes` hold a bare LF, a bare CR or a control byte other than HTAB.
pub fn has_stray_bytes(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\t' => false,
        _ => b < 0x20 || b == 0x7f,
    })
}
