//! Session-ticket keys from a file, shared by every proxy replica.
//!
//! With keys held only in memory a ticket resumes only on the process that issued it: behind a
//! load balancer with N replicas a reconnecting client lands on its own replica one time in N,
//! and every restart or binary upgrade voids all tickets at the moment clients reconnect the
//! most. A key file (a Kubernetes Secret mounted into every replica) fixes both.
//!
//! Format: one key per line, 32 random bytes as 64 hex digits (`kanmon-proxy ticket-key` prints
//! one); blank lines and `#` comments are skipped. The first key seals new tickets; every key
//! opens them, so rotation is: put a new key on top, and drop the old one once the tickets it
//! sealed have expired (their lifetime is 12 hours). Each key is known by a 16-byte name derived
//! from it, written in front of every ticket. The file is re-read when it changes; a broken
//! file keeps the keys in use, logged and counted in `kanmon_tls_ticket_key_errors_total`.
//!
//! Tickets are sealed with ChaCha20-Poly1305 (ring) under a random 96-bit nonce, the key name as
//! associated data.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use ring::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN},
    digest,
    rand::{SecureRandom, SystemRandom},
};
use rustls::server::ProducesTickets;

/// Bytes of the key name in front of each ticket.
const NAME_LEN: usize = 16;
/// How long a client may keep a ticket (seconds), as rustls' own ticketer.
const LIFETIME_S: u32 = 12 * 60 * 60;
/// More keys than this is a mistake, not a rotation.
const MAX_KEYS: usize = 16;

/// Why a key file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not 64 hex digits.
    #[error("{path} line {line}: a key is 64 hex digits (32 bytes; `kanmon-proxy ticket-key` makes one)")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// No key, or too many.
    #[error("{path}: {count} keys; 1 to {MAX_KEYS} are allowed")]
    Count {
        /// The file.
        path: PathBuf,
        /// How many were found.
        count: usize,
    },
}

struct Key {
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

/// Ticket keys read from a file; the first seals, all open.
pub struct TicketKeys {
    path: PathBuf,
    keys: ArcSwap<Vec<Key>>,
    rng: SystemRandom,
    errors: IntCounter,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys themselves.
        f.debug_struct("TicketKeys")
            .field("path", &self.path)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

impl TicketKeys {
    /// Reads `path`; a broken file is an error here (the proxy does not start without keys).
    /// Later reloads that fail count in `errors`.
    pub fn load(path: &Path, errors: IntCounter) -> Result<Self, KeyFileError> {
        Self::with_keys(path, read(path)?, errors)
    }

    /// Keys from `text` as if read from `path` (which names it in errors and is what a
    /// reload reads).
    pub fn from_text(path: &Path, text: &str, errors: IntCounter) -> Result<Self, KeyFileError> {
        Self::with_keys(path, parse(path, text)?, errors)
    }

    fn with_keys(path: &Path, keys: Vec<Key>, errors: IntCounter) -> Result<Self, KeyFileError> {
        Ok(Self {
            path: path.to_owned(),
            keys: ArcSwap::from_pointee(keys),
            rng: SystemRandom::new(),
            errors,
        })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file: the new keys on success (their count), else the old ones stay,
    /// the failure is logged and counted.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        match read(&self.path) {
            Ok(keys) => {
                let count = keys.len();
                self.keys.store(Arc::new(keys));
                tracing::info!(path = %self.path.display(), keys = count, "session-ticket keys reloaded");
                Ok(count)
            }
            Err(e) => {
                self.errors.inc();
                tracing::warn!(error = %e, "session-ticket key file not taken; the keys in use stay");
                Err(e)
            }
        }
    }
}

/// Parses a key file's text (`path` only names it in errors).
fn parse(path: &Path, text: &str) -> Result<Vec<Key>, KeyFileError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || KeyFileError::BadKey {
            path: path.to_owned(),
            line: i + 1,
        };
        let bytes = hex32(line).ok_or_else(bad)?;
        keys.push(key(&bytes).ok_or_else(bad)?);
        if keys.len() > MAX_KEYS {
            break;
        }
    }
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(KeyFileError::Count {
            path: path.to_owned(),
            count: keys.len(),
        });
    }
    Ok(keys)
}

fn read(path: &Path) -> Result<Vec<Key>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn key(bytes: &[u8; 32]) -> Option<Key> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"kanmon session-ticket key name\0");
    ctx.update(bytes);
    let mut name = [0u8; NAME_LEN];
    name.copy_from_slice(&ctx.finish().as_ref()[..NAME_LEN]);
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?);
    Some(Key { name, key })
}

/// A fresh key line for a key file: 32 random bytes as hex.
pub fn new_key_line() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_S
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.load();
        let k = keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&k.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(k.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.load();
        let k = keys.iter().find(|k| k.name[..] == *name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain_len = k
            .key
            .open_in_place(nonce, Aad::from(k.name), &mut buf)
            .ok()?
            .len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(fill: u8) -> String {
        format!("{fill:02x}").repeat(32)
    }

    fn keys_in(dir: &tempfile::TempDir, text: &str) -> (PathBuf, TicketKeys) {
        let path = dir.path().join("ticket.keys");
        std::fs::write(&path, text).unwrap();
        let keys = TicketKeys::load(&path, IntCounter::new("e", "e").unwrap()).unwrap();
        (path, keys)
    }

    #[test]
    fn the_first_key_seals_every_key_opens_and_a_dropped_key_no_longer_does() {
        let dir = tempfile::tempdir().unwrap();
        let (path, keys) = keys_in(&dir, &format!("# rotated monthly\n{}\n", line(1)));
        let old = keys.encrypt(b"session").unwrap();
        assert_eq!(keys.decrypt(&old).as_deref(), Some(&b"session"[..]));
        assert_ne!(
            keys.encrypt(b"session").unwrap(),
            old,
            "a fresh nonce per ticket"
        );

        // Rotation: a new key on top; tickets of the old one still open.
        std::fs::write(&path, format!("{}\n\n{}\n", line(2), line(1))).unwrap();
        assert_eq!(keys.reload().unwrap(), 2);
        let new = keys.encrypt(b"session").unwrap();
        assert_ne!(new[..NAME_LEN], old[..NAME_LEN], "sealed with the new key");
        assert_eq!(keys.decrypt(&old).as_deref(), Some(&b"session"[..]));
        assert_eq!(keys.decrypt(&new).as_deref(), Some(&b"session"[..]));

        // The old key dropped: its tickets are refused (a full handshake follows).
        std::fs::write(&path, line(2)).unwrap();
        keys.reload().unwrap();
        assert_eq!(keys.decrypt(&old), None);
        assert_eq!(keys.decrypt(&new).as_deref(), Some(&b"session"[..]));
    }

    #[test]
    fn replicas_with_the_same_file_open_each_others_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = keys_in(&dir, &line(7));
        let (_, b) = keys_in(&dir, &line(7));
        let (_, other) = keys_in(&dir, &line(8));
        let t = a.encrypt(b"state").unwrap();
        assert_eq!(b.decrypt(&t).as_deref(), Some(&b"state"[..]));
        assert_eq!(other.decrypt(&t), None);
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, keys) = keys_in(&dir, &line(3));
        let t = keys.encrypt(b"state").unwrap();
        for i in [0, NAME_LEN, NAME_LEN + NONCE_LEN, t.len() - 1] {
            let mut bad = t.clone();
            bad[i] ^= 0x80;
            assert_eq!(keys.decrypt(&bad), None, "byte {i} flipped");
        }
        for len in 0..NAME_LEN + NONCE_LEN + 16 {
            assert_eq!(keys.decrypt(&t[..len]), None);
        }
    }

    #[test]
    fn bad_files_are_refused_and_a_bad_reload_keeps_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        for (text, want) in [
            ("", "0 keys"),
            ("# only a comment\n", "0 keys"),
            ("abcd\n", "line 1"),
            (&format!("{}\n{}zz\n", line(1), &line(1)[..62]), "line 2"),
            (&format!("{}x", line(1)), "line 1"),
            (&format!("{}\n", line(1)).repeat(MAX_KEYS + 1), "17 keys"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = TicketKeys::load(&path, IntCounter::new("e", "e").unwrap()).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
        let missing =
            TicketKeys::load(&dir.path().join("none"), IntCounter::new("e", "e").unwrap());
        assert!(matches!(missing, Err(KeyFileError::Read { .. })));

        let (path, keys) = keys_in(&dir, &line(4));
        let t = keys.encrypt(b"state").unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(keys.reload().is_err());
        assert_eq!(keys.errors.get(), 1);
        assert_eq!(
            keys.decrypt(&t).as_deref(),
            Some(&b"state"[..]),
            "old keys kept"
        );
        assert!(keys.encrypt(b"x").is_some());
    }

    #[test]
    fn new_key_lines_parse_and_differ() {
        let a = new_key_line().unwrap();
        let b = new_key_line().unwrap();
        assert_ne!(a, b);
        assert!(hex32(&a).is_some() && hex32(&b).is_some());
    }
}
