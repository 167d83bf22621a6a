//! An HTTP/1.1 WebSocket upgrade: the rewritten head to a node, its answer back, then the
//! tunnel (`tunnel`), run as a task of its own.

use std::{net::IpAddr, sync::Arc, time::Instant};

use kanmon_router::ConnectionGuard;
use pingora::protocols::Stream;

use crate::bufpool::Lent;

use super::{
    head::{self, RequestHead},
    lane::Lane,
    write::write_within,
};
use crate::{
    client_limits::ClientSlot, policy::RequestAccount, responses::Refusal, tunnel,
    wsframe::FrameBoundary,
};

impl Lane {
    /// Proxies a WebSocket upgrade: the head to the node, its answer back, then the tunnel.
    pub(super) async fn websocket(
        &self,
        mut client: Stream,
        buf: Vec<u8>,
        head: &RequestHead,
        guard: ConnectionGuard,
        client_ip: Option<IpAddr>,
        slot: ClientSlot,
    ) {
        let start = Instant::now();
        let settings = self.routes.settings();
        let mut out = Lent::take();
        head::write_upstream_request(&buf, head, client_ip, &mut out);
        // Anything the client sent after its request (early frames) waits for the node's 101:
        // a node that refuses the upgrade would parse those bytes as further requests, which
        // the edge never checked.
        let early = &buf[head.len..];
        let mut guard = Some(guard);
        let mut retried = false;
        let dep = guard.as_ref().map(|g| Arc::clone(g.deployment()));
        let count = |status: u16| {
            RequestAccount::default().record(
                self.routes.metrics(),
                dep.as_ref(),
                status,
                start.elapsed().as_secs_f64(),
            );
        };
        let Some((mut node, addr)) = self.connect_picked(&mut guard, &mut retried).await else {
            count(self.fail(&mut client, Refusal::BadGateway).await.0);
            return;
        };
        let answer = tunnel::upgrade_at_node(
            &mut node,
            addr,
            &out,
            settings.write_timeout,
            settings.response_timeout,
        );
        let response = match answer.await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "websocket upgrade failed at the node");
                count(self.fail(&mut client, Refusal::BadGateway).await.0);
                return;
            }
        };
        drop(out);
        count(response.status);
        if response.status != 101 {
            if let Err(e) =
                tunnel::relay_refusal(&mut client, &mut node, &response, settings.response_timeout)
                    .await
            {
                tracing::debug!(error = %e, "client left during a refused upgrade");
            }
            return;
        }
        if !self.to_client(&mut client, &response.bytes).await {
            return;
        }
        if !early.is_empty() {
            if let Err(e) = write_within(&mut node, early, settings.write_timeout).await {
                tracing::debug!(error = %e, "node left right after its 101");
                return;
            }
        }
        drop(buf);
        let Some(guard) = guard.take() else {
            return;
        };
        // Bytes after the node's response head are already WebSocket frames.
        let mut frames = FrameBoundary::default();
        frames.feed(&response.bytes[response.head_len..]);
        drop(response);
        let going_away = self.going_away.clone();
        let connection = self.connections.enter();
        let routes = self.routes.clone();
        // The tunnel runs as a task of its own holding only the two streams, its small
        // buffers, the router's guard and a connection count: the connection task and its
        // buffers end now instead of living as long as the WebSocket.
        tokio::spawn(async move {
            tunnel::websocket(&routes, &guard, client, node, frames, going_away).await;
            drop((guard, connection, slot));
        });
    }
}
