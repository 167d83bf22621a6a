//! WebSocket side of the node: echo, `whoami`, room broadcast, and 1001 on shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{header, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::room::Membership;
use super::Shared;

/// How long a closing node waits for the client's answer to its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The `Sec-WebSocket-Accept` value when `req` is a valid WebSocket upgrade, else `None`.
pub(super) fn accept_key<B>(req: &Request<B>) -> Option<String> {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return None;
    }
    let key = h.get(header::SEC_WEBSOCKET_KEY)?;
    Some(derive_accept_key(key.as_bytes()))
}

/// Small buffers: an idle game client sends almost nothing, and the "direct" memory floor of
/// the comparison should not be inflated by the demo node's defaults (128 KiB).
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.stats.ws_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one WebSocket: echo (and `whoami`) alone, or, as a `member` of a room, every
/// message relayed to the whole room.
pub(super) async fn run<S>(io: S, member: Option<Membership>, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if shared.record_accepts {
        let now = std::time::Instant::now();
        let mut at = shared
            .stats
            .ws_accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        at.push(now);
    }
    shared.stats.ws_total.fetch_add(1, Ordering::Relaxed);
    shared.stats.ws_active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(&shared);
    if shared.log_connections {
        println!("ws-connect node={}", shared.id);
    }
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
    if let Some(member) = member {
        return run_in_room(&mut ws, member, &shared).await;
    }
    // One shutdown future for the connection's life, not one per message.
    let stopping = shared.stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            msg = ws.next() => {
                let reply = match msg {
                    Some(Ok(Message::Text(t))) if t.as_str() == "whoami" => {
                        Message::text(shared.id.clone())
                    }
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
                    // Pings are answered by tungstenite on the next read; a close is answered
                    // by it too, after which next() yields None.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_))) => continue,
                    Some(Err(_)) | None => return,
                };
                if ws.send(reply).await.is_err() {
                    return;
                }
            }
            () = &mut stopping => {
                close_going_away(&mut ws).await;
                return;
            }
        }
    }
}

/// The room mode: what the client sends goes to the room; what the room relays goes out.
async fn run_in_room<S>(ws: &mut WebSocketStream<S>, mut member: Membership, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::sync::broadcast::error::RecvError;
    let stopping = shared.stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => member.room.relay(m),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_))) => {}
                Some(Err(_)) | None => return,
            },
            relayed = member.rx.recv() => match relayed {
                Ok(m) => {
                    if ws.send(m).await.is_err() {
                        return;
                    }
                }
                // A member too slow for the room skips what it missed, as a game client would.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            () = &mut stopping => {
                close_going_away(ws).await;
                return;
            }
        }
    }
}

async fn close_going_away<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "node shutting down".into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    // Wait (bounded) for the client's close reply so it sees a clean close, not a reset.
    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, drain).await.is_err() {
        tracing::debug!(timeout = ?CLOSE_TIMEOUT, "client did not answer close");
    }
}
