//! Rooms of the demo node: every message a member sends goes to every member (itself
//! included), as a game server relays one player's input to the others of a match.
//!
//! A client joins with `/ws?room=NAME`. Rooms live as long as a member holds them; the table
//! is bounded in room count and room size, so a hostile client cannot grow it without end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

/// Rooms the node keeps at most (a join beyond that is refused).
const MAX_ROOMS: usize = 10_000;
/// Members one room takes at most.
const MAX_MEMBERS: usize = 64;
/// Messages a slow member may fall behind before it skips (a game drops stale state).
const ROOM_BACKLOG: usize = 256;
/// Longest room name accepted.
const MAX_NAME: usize = 64;

/// Why a client could not join a room.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// The name is empty, too long, or not `[A-Za-z0-9_-]`.
    #[error("room names are 1 to {MAX_NAME} characters of A-Z a-z 0-9 _ -")]
    BadName,
    /// The node holds [`MAX_ROOMS`] rooms already.
    #[error("too many rooms")]
    TooManyRooms,
    /// The room has [`MAX_MEMBERS`] members already.
    #[error("room is full")]
    Full,
}

/// One room: a broadcast channel every member subscribes to.
#[derive(Debug)]
pub(super) struct Room {
    tx: broadcast::Sender<Message>,
}

impl Room {
    /// Relays `msg` to every member (none listening is not an error: the room is emptying).
    pub(super) fn relay(&self, msg: Message) {
        let _no_receivers_is_fine = self.tx.send(msg);
    }
}

/// A member's place in a room: its receiver, and its share of the room's lifetime.
#[derive(Debug)]
pub(super) struct Membership {
    /// The room (kept alive while a member holds it).
    pub(super) room: Arc<Room>,
    /// What the other members (and this one) relay.
    pub(super) rx: broadcast::Receiver<Message>,
}

/// The node's rooms by name.
#[derive(Debug, Default)]
pub(super) struct Rooms {
    by_name: Mutex<HashMap<String, Weak<Room>>>,
}

/// The room name in a request's query (`room=NAME`), if it asks for one.
pub(super) fn requested(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("room="))
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Rooms {
    /// Joins (or opens) the room `name`.
    pub(super) fn join(&self, name: &str) -> Result<Membership, JoinError> {
        if !valid_name(name) {
            return Err(JoinError::BadName);
        }
        // A poisoned lock only means another connection panicked mid-join; the map is intact.
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(room) = map.get(name).and_then(Weak::upgrade) {
            if room.tx.receiver_count() >= MAX_MEMBERS {
                return Err(JoinError::Full);
            }
            let rx = room.tx.subscribe();
            return Ok(Membership { room, rx });
        }
        if map.len() >= MAX_ROOMS {
            map.retain(|_, w| w.strong_count() > 0);
            if map.len() >= MAX_ROOMS {
                return Err(JoinError::TooManyRooms);
            }
        }
        let (tx, rx) = broadcast::channel(ROOM_BACKLOG);
        let room = Arc::new(Room { tx });
        map.insert(name.to_owned(), Arc::downgrade(&room));
        Ok(Membership { room, rx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_of_a_room_hear_each_other_and_only_each_other() {
        let rooms = Rooms::default();
        let a = rooms.join("r1").unwrap();
        let mut b = rooms.join("r1").unwrap();
        let mut c = rooms.join("r2").unwrap();
        a.room.relay(Message::text("hi"));
        assert_eq!(b.rx.try_recv().unwrap(), Message::text("hi"));
        assert!(c.rx.try_recv().is_err());
    }

    #[test]
    fn bad_names_and_full_rooms_are_refused() {
        let rooms = Rooms::default();
        assert_eq!(rooms.join("").unwrap_err(), JoinError::BadName);
        assert_eq!(rooms.join("a b").unwrap_err(), JoinError::BadName);
        assert_eq!(rooms.join(&"x".repeat(65)).unwrap_err(), JoinError::BadName);
        let members: Vec<_> = (0..MAX_MEMBERS)
            .map(|_| rooms.join("big").unwrap())
            .collect();
        assert_eq!(rooms.join("big").unwrap_err(), JoinError::Full);
        drop(members);
        // The last member gone, the name opens a fresh room.
        assert!(rooms.join("big").is_ok());
    }

    #[test]
    fn the_room_is_read_from_the_query() {
        assert_eq!(requested(Some("a=1&room=r7")), Some("r7"));
        assert_eq!(requested(Some("a=1")), None);
        assert_eq!(requested(None), None);
    }
}
